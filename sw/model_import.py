"""Read a user's ``nn.Module`` as the chain of layers zeroskip runs.

The module is traced with ``torch.fx`` symbolic tracing, so the real execution order and the
real operations of its ``forward`` are seen (not the order in which submodules happen to be
registered). The traced graph must be a single chain of:

* ``nn.Linear``; ``nn.Conv2d`` with a square kernel 1..7, a square stride 1..2, padding
  0..kernel//2 (an int or a square pair), ``groups=1``, ``dilation=1``, ``padding_mode="zeros"``,
  with or without bias;
* ``nn.BatchNorm2d`` directly after a ``Conv2d``, ``nn.BatchNorm1d`` directly after a ``Linear``
  (eval mode, running statistics): folded into that layer's weights and bias;
* ``nn.ReLU`` / ``F.relu`` / ``torch.relu`` / ``x.relu()``;
* ``nn.MaxPool2d`` / ``F.max_pool2d`` (kernel 2..3, stride = kernel or given 1..3, no padding,
  dilation 1, ``ceil_mode=False``) after a convolution and its ReLU. ``Conv -> MaxPool -> ReLU``
  is accepted as ``Conv -> ReLU -> MaxPool``: ReLU is monotone, so ``relu(max(a, b)) ==
  max(relu(a), relu(b))`` exactly, in float and on integer codes;
* ``nn.Flatten`` / ``torch.flatten(x, 1)`` / ``x.flatten(1)`` / ``x.view(x.size(0), -1)`` /
  ``x.reshape(x.size(0), -1)`` (also with ``-1`` or the literal feature count) before the
  ``Linear`` layers, which then read the map in PyTorch's (C, H, W) order;
* ``nn.Dropout`` and ``nn.Identity`` (no-ops at inference).

Anything else -- another layer type (``Sigmoid``, ``AvgPool2d``...), an unsupported option
(groups, dilation, a 5x3 kernel...), a branch or residual add, a pooling whose equivalence
cannot be shown -- raises :class:`UnsupportedModelError` with one line naming the layer by its
qualified name and type and saying what is supported.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ZeroskipError

__all__ = ["UnsupportedModelError", "FloatLayer", "extract_layers", "float_model", "SUPPORTED"]

SUPPORTED = ("supported: Linear, Conv2d (square kernel 1..7, stride 1..2, padding 0..k//2, "
             "groups 1, dilation 1), BatchNorm2d/BatchNorm1d right after Conv2d/Linear, ReLU, "
             "MaxPool2d (kernel 2..3, no padding) after a Conv2d, Flatten, Dropout, Identity, "
             "in one chain")


class UnsupportedModelError(ZeroskipError, ValueError):
    """The model has a layer, option or connection zeroskip cannot run (named in the message)."""


@dataclass
class FloatLayer:
    """One layer of the chain with any BatchNorm folded in (float64 parameters).

    ``kind`` is ``"conv"`` (``weight`` ``(O, C, K, K)``) or ``"fc"`` (``weight`` ``(O, I)``);
    ``relu``: followed by ReLU; ``pool``: ``(k, s)`` max pooling after it; ``flatten_before``:
    an FC layer reading a flattened map; ``names``: the qualified names it came from.
    """
    kind: str
    weight: torch.Tensor
    bias: torch.Tensor
    stride: int = 1
    padding: int = 0
    relu: bool = False
    pool: tuple[int, int] | None = None
    name: str = ""
    names: list[str] = field(default_factory=list)
    pool_pending_relu: bool = False

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The float layer (including ReLU and pooling)."""
        w, b = self.weight.to(x.dtype), self.bias.to(x.dtype)
        if self.kind == "conv":
            y = F.conv2d(x, w, b, stride=self.stride, padding=self.padding)
        else:
            y = F.linear(x.reshape(x.shape[0], -1), w, b)
        if self.relu:
            y = torch.relu(y)
        if self.pool is not None:
            y = F.max_pool2d(y, self.pool[0], self.pool[1])
        return y


def _refuse(name: str, what: str, why: str = "", tail: bool = True) -> UnsupportedModelError:
    why = f": {why}" if why else " is not supported"
    return UnsupportedModelError(f"layer {name} ({what}){why}" + (f"; {SUPPORTED}" if tail
                                                                 else ""))


