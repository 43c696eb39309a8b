"""The library's shape: masks on the modules, callables for importance, in-place rules, no
import cycle."""

import ast
import copy
import io
from pathlib import Path

import pytest
import torch
from torch import nn

from zeroskip.sw.compress import (
    granular_prune,
    iterative_prune,
    prune_structured,
    share_weights,
    train_ternary,
    unit_scores,
    units,
)
from zeroskip.sw.prune import (
    Masks,
    PruneError,
    magnitude_prune,
    mask_of,
    masks_of,
    remove_masks,
)
from zeroskip.sw.quant import quantize_mlp
from zeroskip.sw.train import Callback, evaluate, train

ROOT = Path(__file__).resolve().parents[2]


def test_masks_hold_in_a_users_own_training_loop(digits, mlp):
    m = copy.deepcopy(mlp)
    masks = magnitude_prune(m, 0.7)
    zero = {n: mk == 0 for n, mk in masks.masks.items()}
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    for i in range(0, 640, 64):                     # not zeroskip's loop, no Masks.apply
        loss = nn.functional.cross_entropy(m(digits.x_train[i:i + 64]),
                                           digits.y_train[i:i + 64])
        opt.zero_grad()
        loss.backward()
        opt.step()
    layers = dict(m.named_modules())
    for n, z in zero.items():
        assert bool(z.any()) and torch.all(layers[n].weight[z] == 0)
        assert torch.any(layers[n].weight[~z] != 0)
    # a second pruning round tightens the attached masks; pruned weights stay pruned
    magnitude_prune(m, 0.9)
    for n, z in zero.items():
        assert torch.all(mask_of(layers[n])[z] == 0)
        assert float(mask_of(layers[n]).mean()) == pytest.approx(0.1, abs=0.01)


def test_remove_masks_leaves_plain_layers_with_zeros(digits, mlp):
    m = copy.deepcopy(mlp)
    magnitude_prune(m, 0.8)
    train(m, digits.x_train, digits.y_train, epochs=1, lr=1e-3)
    before = {n: l.weight.detach().clone() for n, l in m.named_modules()
              if isinstance(l, nn.Linear)}
    copy_ = copy.deepcopy(m)
    remove_masks(copy_)                       # removing from a copy leaves the original alone
    assert all(mask_of(l) is not None for n, l in m.named_modules() if n in before)
    assert masks_of(m).density() and not masks_of(copy_).masks
    for n, l in copy_.named_modules():
        if n in before:
            assert type(l) is nn.Linear and isinstance(l.weight, nn.Parameter)
            assert torch.equal(l.weight, before[n])
            assert float((l.weight == 0).float().mean()) == pytest.approx(0.8, abs=0.01)
    buf = io.BytesIO()
    torch.save(copy_, buf)                    # plain modules pickle
    assert set(copy_.state_dict()) == set(mlp.state_dict())
    q = quantize_mlp(copy_, digits.x_train)
    assert (q.layers[0].weight == 0).mean() == pytest.approx(0.8, abs=0.01)


