"""``zeroskip demo``: the CNN (default) and the MLP through the Verilated RTL, bit-exact; the
conv-aware speedup definitions; Fashion-MNIST refused in one line when it is not installed;
the whole-network bench's model loading."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

from zeroskip.cli import main
from zeroskip.demo import DEMOS, demo, demo_spec, prune_plan
from zeroskip.sw import models
from zeroskip.sw.cycles import useful_macs
from zeroskip.sw.errors import ZeroskipError


def _dense_macs_of(net: nn.Module, in_shape) -> int:
    """Dense MACs from the float model itself: per Conv2d its output pixels x C*K*K x O (every
    pixel, before pooling), per Linear in x out."""
    total = 0

    def hook(m, inp, out):
        nonlocal total
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1]
            total += out.shape[2] * out.shape[3] * m.in_channels * k * m.out_channels
        else:
            total += m.in_features * m.out_features
    hs = [m.register_forward_hook(hook) for m in net.modules()
          if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        net.eval()(torch.zeros(1, *in_shape))
    for h in hs:
        h.remove()
    return total


@pytest.mark.sim
@pytest.mark.parametrize("model", ["cnn", "mlp"])
def test_demo_bit_exact_on_the_rtl(model, tmp_path, capsys):
    res = demo(images=40, quick=True, out_dir=tmp_path, model=model, dense_images=4, seed=1)
    out = capsys.readouterr().out
    # every output of every image, sparse and dense, equals the integer reference
    assert res["bit_exact"]
    np.testing.assert_array_equal(res["rtl_outputs"], res["ref_outputs"])
    np.testing.assert_array_equal(res["dense_outputs"], res["ref_outputs"][:4])
    assert res["rtl_outputs"].shape == (40, 10)
    assert res["acc_rtl"] == res["acc_ref"]
    assert re.search(r"RTL bit-exact vs reference +yes \(40 \+ 4 dense images", out)
    # the CNN: convolutions really went through the hardware
    kinds = [pl.q.geom.kind for pl in res["pm"].layers]
    assert kinds == (["conv", "conv", "fc", "fc"] if model == "cnn" else ["fc"] * 3)
    # conv-aware definitions: dense MACs over every conv output pixel (C*K*K x O each),
    # useful MACs (the RTL's counter) equal the software count over output pixels
    net = (models.digits_cnn() if model == "cnn" else models.digits_mlp(hidden=(256, 128)))
    assert res["dense_macs"] == _dense_macs_of(net, (1, 8, 8))
    pm, x = res["pm"], res["x"]
    assert list(res["useful_macs"][:4]) == [useful_macs(pm, v) for v in x[:4]]
    assert res["ideal"] == pytest.approx(res["dense_macs"] / res["useful_macs"][:4].mean())
    assert res["speedup"] == pytest.approx(res["dense_cycles"].mean()
                                           / res["cycles"][:4].mean())
    assert 1.0 < res["speedup"] <= res["ideal"] * 1.1
    assert res["cycle_model_equal"]
    assert res["model_file"].is_file()


def test_prune_plan_keeps_the_first_conv_and_the_classifier():
    plan = prune_plan(models.lenet5(), 0.93)
    assert list(plan.values()) == [0.5, 0.93, 0.93, 0.8]
    assert set(prune_plan(models.digits_mlp(), 0.9).values()) == {0.9}


def test_demo_specs_match_the_cli_choices():
    from zeroskip.cli import build_parser
    demo_parser = build_parser()._subparsers._group_actions[0].choices["demo"]
    choices = next(a.choices for a in demo_parser._actions if a.dest == "model")
    assert sorted(choices) == sorted({m for _, m in DEMOS})
    assert demo_spec("digits", None).factory == "digits_cnn"
    assert demo_spec("fashion-mnist", None).factory == "lenet5"
    with pytest.raises(ZeroskipError, match="does not run on fashion-mnist"):
        demo_spec("fashion-mnist", "mlp")


def test_fashion_mnist_missing_is_one_error_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ZEROSKIP_FASHION_MNIST", str(tmp_path / "nowhere"))
    assert main(["demo", "--dataset", "fashion-mnist", "--out-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("zeroskip: error: Fashion-MNIST not found")
    assert not any(tmp_path.iterdir())


def test_demo_bad_arguments_are_one_line(tmp_path, capsys):
    for args, msg in ((["--dataset", "fashion-mnist", "--model", "cnn"], "does not run on"),
                      (["--sparsity", "1.5"], "--sparsity must be in"),
                      (["--images", "0"], "--images must be at least 1")):
        assert main(["demo", *args, "--out-dir", str(tmp_path)]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], err


def test_bench_loads_a_lenet5_state_dict(tmp_path):
    from zeroskip.sim.bench import lenet5_for_bench
    from zeroskip.sw.errors import ZeroskipError
    net = models.lenet5_classic()
    torch.save(net.state_dict(), tmp_path / "sd.pt")
    got, desc, trained = lenet5_for_bench(str(tmp_path / "sd.pt"), "lenet5_classic")
    assert trained and "lenet5_classic" in desc
    for a, b in zip(got.state_dict().values(), net.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ZeroskipError, match="does not match --arch lenet5"):
        lenet5_for_bench(str(tmp_path / "sd.pt"), "lenet5")


def test_prune_finetune_distills_from_the_dense_model(monkeypatch):
    """The demo's fine-tuning learns from the dense model's soft targets (a frozen copy: the
    teacher's weights are not the pruned ones), and not when ``distill=False``."""
    from zeroskip import demo as demo_mod
    from zeroskip.sw import train
    seen = []

    def fake_train(model, x, y, **kw):
        seen.append(kw.get("loss_fn"))
        return model

    monkeypatch.setattr(train, "train", fake_train)
    torch.manual_seed(0)
    net = models.digits_cnn()
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    dense_logits = net.eval()(x).detach()
    demo_mod.prune_finetune(net, x, y, 0.8, epochs=1, progress=False)
    assert len(seen) == 3 and all(f is not None for f in seen)
    # one teacher for every step, and it is still the dense model, not the pruned one
    assert all(f.teacher is seen[0].teacher for f in seen)
    with torch.no_grad():
        torch.testing.assert_close(seen[0].teacher(x), dense_logits, rtol=0, atol=0)
        assert not torch.equal(net(x), dense_logits)
    seen.clear()
    demo_mod.prune_finetune(models.digits_cnn(), x, y, 0.8, epochs=1, progress=False,
                            distill=False)
    assert seen == [None, None, None]