def _pair(v, name: str, what: str, label: str) -> int:
    if isinstance(v, str):
        raise _refuse(name, what, f"{label}={v!r}")
    t = tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    if len(t) != 2 or t[0] != t[1]:
        raise _refuse(name, what, f"{label} {t} is not square")
    return int(t[0])


def _check_conv(m: nn.Conv2d, name: str) -> tuple[int, int, int]:
    what = "Conv2d"
    k = _pair(m.kernel_size, name, what, "kernel")
    s = _pair(m.stride, name, what, "stride")
    p = _pair(m.padding, name, what, "padding")
    d = _pair(m.dilation, name, what, "dilation")
    if m.groups != 1:
        raise _refuse(name, what, f"groups={m.groups}")
    if d != 1:
        raise _refuse(name, what, f"dilation={d}")
    if m.padding_mode != "zeros":
        raise _refuse(name, what, f"padding_mode={m.padding_mode!r}")
    if not 1 <= k <= 7:
        raise _refuse(name, what, f"kernel {k}")
    if not 1 <= s <= 2:
        raise _refuse(name, what, f"stride {s}")
    if not 0 <= p <= k // 2:
        raise _refuse(name, what, f"padding {p} with kernel {k}")
    return k, s, p


def _check_pool(name: str, kernel, stride, padding, dilation, ceil_mode, return_indices,
                what: str = "MaxPool2d") -> tuple[int, int]:
    k = _pair(kernel, name, what, "kernel")
    s = k if stride is None or (isinstance(stride, (tuple, list)) and not stride) else \
        _pair(stride, name, what, "stride")
    if _pair(padding, name, what, "padding") != 0:
        raise _refuse(name, what, f"padding={padding}")
    if _pair(dilation, name, what, "dilation") != 1:
        raise _refuse(name, what, f"dilation={dilation}")
    if ceil_mode:
        raise _refuse(name, what, "ceil_mode=True")
    if return_indices:
        raise _refuse(name, what, "return_indices=True")
    if not 2 <= k <= 3 or not 1 <= s <= 3:
        raise _refuse(name, what, f"kernel {k}, stride {s}")
    return k, s


def _fold_bn(layer: FloatLayer, bn: nn.Module, name: str) -> None:
    what = type(bn).__name__
    if bn.training:
        raise _refuse(name, what, "in training mode (call model.eval())", tail=False)
    if bn.running_mean is None or bn.running_var is None:
        raise _refuse(name, what, "without running statistics (track_running_stats=False)")
    if bn.num_features != layer.out_channels:
        raise _refuse(name, what, f"{bn.num_features} features after a layer with "
                                  f"{layer.out_channels} outputs")
    mean = bn.running_mean.detach().to(torch.float64)
    var = bn.running_var.detach().to(torch.float64)
    gamma = bn.weight.detach().to(torch.float64) if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.detach().to(torch.float64) if bn.bias is not None else torch.zeros_like(mean)
    a = gamma / torch.sqrt(var + bn.eps)
    layer.weight = layer.weight * a.reshape(-1, *([1] * (layer.weight.ndim - 1)))
    layer.bias = (layer.bias - mean) * a + beta


_RELU_FUNCS = {F.relu, torch.relu, torch.nn.functional.relu}
_FLATTEN_FUNCS = {torch.flatten}


def _node_name(node) -> str:
    return str(node.target) if node.op == "call_module" else node.name


def _tensor_inputs(node, shape_nodes) -> list:
    out = []
    for a in node.all_input_nodes:
        if a not in shape_nodes:
            out.append(a)
    return out


def _trace(model: nn.Module):
    import torch.fx as fx
    try:
        return fx.symbolic_trace(model)
    except Exception as e:  # noqa: BLE001 - any tracing failure is reported the same way
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsupportedModelError(
            f"cannot trace {type(model).__name__}.forward with torch.fx ({type(e).__name__}: "
            f"{first[:160]}); zeroskip needs a forward without data-dependent control flow "
            "made of the supported layers") from None