def test_weight_importance_is_a_callable(mlp):
    m = copy.deepcopy(mlp)

    def keep_first_columns(layer, name):      # importance = minus the column index
        w = layer.weight
        return -torch.arange(w.shape[1], dtype=torch.float64).expand(w.shape).clone()

    masks = magnitude_prune(m, 0.5, importance=keep_first_columns)
    for mk in masks.masks.values():
        cols = mk.shape[1]
        assert torch.all(mk[:, :cols // 2] == 1) and torch.all(mk[:, cols - cols // 2:] == 0)
    m2 = copy.deepcopy(mlp)
    gm = granular_prune(m2, 0.5, "filter", importance=lambda layer, name: -torch.arange(
        layer.weight.shape[0], dtype=torch.float64)[:, None].expand(layer.weight.shape))
    for mk in gm.masks.values():
        rows = mk.shape[0]
        assert torch.all(mk[:rows // 2] == 1) and torch.all(mk[rows - rows // 2:] == 0)
    with pytest.raises(PruneError, match="shaped like"):
        magnitude_prune(copy.deepcopy(mlp), 0.5, importance=lambda layer, name: torch.ones(3))
    with pytest.raises(PruneError, match="unknown weight importance"):
        magnitude_prune(copy.deepcopy(mlp), 0.5, importance="taylor")


def test_unit_criterion_is_a_callable(mlp):
    def last_units_least(model, us, x):
        return {u.name: torch.arange(u.size, 0, -1, dtype=torch.float64) for u in us}

    small = prune_structured(mlp, 0.25, criterion=last_units_least)
    big = dict(mlp.named_modules())
    for u in units(small):
        full = big[u.name]
        cols = u.layer.weight.shape[1]                 # the first units (and inputs) kept
        assert torch.equal(u.layer.weight, full.weight[:u.size, :cols])
        assert u.size == full.out_features - round(0.25 * full.out_features)
    with pytest.raises(PruneError, match="scores for"):
        unit_scores(mlp, lambda model, us, x: {us[0].name: torch.ones(3)})
    with pytest.raises(PruneError, match="not a removable unit"):
        unit_scores(mlp, lambda model, us, x: {"nope": torch.ones(3)})


def test_in_place_or_copy(digits, mlp):
    """Methods that keep the architecture work in place; those that change it copy."""
    m = copy.deepcopy(mlp)
    ref = {k: v.clone() for k, v in m.state_dict().items()}
    small = prune_structured(m, 0.5)
    assert small is not m and all(torch.equal(ref[k], v) for k, v in m.state_dict().items())
    masks, _ = iterative_prune(m, digits.x_train[:200], digits.y_train[:200], 0.5, steps=1,
                               epochs_per_step=0)
    assert masks.model is m and mask_of(m[1]) is not None
    books = share_weights(m, 4)
    assert mask_of(m[1]) is None and torch.unique(m[1].weight).numel() <= 16
    assert set(books) == {"1", "3", "5"}


def test_ternary_and_sharing_with_masks_attached(digits, mlp):
    m = copy.deepcopy(mlp)
    magnitude_prune(m, 0.6)
    zeros = m[1].weight == 0
    train_ternary(m, digits.x_train, digits.y_train, epochs=1, lr=1e-3)
    assert type(m[1]) is nn.Linear and torch.all(m[1].weight[zeros] == 0)
    assert torch.unique(m[1].weight.abs()).numel() <= 2


def test_callbacks_are_called(digits):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    seen = []

    class Count(Callback):
        def on_train_begin(self, model):
            seen.append("begin")

        def after_backward(self, model):
            assert model[1].weight.grad is not None
            seen.append("backward")

        def after_step(self, model):
            seen.append("step")

        def on_train_end(self, model):
            seen.append("end")

    train(m, digits.x_train[:128], digits.y_train[:128], epochs=2, batch_size=64,
          callbacks=[Count()])
    assert seen == ["begin"] + ["backward", "step"] * 4 + ["end"]
    # params= trains only what it is given
    frozen = m[1].bias.detach().clone()
    train(m, digits.x_train[:128], digits.y_train[:128], epochs=1, params=[m[1].weight])
    assert torch.equal(m[1].bias, frozen) and evaluate(m, digits.x_test, digits.y_test) > 0


def _imports(path: Path, package: str) -> set[str]:
    """Modules of ``zeroskip.sw.compress`` that ``path`` imports at module level."""
    out = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_no_import_cycle_in_compress():
    folder = ROOT / "sw" / "compress"
    graph = {p.stem: _imports(p, "compress") for p in folder.glob("*.py")
             if p.stem != "__init__"}
    assert graph["structured"] and "global_prune" not in graph["structured"]
    state: dict[str, int] = {}

    def visit(n, path):
        if state.get(n) == 1:
            raise AssertionError(f"import cycle: {' -> '.join(path + [n])}")
        if state.get(n) == 2:
            return
        state[n] = 1
        for m in graph.get(n, ()):
            visit(m, path + [n])
        state[n] = 2

    for n in graph:
        visit(n, [])
    # and no function-level import of a sibling hides one either
    for p in folder.glob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.FunctionDef):
                for sub in ast.walk(node):
                    assert not (isinstance(sub, ast.ImportFrom) and sub.level == 1), \
                        f"{p.name}: {node.name} imports a sibling inside a function"


def test_masks_object_validates(mlp):
    m = copy.deepcopy(mlp)
    with pytest.raises(PruneError, match="no prunable layer"):
        Masks(m, {"9": torch.ones(2, 2)})
    with pytest.raises(PruneError, match="shape"):
        Masks(m, {"1": torch.ones(2, 2)})
    with pytest.raises(PruneError, match="another model"):
        magnitude_prune(m, 0.5, masks=Masks(copy.deepcopy(mlp)))
