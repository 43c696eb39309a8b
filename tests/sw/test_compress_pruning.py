"""Schedules, granularities, structured and progressive global pruning, on the 8x8 digits."""

import copy

import pytest
import torch
from torch import nn

from zeroskip.sw.compress import (
    GRANULARITIES,
    UnsupportedLayerError,
    count_params,
    distillation_loss,
    global_keep,
    granular_prune,
    group_ids,
    index_cost,
    iterative_prune,
    normalize_scores,
    progressive_prune,
    prune_structured,
    remove_units,
    sparsity_schedule,
    uniform_to_params,
    unit_scores,
    units,
    weight_count,
)
from zeroskip.sw.compress.graph import GraphError, check_model
from zeroskip.sw.compress.structured import bn_l1_penalty, unit_sizes
from zeroskip.sw.errors import ZeroskipError
from zeroskip.sw.models import digits_mlp
from zeroskip.sw.prune import PruneError
from zeroskip.sw.train import evaluate, predict, train

# ----------------------------------------------------------------------------- graph

class Odd(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.act = nn.GELU()


def test_unsupported_layer_is_named():
    with pytest.raises(UnsupportedLayerError, match=r"act \(GELU\)") as e:
        check_model(Odd())
    assert isinstance(e.value, ZeroskipError)
    with pytest.raises(UnsupportedLayerError, match="groups=2"):
        check_model(nn.Sequential(nn.Conv2d(2, 2, 3, groups=2)))
    with pytest.raises(UnsupportedLayerError, match="Sigmoid"):
        granular_prune(nn.Sequential(nn.Linear(3, 3), nn.Sigmoid()), 0.5)


def test_units_of_cnn(cnn):
    us = units(cnn)
    assert [u.name for u in us] == ["0", "4", "9"]
    assert us[0].bn[0] == "1" and us[1].consumer[0] == "9" and us[1].spatial == 4
    with pytest.raises(GraphError, match="BatchNorm2d"):
        units(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(3), nn.Flatten(),
                            nn.Linear(2, 2)))


# ----------------------------------------------------------------------------- schedules

def test_schedules():
    assert sparsity_schedule("one-shot", 0.9) == [0.9]
    it = sparsity_schedule("iterative", 0.875, 3)
    assert it == pytest.approx([0.5, 0.75, 0.875])
    gr = sparsity_schedule("gradual", 0.9, 4)
    assert gr[-1] == 0.9 and all(a < b for a, b in zip(gr, gr[1:]))
    assert gr[1] - gr[0] < gr[0]                # big steps first
    with pytest.raises(PruneError):
        sparsity_schedule("cosine", 0.5)
    with pytest.raises(PruneError):
        sparsity_schedule("linear", 1.0)


@pytest.mark.parametrize("schedule", ["one-shot", "iterative", "gradual"])
def test_iterative_prune_keeps_accuracy(digits, mlp, schedule):
    m = copy.deepcopy(mlp)
    masks, hist = iterative_prune(m, digits.x_train, digits.y_train, 0.8, schedule=schedule,
                                  steps=2, epochs_per_step=5, lr=2e-3,
                                  x_val=digits.x_test, y_val=digits.y_test)
    assert weight_count(m) / weight_count(m, nonzero=False) == pytest.approx(0.2, abs=0.01)
    assert hist.rounds[-1]["acc_finetuned"] > 0.88
    for n, layer in masks.layers().items():
        assert torch.all(layer.weight[masks.masks[n] == 0] == 0)


def test_global_scope_and_distillation(digits, mlp):
    m = copy.deepcopy(mlp)
    kd = distillation_loss(mlp, temperature=4.0, alpha=0.7)
    masks, hist = iterative_prune(m, digits.x_train, digits.y_train, 0.85, scope="global",
                                  steps=2, epochs_per_step=5, lr=2e-3, loss_fn=kd,
                                  x_val=digits.x_test, y_val=digits.y_test)
    dens = masks.density()
    assert len(set(round(d, 3) for d in dens.values())) > 1      # layers differ
    assert hist.rounds[-1]["acc_finetuned"] > 0.88


# ----------------------------------------------------------------------------- granularity

@pytest.mark.parametrize("g", GRANULARITIES)
def test_granularity_groups_and_sparsity(cnn, g):
    m = copy.deepcopy(cnn)
    masks = granular_prune(m, 0.5, g, block=2)
    for n, layer in masks.layers().items():
        gid = group_ids(layer.weight, g, block=2)
        mk = masks.masks[n]
        # every group is all kept or all removed
        for k in torch.unique(gid):
            vals = mk[gid == k]
            assert bool(torch.all(vals == vals[0]))
        assert 0.0 < float(mk.mean()) <= 1.0
    total = sum(int(mk.numel()) for mk in masks.masks.values())
    kept = sum(int(mk.sum()) for mk in masks.masks.values())
    if g != "channel":              # the first conv has a single input channel
        assert kept / total == pytest.approx(0.5, abs=0.06)


def test_group_shapes():
    w = torch.zeros(4, 3, 3, 3)
    assert int(group_ids(w, "kernel").max()) + 1 == 12
    assert int(group_ids(w, "vector").max()) + 1 == 36
    assert int(group_ids(w, "filter").max()) + 1 == 4
    assert int(group_ids(w, "channel").max()) + 1 == 3
    assert int(group_ids(torch.zeros(6, 10), "block", block=4).max()) + 1 == 2 * 3
    with pytest.raises(PruneError, match="granularity"):
        group_ids(w, "diagonal")