def extract_layers(model: nn.Module) -> list[FloatLayer]:
    """The chain of float layers of ``model`` (BatchNorm folded), in execution order."""
    if not isinstance(model, nn.Module):
        raise UnsupportedModelError(f"not an nn.Module: {type(model).__name__}")
    gm = _trace(model)
    mods = dict(gm.named_modules())
    nodes = list(gm.graph.nodes)
    inputs = [n for n in nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        raise UnsupportedModelError(f"{type(model).__name__}.forward takes {len(inputs)} "
                                    "inputs; zeroskip runs models with one input tensor")
    cur = inputs[0]
    shape_nodes: set = set()          # x.size(0), x.shape[0]: only used by view/reshape
    layers: list[FloatLayer] = []
    flat = False                      # a Flatten has been seen
    last_op = None                    # "layer", "bn", "relu", "pool", "flatten"

    def need_layer(name, what):
        if not layers:
            raise _refuse(name, what, "before any Linear or Conv2d layer")
        return layers[-1]

    for node in nodes:
        if node.op in ("placeholder", "get_attr"):
            if node.op == "get_attr":
                raise _refuse(node.name, f"attribute {node.target}",
                              "a tensor attribute used in forward")
            continue
        if node.op == "output":
            if node.args[0] is not cur:
                raise UnsupportedModelError(f"{type(model).__name__}.forward does not return "
                                            "the end of its layer chain")
            break
        name = _node_name(node)
        # shape queries feeding a view/reshape
        if node.op == "call_method" and node.target == "size" and node.args[0] is cur:
            shape_nodes.add(node)
            continue
        if node.op == "call_function" and node.target is getattr and node.args[0] is cur:
            shape_nodes.add(node)
            continue
        if node.op == "call_function" and node.target is operator.getitem and \
                node.args[0] in shape_nodes:
            shape_nodes.add(node)
            continue
        ins = _tensor_inputs(node, shape_nodes)
        if node.op == "call_module":
            m = mods[node.target]
            what = type(m).__name__
        else:
            if node.op == "call_function":
                fn = getattr(node.target, "__name__", str(node.target))
                mod = getattr(node.target, "__module__", None) or "torch"
                what = f"function {'torch' if mod.startswith('torch._') else mod}.{fn}"
            else:
                what = f"Tensor.{node.target}"
            stack = node.meta.get("nn_module_stack") or {}
            if stack:           # inside a submodule's forward: name that module
                path, (_, cls) = list(stack.items())[-1]
                name = path
                what = f"{getattr(cls, '__name__', cls)}: {what}"
        if ins != [cur]:
            raise _refuse(name, what, "combines several tensors (a branch or residual "
                                      "connection)" if len(ins) > 1 else
                          "does not consume the previous layer's output")
        kind = None
        if node.op == "call_module":
            if isinstance(m, nn.Conv2d):
                if flat:
                    raise _refuse(name, what, "after Flatten")
                if layers and layers[-1].pool_pending_relu:
                    raise _refuse(layers[-1].names[-1], "MaxPool2d", "before the ReLU, "
                                  "followed by something other than ReLU")
                k, s, p = _check_conv(m, name)
                b = m.bias.detach().to(torch.float64) if m.bias is not None else \
                    torch.zeros(m.out_channels, dtype=torch.float64)
                layers.append(FloatLayer("conv", m.weight.detach().to(torch.float64).clone(),
                                         b.clone(), s, p, name=name, names=[name]))
                kind = "layer"
            elif isinstance(m, nn.Linear):
                if layers and layers[-1].kind == "conv" and not flat:
                    raise _refuse(name, what, "on a feature map without Flatten before it")
                if layers and layers[-1].pool_pending_relu:
                    raise _refuse(layers[-1].names[-1], "MaxPool2d", "before the ReLU, "
                                  "followed by something other than ReLU")
                b = m.bias.detach().to(torch.float64) if m.bias is not None else \
                    torch.zeros(m.out_features, dtype=torch.float64)
                layers.append(FloatLayer("fc", m.weight.detach().to(torch.float64).clone(),
                                         b.clone(), name=name, names=[name]))
                flat = True
                kind = "layer"
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                want = "conv" if isinstance(m, nn.BatchNorm2d) else "fc"
                if last_op != "layer" or layers[-1].kind != want:
                    raise _refuse(name, what, "must directly follow a "
                                  + ("Conv2d" if want == "conv" else "Linear"))
                _fold_bn(layers[-1], m, name)
                layers[-1].names.append(name)
                kind = "bn"
            elif isinstance(m, nn.ReLU):
                kind = "relu"
            elif isinstance(m, nn.MaxPool2d):
                k, s = _check_pool(name, m.kernel_size, m.stride, m.padding, m.dilation,
                                   m.ceil_mode, m.return_indices)
                kind = ("pool", k, s)
            elif isinstance(m, nn.Flatten):
                if m.start_dim != 1 or m.end_dim != -1:
                    raise _refuse(name, what, f"start_dim={m.start_dim}, end_dim={m.end_dim}")
                kind = "flatten"
            elif isinstance(m, (nn.Dropout, nn.Identity)):
                kind = "noop"
            else:
                raise _refuse(name, what)
        elif node.op == "call_function":
            t = node.target
            if t in _RELU_FUNCS:
                kind = "relu"
            elif t is F.max_pool2d or t is torch.max_pool2d:
                sig = dict(zip(("input", "kernel_size", "stride", "padding", "dilation",
                                "ceil_mode", "return_indices"), node.args))
                sig.update(node.kwargs)
                k, s = _check_pool(name, sig.get("kernel_size"), sig.get("stride"),
                                   sig.get("padding", 0), sig.get("dilation", 1),
                                   sig.get("ceil_mode", False), sig.get("return_indices", False),
                                   what="max_pool2d")
                kind = ("pool", k, s)
            elif t in _FLATTEN_FUNCS:
                start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
                end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
                if start != 1 or end != -1:
                    raise _refuse(name, what, f"start_dim={start}, end_dim={end} (use "
                                              "torch.flatten(x, 1))")
                kind = "flatten"
            elif t in (F.dropout, torch.dropout):
                kind = "noop"
            else:
                raise _refuse(name, what)
        else:  # call_method
            t = node.target
            if t == "relu":
                kind = "relu"
            elif t == "flatten":
                start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
                end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
                if start != 1 or end != -1:
                    raise _refuse(name, what, f"start_dim={start}, end_dim={end}")
                kind = "flatten"
            elif t in ("view", "reshape"):
                dims = node.args[1:]
                if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
                    dims = tuple(dims[0])
                ok = len(dims) == 2 and (dims[0] in shape_nodes or dims[0] == -1) and \
                    (dims[1] == -1 or isinstance(dims[1], int))
                if not ok:
                    raise _refuse(name, what, "only x.view(x.size(0), -1) (a flatten of each "
                                              "sample) is supported")
                kind = "flatten"
            elif t in ("contiguous",):
                kind = "noop"
            else:
                raise _refuse(name, what)
        # apply the operation to the chain
        if kind == "noop":
            cur = node                  # passes its input through
            continue
        if kind == "relu":
            lay = need_layer(name, what)
            lay.relu = True
            lay.pool_pending_relu = False
            lay.names.append(name)
        elif isinstance(kind, tuple):
            lay = need_layer(name, what)
            if lay.kind != "conv" or flat:
                raise _refuse(name, what, "not after a Conv2d")
            if lay.pool is not None:
                raise _refuse(name, what, "a second pooling after one convolution")
            lay.pool = (kind[1], kind[2])
            lay.pool_pending_relu = not lay.relu
            lay.names.append(name)
        elif kind == "flatten":
            if layers and layers[-1].pool_pending_relu:
                raise _refuse(layers[-1].names[-1], "MaxPool2d", "before the ReLU, followed "
                              "by something other than ReLU")
            flat = True
        elif kind == "layer" and len(layers) > 1:
            prev = layers[-2]
            if not prev.relu:
                raise _refuse(prev.name, prev.kind == "conv" and "Conv2d" or "Linear",
                              "a hidden layer must be followed by ReLU (activations are "
                              "uint8 with zero point 0)", tail=False)
        last_op = kind if isinstance(kind, str) else "pool"
        cur = node
    if not layers:
        raise UnsupportedModelError(f"{type(model).__name__} has no Linear or Conv2d layer")
    if layers[-1].pool_pending_relu:
        layers[-1].pool_pending_relu = False      # max pooling of the logits: exact as well
    return layers


class _FloatChain(nn.Module):
    def __init__(self, layers: list[FloatLayer]):
        super().__init__()
        self.chain = layers

    def forward(self, x):
        for lay in self.chain:
            x = lay.forward(x)
        return x


def float_model(layers: list[FloatLayer]) -> nn.Module:
    """The chain as a float module (BatchNorm folded): what the integer model approximates."""
    return _FloatChain(layers).eval()
