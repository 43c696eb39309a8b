"""The results runner's model cache: hits, misses on changed inputs, unreadable entries."""

import importlib.util
import sys

import pytest
import torch

from zeroskip.experiments import results as R
from zeroskip.experiments.cache import ENV, ModelCache, cache_root, source_hash, tensor_hash
from zeroskip.sw.baseline import Recipe
from zeroskip.sw.data import load_digits
from zeroskip.sw.models import digits_mlp
from zeroskip.sw.prune import magnitude_prune, mask_of, prunable_layers


def _pruned_model(seed=0):
    torch.manual_seed(seed)
    m = digits_mlp((16,))
    magnitude_prune(m, 0.7)
    return m


def test_store_and_load_keep_weights_and_masks(tmp_path):
    c = ModelCache(tmp_path, log=lambda s: None)
    m = _pruned_model()
    k = c.key("step", settings={"a": 1})
    c.store(k, m, {"acc": 0.5})
    got = c.load(k, lambda: digits_mlp((16,)))
    assert got is not None
    m2, meta = got
    assert meta == {"acc": 0.5}
    x = torch.rand(5, 1, 8, 8)
    assert torch.equal(m(x), m2(x))
    for (n, a), b in zip(prunable_layers(m).items(), prunable_layers(m2).values()):
        assert torch.equal(mask_of(a), mask_of(b)), n
        # the masks are live again: training cannot revive a pruned weight
        assert bool((b.weight[mask_of(b) == 0] == 0).all())


def test_get_or_train_builds_once_and_rebuilds_on_a_changed_setting(tmp_path):
    c = ModelCache(tmp_path, log=lambda s: None)
    calls = []

    def build(seed):
        def f():
            calls.append(seed)
            return _pruned_model(seed), {"seed": seed}
        return f

    k1 = c.key("prune", settings={"sparsity": 0.7}, seed=0)
    _, meta, cached = c.get_or_train(k1, lambda: digits_mlp((16,)), build(0))
    assert (cached, calls) == (False, [0])
    _, meta, cached = c.get_or_train(k1, lambda: digits_mlp((16,)), build(0))
    assert (cached, calls, meta) == (True, [0], {"seed": 0})
    k2 = c.key("prune", settings={"sparsity": 0.8}, seed=0)
    assert k2 != k1
    _, _, cached = c.get_or_train(k2, lambda: digits_mlp((16,)), build(1))
    assert (cached, calls) == (False, [0, 1])
    assert c.key("prune", settings={"sparsity": 0.7}, seed=1) != k1
    assert c.key("prune", settings={"sparsity": 0.7}, seed=0) == k1


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong key"])
def test_an_unreadable_entry_is_deleted_and_recomputed(tmp_path, damage):
    lines = []
    c = ModelCache(tmp_path, log=lines.append)
    k = c.key("step", settings={"a": 1})
    c.store(k, _pruned_model(), {"v": 1})
    p = c.path(k)
    if damage == "garbage":
        p.write_bytes(b"not a torch file")
    elif damage == "truncated":
        p.write_bytes(p.read_bytes()[:100])
    else:
        other = c.key("step", settings={"a": 2})
        c.store(other, _pruned_model(1), {"v": 2})
        c.path(other).replace(p)     # an entry under the wrong name
    assert c.load(k, lambda: digits_mlp((16,))) is None
    assert not p.exists()
    assert any("unreadable" in s and p.name in s for s in lines)
    _, meta, cached = c.get_or_train(k, lambda: digits_mlp((16,)),
                                     lambda: (_pruned_model(), {"v": 3}))
    assert (cached, meta) == (False, {"v": 3})
    assert c.load(k, lambda: digits_mlp((16,)))[1] == {"v": 3}


def test_disabled_cache_stores_nothing(tmp_path):
    c = ModelCache(tmp_path / "c", enabled=False)
    k = c.key("s")
    c.store(k, _pruned_model(), {})
    assert c.load(k, lambda: digits_mlp((16,))) is None
    assert not (tmp_path / "c").exists()


def test_cache_root_env_override(monkeypatch, tmp_path):
    from platformdirs import user_cache_dir
    monkeypatch.delenv(ENV, raising=False)
    assert cache_root() == __import__("pathlib").Path(user_cache_dir("zeroskip")) / "results"
    monkeypatch.setenv(ENV, str(tmp_path))
    assert cache_root() == tmp_path


def test_source_and_tensor_hashes_follow_their_inputs(tmp_path):
    f = tmp_path / "zs_hash_probe.py"
    f.write_text("X = 1\n")
    spec = importlib.util.spec_from_file_location("zs_hash_probe", f)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["zs_hash_probe"] = mod
    try:
        spec.loader.exec_module(mod)
        h1 = source_hash([mod])
        f.write_text("X = 2\n")
        assert source_hash([mod]) != h1
    finally:
        del sys.modules["zs_hash_probe"]
    a = torch.zeros(4)
    b = a.clone()
    b[3] = 1e-7
    assert tensor_hash(a) == tensor_hash(a.clone())
    assert tensor_hash(a) != tensor_hash(b)
    assert tensor_hash(a) != tensor_hash(a.reshape(2, 2))


def test_runner_baseline_hit_and_miss_on_recipe_change(tmp_path, monkeypatch):
    """The runner's baseline step: trained once, then from the cache; a changed recipe or
    seed trains again."""
    monkeypatch.setitem(R.QUICK_RECIPES, "lenet300", Recipe(epochs=2, batch_size=64, val=300))
    ds = load_digits()
    cache = ModelCache(tmp_path, log=lambda s: None)

    def base(seed=0):
        ctx = R.Ctx(ds, R.QUICK, True, False, seed, cache)
        m, acc, key = ctx.baseline("lenet300", "digits-mlp", lambda bn=False: digits_mlp((16,)))
        return ctx.baselines["digits-mlp"], m, key

    b1, m1, k1 = base()
    assert b1["cached"] is False
    b2, m2, k2 = base()
    assert b2["cached"] is True and k2 == k1 and b2["acc_test"] == b1["acc_test"]
    x = ds.x_test[:20]
    assert torch.equal(m1(x), m2(x))
    monkeypatch.setitem(R.QUICK_RECIPES, "lenet300", Recipe(epochs=3, batch_size=64, val=300))
    b3, _, k3 = base()
    assert b3["cached"] is False and k3 != k1
    b4, _, k4 = base(seed=1)
    assert b4["cached"] is False and k4 not in (k1, k3)
