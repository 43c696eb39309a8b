"""Weight sharing, ternary weights, Huffman coding, the storage report, low-rank, distillation."""

import copy
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from zeroskip.sw.compress import (
    HuffmanCode,
    HuffmanError,
    compression_report,
    distillation_loss,
    finetune_centroids,
    low_rank,
    quantized_copy,
    share_weights,
    soft_target_loss,
    svd_linear,
    ternarize,
    train_ternary,
    train_ttq,
)
from zeroskip.sw.compress.huffman import code_lengths
from zeroskip.sw.compress.lowrank import choose_rank
from zeroskip.sw.compress.report import weight_codes
from zeroskip.sw.compress.sharing import SharingError, kmeans_1d
from zeroskip.sw.compress.ternary import TTQWeight, ternarize_tensor
from zeroskip.sw.errors import ZeroskipError
from zeroskip.sw.models import digits_cnn, digits_mlp
from zeroskip.sw.pack import pack_layer
from zeroskip.sw.params import HwParams
from zeroskip.sw.quant import quantize_mlp, quantize_weight
from zeroskip.sw.train import evaluate, predict, train

# ----------------------------------------------------------------------------- Huffman

@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-128, 127), min_size=0, max_size=400))
def test_huffman_round_trip(symbols):
    code = HuffmanCode.from_symbols(symbols)
    data, nbits = code.encode(symbols)
    assert len(data) == (nbits + 7) // 8
    assert code.decode(data, len(symbols)) == symbols
    freqs = {s: symbols.count(s) for s in set(symbols)}
    assert code.encoded_bits(freqs) == nbits


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.integers(0, 300), st.integers(1, 10_000), min_size=2, max_size=60))
def test_huffman_lengths_are_optimal_prefix_code(freqs):
    lengths = code_lengths(freqs)
    assert sum(2.0 ** -ln for ln in lengths.values()) == pytest.approx(1.0)    # complete
    total = sum(freqs.values())
    bits = sum(freqs[s] * lengths[s] for s in freqs)
    entropy = -sum(c * math.log2(c / total) for c in freqs.values())
    assert entropy <= bits + 1e-6 <= entropy + total + 1e-6
    code = HuffmanCode(lengths)
    words = [format(c, f"0{ln}b") for c, ln in code.codes.values()]
    for a in words:                                 # prefix-free
        assert sum(b.startswith(a) for b in words) == 1


def test_huffman_edge_cases():
    one = HuffmanCode.from_symbols([5, 5, 5])
    assert one.lengths == {5: 1}
    data, n = one.encode([5, 5, 5])
    assert n == 3 and one.decode(data, 3) == [5, 5, 5]
    code = HuffmanCode.from_symbols([1, 2, 2, 3, 3, 3])
    with pytest.raises(HuffmanError, match="no code"):
        code.encode([4])
    with pytest.raises(HuffmanError, match="ends after"):
        code.decode(b"", 3)
    assert code.table_bits(8) == 3 * (8 + 6)
    assert issubclass(HuffmanError, ZeroskipError)


# ----------------------------------------------------------------------------- sharing

def test_kmeans_1d():
    v = torch.cat([torch.full((50,), -1.0), torch.full((30,), 0.5), torch.full((20,), 2.0)])
    c, a = kmeans_1d(v, 3)
    assert c.tolist() == pytest.approx([-1.0, 0.5, 2.0])
    assert torch.equal(c[a], v.double())


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_share_weights_codebook(pruned, bits):
    m = copy.deepcopy(pruned)
    zeros_before = {n: (l.weight == 0) for n, l in
                    ((n, l) for n, l in m.named_modules() if isinstance(l, nn.Linear))}
    books = share_weights(m, bits)
    for n, book in books.items():
        w = dict(m.named_modules())[n].weight
        assert torch.unique(w).numel() <= 2 ** bits
        assert torch.equal(w == 0, zeros_before[n])           # pruned weights stay pruned
        # int8 compatibility: per-tensor int8 quantization returns exactly the codebook codes
        codes, scale = quantize_weight(w, per_channel=False)
        assert np.allclose(codes * scale[:, None], w.detach().double().numpy(), atol=1e-6)
        assert set(np.unique(codes)) <= set(book.int8.tolist())
        assert book.int8[0] == 0


def test_centroid_finetune_keeps_codes(digits, pruned):
    m = copy.deepcopy(pruned)
    books = share_weights(m, 3)
    acc_shared = evaluate(m, digits.x_test, digits.y_test)
    codes = {n: b.codes.clone() for n, b in books.items()}
    finetune_centroids(m, books, digits.x_train, digits.y_train, epochs=4, lr=1e-3,
                       loss_fn=distillation_loss(pruned))
    for n, b in books.items():
        assert torch.equal(b.codes, codes[n])
        assert torch.unique(dict(m.named_modules())[n].weight).numel() <= 8
    assert evaluate(m, digits.x_test, digits.y_test) >= acc_shared - 0.02
    assert evaluate(m, digits.x_test, digits.y_test) > 0.85
    # still runs through the lead's int8 pipeline
    q = quantize_mlp(m, digits.x_train)
    assert q.layers[0].weight.dtype == np.int8