def test_index_cost_coarser_is_cheaper(cnn):
    m = copy.deepcopy(cnn)
    costs = {}
    for g in ("element", "kernel", "filter"):
        mm = copy.deepcopy(m)
        masks = granular_prune(mm, 0.5, g)
        mk = masks.masks["4"]
        costs[g] = index_cost(mk, g, 4).bits
        assert costs[g] <= index_cost(mk, "element", 4).bits
    assert costs["filter"] < costs["kernel"] < costs["element"]
    # fillers: one kept weight after 40 zeros with 4-bit deltas -> 2 fillers + 1 entry
    mask = torch.zeros(1, 41)
    mask[0, 40] = 1
    assert index_cost(mask, "element", 4).entries == 3


# ----------------------------------------------------------------------------- structured

@pytest.mark.parametrize("criterion", ["l1", "bn", "mean_act", "apoz"])
def test_structured_removes_units(digits, cnn, criterion):
    small = prune_structured(cnn, 0.5, criterion=criterion, x=digits.x_train[:500])
    assert count_params(small) < count_params(cnn)
    out = predict(small, digits.x_test[:20])
    assert out.shape == (20, 10)
    convs = [m for m in small.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in small.modules() if isinstance(m, nn.BatchNorm2d)]
    assert [c.out_channels for c in convs] == [b.num_features for b in bns] == [4, 8]
    assert convs[1].in_channels == 4
    lin = [m for m in small.modules() if isinstance(m, nn.Linear)]
    assert lin[0].in_features == 8 * 4
    if criterion != "bn":
        assert lin[0].out_features == 16
    train(small, digits.x_train, digits.y_train, epochs=4, lr=3e-3)
    assert evaluate(small, digits.x_test, digits.y_test) > 0.8


def test_remove_nothing_is_identity(digits, cnn):
    keep = {u.name: torch.arange(u.size) for u in units(cnn)}
    same = remove_units(cnn, keep)
    assert torch.allclose(predict(same, digits.x_test[:50]), predict(cnn, digits.x_test[:50]),
                          atol=1e-5)


def test_removing_dead_units_is_exact(digits, mlp):
    m = copy.deepcopy(mlp)
    with torch.no_grad():            # kill neurons 0..9 of the first hidden layer
        m[1].weight[:10] = 0
        m[1].bias[:10] = -1.0
    small = prune_structured(m, 10 / 64, criterion="mean_act", x=digits.x_train)
    assert small[1].out_features == 54 and small[3].in_features == 54
    assert torch.allclose(predict(small, digits.x_test), predict(m, digits.x_test), atol=1e-5)


def test_structured_errors(mlp):
    with pytest.raises(GraphError, match="BatchNorm2d"):
        unit_scores(mlp, "bn")
    with pytest.raises(PruneError, match="needs data"):
        unit_scores(mlp, "apoz")
    with pytest.raises(PruneError, match="unknown criterion"):
        unit_scores(mlp, "taylor")
    with pytest.raises(PruneError):
        prune_structured(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), 0.5)


def test_slimming_penalty_shrinks_bn(digits, cnn):
    m = copy.deepcopy(cnn)
    before = sum(float(b.weight.detach().abs().sum()) for b in m.modules()
                 if isinstance(b, nn.BatchNorm2d))
    train(m, digits.x_train, digits.y_train, epochs=3, lr=2e-3,
          extra_loss=bn_l1_penalty(1e-2))
    after = sum(float(b.weight.detach().abs().sum()) for b in m.modules()
                if isinstance(b, nn.BatchNorm2d))
    assert after < before
    slim = prune_structured(m, 0.5, criterion="bn", scope="global", normalize=None)
    assert count_params(slim) < count_params(m)
    with pytest.raises(GraphError):
        bn_l1_penalty()(digits_mlp())


# ----------------------------------------------------------------------------- global

def test_normalize_and_global_keep():
    scores = {"a": torch.tensor([1.0, 2.0, 3.0, 4.0]), "b": torch.tensor([100.0, 200.0])}
    raw = global_keep(scores, 0.5)
    assert raw["a"].tolist() == [3] and raw["b"].tolist() == [0, 1] or len(raw["a"]) >= 2
    norm = normalize_scores(scores, "mean")
    assert float(norm["a"].mean()) == pytest.approx(1.0)
    keep = global_keep(norm, 0.5)
    assert len(keep["a"]) + len(keep["b"]) == 3
    assert keep["b"].tolist() == [1]
    for method in ("l2", "max", "rank", None):
        normalize_scores(scores, method)
    with pytest.raises(PruneError):
        normalize_scores(scores, "zscore")
    # min_keep is honoured
    k = global_keep({"a": torch.zeros(3), "b": torch.ones(3)}, 0.9, min_keep=1,
                    max_layer_fraction=1.0)
    assert len(k["a"]) >= 1 and len(k["b"]) >= 1


def test_progressive_global_and_uniform(digits, cnn):
    acc0 = evaluate(cnn, digits.x_test, digits.y_test)
    floor = acc0 - 0.03
    res = {}
    for mode in ("global", "uniform"):
        r = progressive_prune(cnn, digits.x_train, digits.y_train, digits.x_test,
                              digits.y_test, floor, mode=mode, fraction=0.25, max_rounds=2,
                              finetune_epochs=2, lr=2e-3, retries=0)
        assert evaluate(r.model, digits.x_test, digits.y_test) >= floor
        assert r.params <= count_params(cnn)
        assert r.history[0]["params"] == count_params(cnn)
        res[mode] = r
    assert count_params(cnn) == 3706      # the input model is not modified
    u = uniform_to_params(cnn, res["global"].params)
    assert count_params(u) <= res["global"].params
    sizes = unit_sizes(cnn)
    assert sizes["9"] == 16 * 4 + 1 + 10 and sizes["4"] == 8 * 9 + 1 + 2 + 32 * 4
