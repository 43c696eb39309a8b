"""zeroskip's public Python API: from a trained ``nn.Module`` to results on the simulated RTL.

These functions are re-exported by the ``zeroskip`` package (``zeroskip.quantize``,
``zeroskip.pack``, ...), which imports this module only when one of them is first used, so
``import zeroskip`` stays light. They are the stable surface; the subpackages
(:mod:`zeroskip.sw`, :mod:`zeroskip.sim`, ...) are the toolkit underneath and may change.

    qm  = zeroskip.quantize(model, calib_x, board="ulx3s")    # -> QModel (integer layers)
    pm  = zeroskip.pack(qm, board="ulx3s")                     # -> PackedModel (streams)
    zeroskip.save(pm, "m.zsk"); pm = zeroskip.load("m.zsk")
    x   = zeroskip.quantize_input(pm, x_float)                 # float inputs -> uint8 codes
    y   = zeroskip.reference(pm, x)                            # bit-exact integer reference
    res = zeroskip.simulate(pm, x)                             # Verilated RTL: outputs, counters
    zeroskip.fits(pm)                                          # which boards the file fits

The parameters of the hardware are :class:`~zeroskip.spec.HwParams`; ``board=`` takes a
board's (``zeroskip.BOARDS``: ``"icebreaker"``, ``"ulx3s"``). A model is quantized and packed for
one set of parameters, and runs on hardware built with them. The user guide is
``docs/guide.md``.

Running on a board goes through the host link: ``zeroskip.Board`` (defined in
:mod:`zeroskip.host`, exported by the package) opens a real board's serial port or the
simulated board (``Board("sim:icebreaker")``: the board top under Verilator behind a
pseudo-terminal), loads a packed model, verifies it and runs inputs::

    with zeroskip.Board("sim:icebreaker") as board:
        board.load(pm)                                         # checked against board.info()
        y = board.infer(x)                                     # == zeroskip.reference(pm, x)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from zeroskip.spec import HwParams
    from zeroskip.sw.pack import PackedModel
    from zeroskip.sw.quant import QModel

__all__ = ["BOARDS", "SimResult", "board_fit", "board_params", "fits", "load", "pack", "quantize",
           "quantize_input", "reference", "save", "simulate"]

#: The boards zeroskip builds for (their accelerator parameters: :func:`board_params`).
BOARDS = ("icebreaker", "ulx3s")


def board_params(board: str) -> HwParams:
    """The accelerator parameters of ``board`` (one of :data:`BOARDS`), as built by
    ``nox -s build`` (``docs/boards.md``)."""
    from zeroskip.boards.tops import BOARD_PARAMS
    from zeroskip.sw.errors import ZeroskipError
    if board not in BOARD_PARAMS:
        raise ZeroskipError(f"unknown board {board!r}; boards: {', '.join(sorted(BOARD_PARAMS))}")
    return BOARD_PARAMS[board]


def _resolve(params: HwParams | None, board: str | None) -> HwParams:
    from zeroskip.spec import HwParams
    if params is not None and board is not None:
        raise TypeError("give params or board, not both")
    if board is not None:
        return board_params(board)
    return params if params is not None else HwParams()


def quantize(model, calib, params: HwParams | None = None, *, board: str | None = None,
             percentile: float = 100.0) -> QModel:
    """Quantize a trained float ``model`` (Linear/ReLU stack) to integer layers.

    ``calib`` is a batch of typical float inputs (tensor or array, ``(N, ...)``, non-negative);
    each activation scale is the ``percentile`` of its layer's outputs on it. ``params`` (or
    ``board``) are the hardware's (default :class:`HwParams()`): they bound the requantization
    multipliers and shifts. Raises :class:`~zeroskip.sw.errors.ZeroskipError` subclasses on
    models or data it cannot take.
    """
    from zeroskip.sw.quant import quantize_mlp
    return quantize_mlp(model.eval(), calib, _resolve(params, board), percentile=percentile)


def pack(qmodel: QModel, params: HwParams | None = None, *, board: str | None = None,
         dense: bool = False) -> PackedModel:
    """Pack ``qmodel`` into per-PE relative-index streams for ``params`` or ``board``.

    ``dense`` stores zero weights too (the baseline). Raises
    :class:`~zeroskip.sw.errors.FitError` naming the limit when the model does not fit.
    """
    from zeroskip.sw.pack import pack_model
    return pack_model(qmodel, _resolve(params, board), dense=dense)


def save(pm: PackedModel, path) -> int:
    """Write ``pm`` to a ``.zsk`` file (atomically); returns its size in bytes."""
    from zeroskip.sw.pack import write_model
    return write_model(path, pm)


def load(path) -> PackedModel:
    """Read a ``.zsk`` file (every field and CRC checked; ``docs/format.md``)."""
    from zeroskip.sw.pack import read_model
    return read_model(path)


def quantize_input(model: PackedModel | QModel, x) -> np.ndarray:
    """Float inputs ``(N, ...)`` to the uint8 codes the model takes (its input scale)."""
    from zeroskip.sw.pack import PackedModel
    qm = model.qmodel() if isinstance(model, PackedModel) else model
    return qm.quantize_input(x)


def reference(model: PackedModel | QModel, x) -> np.ndarray:
    """Outputs of the bit-exact integer reference on uint8 codes ``x`` (``(N, in)`` or one
    vector): int64 ``(N, out)``, uint8 codes or int32 logits as the last layer gives."""
    from zeroskip.sw.ref import run_model
    return run_model(model, x).numpy()


def _over_by(msg: str) -> str:
    """``msg`` of a FitError, with how far over the limit it is when the message says so
    ("... N things ..., more than limit=M")."""
    import re
    m = re.search(r"more than \w+=(\d+)$", msg)
    need = re.findall(r"\d+", msg[:m.start()]) if m else []
    if m and need and int(m.group(1)) > 0:
        n, limit = int(need[-1]), int(m.group(1))
        return f"{msg} ({n - limit} over, {n / limit:.2f}x the limit)"
    return msg


def board_fit(pm: PackedModel) -> dict[str, dict]:
    """For each board: does the file load as it is (``packed_for_it``), and if not, the packing
    parameters that differ (``differs``: ``{field: [file's, board's]}``) and whether the model
    fits the board once repacked for it (``fits``; else ``limit``: the
    :class:`~zeroskip.sw.errors.FitError` of :func:`~zeroskip.sw.pack.check_fits`, with how far
    over the limit it is)."""
    from dataclasses import fields

    from zeroskip.sw.errors import FitError
    from zeroskip.sw.pack import pack_model, unsupported_layer
    out = {}
    for name in BOARDS:
        bp = board_params(name)
        if pm.params.packs_like(bp):
            why = unsupported_layer([pl.q for pl in pm.layers], bp)
            out[name] = {"fits": why is None, "packed_for_it": True, "differs": {},
                         "limit": why}
            continue
        differs = {f.name: [getattr(pm.params, f.name), getattr(bp, f.name)]
                   for f in fields(bp) if f.name not in bp.HARDWARE_ONLY
                   and getattr(pm.params, f.name) != getattr(bp, f.name)}
        try:
            pack_model(pm.qmodel(), bp)
            limit = None
        except FitError as e:
            limit = _over_by(str(e))
        out[name] = {"fits": limit is None, "packed_for_it": False, "differs": differs,
                     "limit": limit}
    return out


def fits(pm: PackedModel) -> dict[str, str | None]:
    """For each board: ``None`` if ``pm`` loads onto it as it is, else why not (packed for other
    parameters, and whether repacking for the board would fit; the limit it exceeds)."""
    out: dict[str, str | None] = {}
    for name, f in board_fit(pm).items():
        if f["packed_for_it"]:
            out[name] = None if f["fits"] else f"does not run on it: {f['limit']}"
        else:
            diff = ", ".join(f"{k} {a} vs {b}" for k, (a, b) in f["differs"].items())
            again = "fits once repacked" if f["fits"] else f"does not fit: {f['limit']}"
            out[name] = f"packed for other parameters ({diff}); {again}"
    return out


@dataclass
class SimResult:
    """What :func:`simulate` measured.

    Members
    -------
    outputs : int64 ``(N, out)``, in the model's output order.
    counters : per input, the hardware's counters (``cycles``, ``useful_macs``, ``entries``,
        ``skipped_acts``, per-PE ``pe_busy`` and ``pe_stall``).
    checked : whether every output was compared with the reference (and equal).
    """
    outputs: np.ndarray
    counters: list[dict] = field(default_factory=list)
    checked: bool = False

    @property
    def cycles(self) -> np.ndarray:
        """Cycles per inference (from the RTL's counter)."""
        return np.array([c["cycles"] for c in self.counters], dtype=np.int64)


def simulate(pm: PackedModel, x, *, check: bool = True, skip_zero_acts: bool = True,
             hw: HwParams | None = None, board: str | None = None, seed: int | None = None,
             progress: bool = False) -> SimResult:
    """Run uint8 codes ``x`` through the Verilated accelerator loaded with ``pm``.

    The hardware is ``board``'s accelerator exactly as built for it (its hardware-only
    parameters such as ``fin_lanes`` and its counter width too), or ``hw``, or by default the
    parameters ``pm`` was packed for (a model file does not record the hardware-only ones:
    they take their defaults). Its simulator is compiled the first time only (a few minutes;
    cached in the user cache directory, or ``$ZEROSKIP_SIM_BUILD``), then reused by every
    model and call. ``check`` compares every
    output with :func:`reference` and raises :class:`~zeroskip.sim.runner.SimulationFailed` (an
    ``AssertionError``) on any difference. ``skip_zero_acts=False`` turns activation skipping
    off (with a dense packing: the dense baseline). ``progress`` prints the build and run
    progress to stderr.
    """
    from zeroskip.sim.verilated import Case, ConsoleProgress, run_cases
    from zeroskip.sw.ref import _as_codes
    x = _as_codes(x, pm.qmodel().in_features).numpy()
    expected = reference(pm, x) if check else None
    counter_width = 32
    if board is not None:
        if hw is not None:
            raise TypeError("give hw or board, not both")
        from zeroskip.boards.tops import BOARD_COUNTER_WIDTH
        hw, counter_width = board_params(board), BOARD_COUNTER_WIDTH[board]
    status = ConsoleProgress() if progress else None
    try:
        res = run_cases(hw or pm.params, [Case(pm, x, expected, skip_zero_acts=skip_zero_acts,
                                               name="simulate")], seed=seed, progress=status,
                        counter_width=counter_width, quiet=True)[0]
    finally:
        if status is not None:
            status.close()
    return SimResult(res.outputs, res.counters, checked=check)