def test_share_errors(mlp):
    with pytest.raises(SharingError, match="2..8"):
        share_weights(copy.deepcopy(mlp), 9)
    with pytest.raises(SharingError, match="no Linear"):
        share_weights(copy.deepcopy(mlp), {"7": 4})


# ----------------------------------------------------------------------------- ternary

def test_ternarize_tensor():
    w = torch.tensor([0.0, 0.1, -0.1, 1.0, -2.0, 3.0])
    t, alpha, delta = ternarize_tensor(w, 0.7)
    assert delta == pytest.approx(0.7 * float(w[w != 0].abs().mean()))
    assert set(t.tolist()) <= {0.0, alpha, -alpha}
    assert t[0] == 0 and t[1] == 0 and t[3] > 0 and t[4] < 0


def test_ternary_training(digits, mlp):
    m = copy.deepcopy(mlp)
    alphas = train_ternary(m, digits.x_train, digits.y_train, epochs=4, lr=1e-3)
    for n, layer in m.named_modules():
        if isinstance(layer, nn.Linear):
            assert torch.unique(layer.weight.abs()).numel() <= 2
            assert float(layer.weight.detach().abs().max()) == pytest.approx(alphas[n])
    assert evaluate(m, digits.x_test, digits.y_test) > 0.85
    rep = compression_report(m)
    assert all(r.code_bits == 2 for r in rep.layers)
    m2 = copy.deepcopy(mlp)
    ternarize(m2)
    assert torch.unique(m2[1].weight).numel() <= 3


def test_ttq_gradients_of_the_learned_scales_and_shadow_weights():
    """The scales get the summed gradients of their weights (W_n with a minus sign), and a
    shadow weight its ternary weight's gradient scaled by W_p, W_n or 1 (Zhu et al. 2017)."""
    torch.manual_seed(0)
    lin = nn.Linear(6, 4)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(4, 6))
        lin.weight[0, 0] = 0.0            # pruned: masked, gets no gradient
    mask = (lin.weight != 0).float()
    q = TTQWeight(lin.weight, mask, t=0.3)
    from zeroskip.sw.prune import register_parametrization
    register_parametrization(lin, "weight", q)
    with torch.no_grad():
        q.wp.fill_(0.8)
        q.wn.fill_(1.3)                   # asymmetric on purpose
    x, r = torch.randn(5, 6), torch.randn(5, 4)
    (lin(x) * r).sum().backward()
    shadow = lin.parametrizations.weight.original
    w = shadow.detach() * mask
    delta = 0.3 * float(w.abs().max())
    pos, neg = w > delta, w < -delta
    # the same loss with a plain layer holding the ternary weights gives dL/dW_t
    wt = (0.8 * pos.float() - 1.3 * neg.float()).requires_grad_(True)
    (torch.nn.functional.linear(x, wt, lin.bias.detach()) * r).sum().backward()
    g = wt.grad
    assert pos.any() and neg.any() and (~pos & ~neg).any()
    assert float(q.wp.grad) == pytest.approx(float(g[pos].sum()), rel=1e-5)
    assert float(q.wn.grad) == pytest.approx(-float(g[neg].sum()), rel=1e-5)
    scale = 0.8 * pos.float() + 1.3 * neg.float() + (~pos & ~neg).float()
    assert torch.allclose(shadow.grad, g * scale * mask, atol=1e-6)
    assert shadow.grad[0, 0] == 0
    assert torch.unique(lin.weight.detach()).tolist() == pytest.approx([-1.3, 0.0, 0.8])


def test_ttq_training_learns_scales_and_leaves_three_values(digits, mlp):
    m = copy.deepcopy(mlp)
    from zeroskip.sw.prune import magnitude_prune
    magnitude_prune(m, 0.3)               # pruned weights must stay zero
    mask = {n: (l.weight != 0) for n, l in m.named_modules() if isinstance(l, nn.Linear)}
    init = {}
    for n, layer in m.named_modules():
        if isinstance(layer, nn.Linear):
            q = TTQWeight(layer.weight.detach(), mask[n].float(), 0.05)
            init[n] = (float(q.wp.detach()), float(q.wn.detach()))
    scales = train_ttq(m, digits.x_train, digits.y_train, epochs=4, lr=1e-3, t=0.05)
    assert set(scales) == set(init)
    for n, layer in m.named_modules():
        if isinstance(layer, nn.Linear):
            wp, wn = scales[n]
            vals = torch.unique(layer.weight.detach())
            assert vals.numel() == 3, (n, vals)
            assert vals.tolist() == pytest.approx([-wn, 0.0, wp])
            assert wp != pytest.approx(init[n][0]) and wn != pytest.approx(init[n][1])
            assert bool((layer.weight[~mask[n]] == 0).all())
    assert evaluate(m, digits.x_test, digits.y_test) > 0.85
    with pytest.raises(ZeroskipError, match="threshold"):
        train_ttq(copy.deepcopy(mlp), digits.x_train, digits.y_train, t=1.5)


# ----------------------------------------------------------------------------- report

def test_report_counts_packer_streams(pruned):
    rep = compression_report(pruned, params=HwParams(pes=4, index_bits=4))
    layer = rep.layers[0]
    w = pruned[1].weight
    assert layer.weights == w.numel() and layer.kept == int((w != 0).sum())
    assert layer.entries >= layer.kept
    assert 2 <= layer.index_bits <= 8
    # the hardware stream columns come from the packer
    codes, _, _ = weight_codes(w)
    from zeroskip.sw.quant import QLayer
    o = codes.shape[0]
    pl = pack_layer(QLayer(codes, np.zeros(o, np.int32), np.zeros(o, np.uint16),
                           np.zeros(o, np.uint8), False), HwParams(pes=4, index_bits=4))
    assert layer.hw_entries == pl.n_entries
    # Huffman never costs more than fixed-width codes (tables aside)
    fixed = compression_report(pruned, huffman=False, index_bits=layer.index_bits, hw=False)
    assert rep.layers[0].bits_per_weight <= fixed.layers[0].bits_per_weight + 1e-9
    assert rep.dense_bytes == 4 * sum(p.numel() for p in pruned.parameters())
    assert rep.ratio > 4.0
    md = rep.to_markdown()
    assert "bits/index" in md and "total" in md
    d = rep.to_dict()
    assert d["compressed_bytes"] == rep.compressed_bytes and len(d["layers"]) == 3


def test_report_sharing_beats_int8(pruned):
    m = copy.deepcopy(pruned)
    base = compression_report(m, hw=False)
    share_weights(m, 4)
    shared = compression_report(m, hw=False)
    assert shared.compressed_bytes < base.compressed_bytes
    assert all(r.code_bits <= 4 for r in shared.layers)


def test_report_conv_and_quantized_copy(digits):
    m = digits_cnn()
    rep = compression_report(m, hw=False)
    assert rep.layers[0].shape == (8, 1, 3, 3)
    assert rep.other_params == 2 * (8 + 16)            # BatchNorm scales and shifts
    q = quantized_copy(m)
    assert torch.allclose(predict(q, digits.x_test[:20]), predict(m, digits.x_test[:20]),
                          atol=0.05)


# ----------------------------------------------------------------------------- low-rank

def test_svd_exact_at_full_rank():
    torch.manual_seed(0)
    lin = nn.Linear(12, 7)
    f = svd_linear(lin, 7)
    x = torch.randn(5, 12)
    assert torch.allclose(f(x), lin(x), atol=1e-5)
    with pytest.raises(ZeroskipError):
        svd_linear(lin, 8)


def test_low_rank_model(digits, mlp):
    small, ranks = low_rank(mlp, energy=0.9)
    assert ranks and sum(p.numel() for p in small.parameters()) < sum(
        p.numel() for p in mlp.parameters())
    assert evaluate(small, digits.x_test, digits.y_test) > 0.8
    assert choose_rank(torch.eye(5), 1.0) == 5
    r = compression_report(small, hw=False)              # nested Sequential is walked
    assert len(r.layers) > 3
    with pytest.raises(ZeroskipError, match="exactly one"):
        low_rank(mlp)


# ----------------------------------------------------------------------------- distillation

def test_distillation_loss(digits, mlp):
    logits = predict(mlp, digits.x_test[:32])
    assert float(soft_target_loss(logits, logits)) == pytest.approx(0.0, abs=1e-5)
    kd = distillation_loss(mlp, temperature=3.0, alpha=0.5)
    torch.manual_seed(0)
    student = digits_mlp((32,))
    out = student(digits.x_test[:32])
    loss = kd(out, digits.x_test[:32], digits.y_test[:32])
    loss.backward()
    assert loss.item() > 0
    assert all(p.grad is None for p in kd.teacher.parameters())
    train(student, digits.x_train, digits.y_train, epochs=10, lr=3e-3, loss_fn=kd)
    assert evaluate(student, digits.x_test, digits.y_test) > 0.8
    with pytest.raises(ZeroskipError):
        distillation_loss(mlp, temperature=0)
