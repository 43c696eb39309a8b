"""The host driver: talk to a zeroskip board (real or simulated) over a serial port.

:class:`Board` is the one class a script or a notebook needs::

    from zeroskip.host import Board
    from zeroskip.sw.pack import read_model
    with Board("/dev/ttyUSB1") as b:          # or Board("sim:icebreaker")
        print(b.info()["board"], b.info()["params"])
        b.load(read_model("digits.zsk"))
        logits = b.infer(codes)               # (N, out_features) int32, in model order

Both transports are pyserial ports: a real board's USB UART, or the pseudo-terminal of the
simulated board (:class:`zeroskip.sim.board_sim.SimBoard`, started for ``sim:<board>``). The
protocol (link version 2) is in ``docs/boards.md``. The driver retries a command on a timeout,
a bad CRC or a transient error code (same sequence number, so a replay is harmless), reloads
the model when the board says it has none (it was reset), and gives up after ``retries`` tries
with a :class:`BoardError`.
"""

from __future__ import annotations

import time
import zlib
from collections import deque
from dataclasses import fields

import numpy as np

from zeroskip.spec import (
    E_BAD_CRC,
    E_BAD_LENGTH,
    E_BUSY,
    E_CHECKSUM,
    E_NOT_LOADED,
    E_TIMEOUT,
    E_UNKNOWN_TYPE,
    ERRORS,
    IMAGE_VERSION,
    LINK_COMMANDS,
    LINK_CRC_BYTES,
    LINK_HEADER_BYTES,
    LINK_LOAD_BYTES,
    LINK_PROTOCOL_VERSION,
    LINK_WORD_BYTES,
    RESPONSE,
    T_COMMIT,
    T_COUNTERS,
    T_ERROR,
    T_INFER,
    T_INFO,
    T_LOAD,
    T_RESET,
    FrameParser,
    HwParams,
    decode_counters,
    decode_info,
    encode_commit,
    encode_frame,
    encode_load,
    link_counter_words,
)
from zeroskip.sw.errors import ZeroskipError
from zeroskip.sw.image import encode_commands, load_commands
from zeroskip.sw.pack import PackedModel

__all__ = ["Board", "BoardError", "cycle_bound", "params_diff", "link_rates"]

#: error codes worth a retry (the frame was damaged on the way, or the board was full)
_TRANSIENT = (E_BAD_CRC, E_BAD_LENGTH, E_UNKNOWN_TYPE, E_BUSY, E_TIMEOUT)
#: load words per LOAD frame (at most the board's max_payload / 8; short frames get through a
#: noisy line more often, at 9 bytes of overhead per 64)
LOAD_CHUNK = 8


class BoardError(ZeroskipError):
    """The board refused a command, or did not answer after every retry."""

    def __init__(self, msg: str, code: int | None = None):
        super().__init__(msg)
        self.code = code


def params_diff(model: HwParams, board: HwParams) -> list[str]:
    """``["pes: model 8, board 2", ...]``: the fields that stop a model packed for ``model``
    from running on ``board`` (empty if :meth:`HwParams.packs_like` holds)."""
    if model.packs_like(board):
        return []
    return [f"{f.name}: model {getattr(model, f.name)}, board {getattr(board, f.name)}"
            for f in fields(HwParams) if f.name not in HwParams.HARDWARE_ONLY
            and getattr(model, f.name) != getattr(board, f.name)]


#: bytes a frame adds to its payload (header and CRC)
FRAME_OVERHEAD = LINK_HEADER_BYTES + LINK_CRC_BYTES


def cycle_bound(pm: PackedModel, hw: HwParams | None = None) -> int:
    """The watchdog bound for ``pm``: cycles the accelerator may make the link wait in one run.

    Twice the cycle model's count (:func:`zeroskip.sw.cycles.predict_layer`) of a run with
    activation skipping off, every layer fed a map of nonzero codes (every column of every
    receptive field scanned: the most work any input can cause), plus 1024. ``hw``: the board's
    parameters (default the model's; ``fin_lanes`` changes the count). A run of a well-formed
    model stays below it; the tests check the measured cycles against it.
    """
    from zeroskip.sw.cycles import predict_layer

    total = 0
    for i, pl in enumerate(pm.layers):
        ones = np.ones(pl.q.in_size, dtype=np.int64)
        total += predict_layer(pm, i, ones, skip_zero_acts=False, hw=hw).cycles
    return 2 * total + 1024


def link_rates(in_size: int, out_features: int, baud: float) -> dict:
    """Inferences/s the serial line allows at ``baud`` (8N1: 10 bits a byte), each way."""
    up = FRAME_OVERHEAD + in_size                          # INFER frame
    down = FRAME_OVERHEAD + LINK_WORD_BYTES * out_features  # RESULT frame
    return {"bytes_to_board": up, "bytes_from_board": down,
            "inferences_per_s": baud / 10 / max(up, down)}


class Board:
    """A zeroskip board behind a serial port.

    Parameters
    ----------
    port : str
        A serial device (``/dev/ttyUSB1``, ``COM5``) or ``sim:icebreaker`` / ``sim:ulx3s``
        (starts the simulated board).
    baud : int
        The board's UART rate (115200 for the bitstreams ``zeroskip board flash`` writes).
    timeout : float or None
        Seconds to wait for an answer before a retry (default 0.5 for a real port, 0.2 for
        the simulated board); longer frames get more, by the link's byte rate.
    retries : int
        Tries per command (and per input) before :class:`BoardError`.
    faults : zeroskip.sim.board_sim.Faults, optional
        Faults the simulated board's bridge injects (``sim:`` only).
    seed : int
        Seed of those faults.

    Attributes
    ----------
    auto_reload : bool
        Load the model again (and go on) when the board answers an input with "no verified
        model loaded" (it was reset since the load); default True.
    stats : dict
        ``sent`` frames, ``retries``, ``timeouts``, ``bad_frames`` (CRC or length wrong),
        ``errors`` (error codes received, by name), ``reloads``, ``stale`` (answers to no
        outstanding command).
    """

    def __init__(self, port: str, *, baud: int = 115200, timeout: float | None = None,
                 retries: int = 10, faults=None, seed: int = 1):
        import serial

        if not isinstance(baud, int) or baud <= 0:
            raise BoardError(f"baud must be a positive integer, not {baud!r}")
        if timeout is not None and not timeout > 0:
            raise BoardError(f"timeout must be a positive number of seconds, not {timeout!r}")
        if not isinstance(retries, int) or retries < 1:
            raise BoardError(f"retries must be at least 1, not {retries!r}")
        self.port = port
        self.sim = None
        if port.startswith("sim:"):
            from zeroskip.sim.board_sim import SimBoard

            name = port[4:]
            from zeroskip.boards.platforms import BOARDS

            if name not in BOARDS:
                raise BoardError(f"{port}: unknown simulated board; known: "
                                 f"{', '.join('sim:' + b for b in BOARDS)}")
            self.sim = SimBoard(name, faults=faults, seed=seed)
            path = self.sim.port
            timeout = 0.2 if timeout is None else timeout
        else:
            if faults is not None:
                raise BoardError("faults can only be injected into a simulated board (sim:...)")
            path = port
            timeout = 0.5 if timeout is None else timeout
        self.timeout = timeout
        self.baud = baud
        self.retries = retries
        try:
            self._ser = serial.Serial(path, baud, timeout=0)
        except (serial.SerialException, OSError) as exc:
            self.close()
            raise BoardError(f"{port}: cannot open the serial port ({exc})") from None
        # the longest frame a board sends: a RESULT of act_depth words (narrowed after INFO)
        self._parser = FrameParser(max_len=LINK_WORD_BYTES * 1024)
        self._inbox: deque = deque()
        self._seq = 0
        self._info = None
        self._model: PackedModel | None = None
        self._bound = 0
        self._expect()
        #: load the model again when the board says it has none (it was reset)
        self.auto_reload = True
        self.stats = {"sent": 0, "retries": 0, "timeouts": 0, "bad_frames": 0, "false_syncs": 0,
                      "errors": {}, "reloads": 0, "stale": 0}

    # ---- plumbing

    def close(self) -> dict:
        """Close the port (and stop a simulated board); returns the simulator's fault counts."""
        ser = getattr(self, "_ser", None)
        if ser is not None:
            ser.close()
            self._ser = None
        return self.sim.close() if self.sim is not None else {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFF
        return self._seq

    def _send(self, typ: int, seq: int, payload: bytes = b"") -> None:
        self._ser.write(encode_frame(typ, seq, payload))
        self.stats["sent"] += 1

    def _frames(self, deadline: float):
        """Frames received until ``deadline`` (yields as they come; stops at the deadline)."""
        while True:
            # frames parsed but not yet consumed stay in the inbox (a caller may stop early)
            while self._inbox:
                yield self._inbox.popleft()
            bad, false = self._parser.bad_frames, self._parser.false_syncs
            data = self._ser.read(4096)
            if data:
                self._inbox.extend(self._parser.feed(data))
            self.stats["bad_frames"] += self._parser.bad_frames - bad
            self.stats["false_syncs"] += self._parser.false_syncs - false
            if self._inbox:
                continue
            if time.monotonic() >= deadline:
                return
            time.sleep(0.0005)

    def _resync(self) -> None:
        """After a timeout: drop a partly received frame (its length may have been damaged,
        and would make the parser wait for bytes that belong to later frames)."""
        self._parser.skipped += len(self._parser.buf)
        self._parser.buf.clear()

    def _expect(self, out_features: int | None = None) -> None:
        """Tell the parser which frames the board can send now, and their lengths: a false
        sync byte in garbage is then dropped at once, not waited on until a timeout."""
        counters = (LINK_WORD_BYTES * link_counter_words(self._info["params"].pes)
                    if self._info is not None else None)
        result = LINK_WORD_BYTES * out_features if out_features is not None else None
        self._parser.lengths = {T_ERROR: 2, T_INFO | RESPONSE: None, T_LOAD | RESPONSE: 0,
                                T_COMMIT | RESPONSE: 0, T_RESET | RESPONSE: 0,
                                T_COUNTERS | RESPONSE: counters, T_INFER | RESPONSE: result}

    def _wait_time(self, n_bytes: int) -> float:
        return self.timeout + 20 * n_bytes / self.baud

    def _error(self, code: int, what: str) -> BoardError:
        return BoardError(f"{what}: the board answered '{ERRORS.get(code, f'error {code}')}'",
                          code)

    def _note_error(self, code: int) -> None:
        name = ERRORS.get(code, str(code))
        self.stats["errors"][name] = self.stats["errors"].get(name, 0) + 1

    def _command(self, typ: int, payload: bytes = b"", answer_len: int = 0) -> bytes:
        """Send one command and wait for its answer (retrying); its payload."""
        seq = self._next_seq()
        what = LINK_COMMANDS[typ]
        last, last_code = "no answer", None
        for attempt in range(self.retries):
            if attempt:
                self.stats["retries"] += 1
            self._send(typ, seq, payload)
            deadline = time.monotonic() + self._wait_time(len(payload) + answer_len
                                                          + 2 * FRAME_OVERHEAD)
            for rtype, rseq, rpay in self._frames(deadline):
                if rseq != seq or rtype not in (typ | RESPONSE, T_ERROR):
                    self.stats["stale"] += 1
                    continue
                if rtype == T_ERROR:
                    code = rpay[0] if rpay else 0
                    if len(rpay) != 2 or rpay[1] != typ:
                        self.stats["stale"] += 1
                        continue
                    self._note_error(code)
                    if code in _TRANSIENT:
                        last, last_code = ERRORS[code], code
                        break
                    raise self._error(code, what)
                return rpay
            else:
                self.stats["timeouts"] += 1
                last, last_code = "no answer", None
                self._resync()
        raise BoardError(f"{what}: {last} after {self.retries} tries ({self.port})", last_code)

    # ---- commands

    def info(self, refresh: bool = False) -> dict:
        """What the board is: ``board``, ``protocol``, ``bitstream_version``, ``params``
        (:class:`HwParams`), ``clk_hz``, ``counter_width``, ``max_payload``, ..."""
        if self._info is None or refresh:
            pay = self._command(T_INFO, answer_len=80)
            try:
                info = decode_info(pay)
            except ValueError as exc:
                raise BoardError(f"INFO: {exc}") from None
            if info["protocol"] != LINK_PROTOCOL_VERSION:
                raise BoardError(f"the board speaks link protocol {info['protocol']}, this "
                                 f"host {LINK_PROTOCOL_VERSION}: flash a current bitstream")
            if info["image_version"] != IMAGE_VERSION:
                raise BoardError(f"the board decodes load image version "
                                 f"{info['image_version']}, this host writes {IMAGE_VERSION}: "
                                 "flash a current bitstream")
            self._info = info
            self._parser.max_len = max(LINK_WORD_BYTES * info["params"].act_depth, len(pay))
            self._expect()
        return self._info

    def reset(self) -> None:
        """RESET: the accelerator and the link restart; the model must be loaded again."""
        self._command(T_RESET)
        self._model = None

    def counters(self) -> dict:
        """The accelerator's counters of the last run (``cycles``, ``useful_macs``, ...,
        ``pe_busy``)."""
        pes = self.info()["params"].pes
        pay = self._command(T_COUNTERS, answer_len=LINK_WORD_BYTES * link_counter_words(pes))
        try:
            return decode_counters(pay, pes)
        except ValueError as exc:
            raise BoardError(f"COUNTERS: {exc}") from None

    def check_model(self, pm: PackedModel) -> None:
        """:class:`BoardError` (one line naming the fields) if ``pm`` was packed for other
        parameters than the board's."""
        board = self.info()["params"]
        diff = params_diff(pm.params, board)
        if diff:
            raise BoardError(f"the model was packed for other parameters than the "
                             f"{self.info()['board']} board's: {'; '.join(diff)} "
                             f"(repack it for the board)")

    def load_words(self, words, bound: int) -> None:
        """Load raw load words (as :func:`zeroskip.sw.image.encode_commands` makes them) and
        COMMIT them with the watchdog ``bound``: RESET, LOAD frames, COMMIT. Tries the whole
        load again (up to 3 times) if the board's checksum differs (it was reset meanwhile)."""
        blob = encode_load(words)
        chunk = LINK_LOAD_BYTES * min(LOAD_CHUNK, self.info()["max_payload"] // LINK_LOAD_BYTES)
        for attempt in range(3):
            self._command(T_RESET)
            for k in range(0, len(blob), chunk):
                self._command(T_LOAD, blob[k:k + chunk])
            try:
                self._command(T_COMMIT, encode_commit(zlib.crc32(blob), bound))
                return
            except BoardError as exc:
                if exc.code != E_CHECKSUM or attempt == 2:
                    raise
                self.stats["reloads"] += 1

    def load(self, pm: PackedModel) -> None:
        """Check that ``pm`` fits the board, load it and verify the board's checksum."""
        self.check_model(pm)
        self._bound = cycle_bound(pm, self.info()["params"])
        self.load_words(encode_commands(pm.params, load_commands(pm)), self._bound)
        self._model = pm
        self._expect(pm.layers[-1].q.out_features)

    def infer(self, x, progress=None, window: int = 2) -> np.ndarray:
        """Run every row of ``x`` (uint8 codes, ``(N, in_size)``: a CNN's whole input map in
        CHW order) through the loaded model;
        the ``(N, out_features)`` int32 outputs in the model's row order.

        Up to ``window`` inputs are in flight (the board buffers two), so the next input
        arrives while the current one runs. ``progress(done, total)`` is called as results
        come in.
        """
        pm = self._model
        if pm is None:
            raise BoardError("no model loaded: call load() first")
        if not 1 <= window <= 128:
            raise BoardError(f"window must be 1..128 inputs in flight, not {window}")
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != pm.layers[0].q.in_size:
            raise BoardError(f"inputs must be (N, {pm.layers[0].q.in_size}) codes, "
                             f"not {x.shape}")
        if x.size and (x.min() < 0 or x.max() > 255):
            raise BoardError("inputs must be uint8 codes (0..255)")
        x = x.astype(np.uint8)
        n, out_f = len(x), pm.layers[-1].q.out_features
        if n == 0:
            return pm.from_hw_order(np.zeros((0, out_f), dtype=np.int32))
        results = np.zeros((n, out_f), dtype=np.int32)
        done = np.zeros(n, dtype=bool)
        pending: dict[int, list] = {}    # seq -> [index, tries, deadline]
        nxt = 0
        n_done = 0
        wait = self._wait_time(len(x[0]) + LINK_WORD_BYTES * out_f + 2 * FRAME_OVERHEAD)
        reloads = 0

        def send(seq, i):
            self._send(T_INFER, seq, x[i].tobytes())

        while n_done < n:
            while len(pending) < window and nxt < n:
                seq = self._next_seq()
                while seq in pending:    # the 8-bit space wraps (a reload's frames use it
                    seq = self._next_seq()   # too): never two inputs in flight on one seq
                send(seq, nxt)
                pending[seq] = [nxt, 1, time.monotonic() + wait]
                nxt += 1
            deadline = min(v[2] for v in pending.values())
            reload = False
            for rtype, rseq, rpay in self._frames(deadline):
                if rseq not in pending:
                    self.stats["stale"] += 1
                    continue
                i = pending[rseq][0]
                if rtype == T_INFER | RESPONSE and len(rpay) == LINK_WORD_BYTES * out_f:
                    results[i] = np.frombuffer(rpay, dtype="<i4")
                    done[i] = True
                    n_done += 1
                    del pending[rseq]
                    if progress:
                        progress(n_done, n)
                    break
                if rtype == T_ERROR and len(rpay) == 2 and rpay[1] == T_INFER:
                    code = rpay[0]
                    self._note_error(code)
                    if code == E_NOT_LOADED and self.auto_reload:
                        reload = True
                        break
                    if code in _TRANSIENT:
                        self._retry(pending, rseq, send, wait)
                        break
                    raise self._error(code, f"INFER of input {i}")
                self.stats["stale"] += 1
            else:
                late = [s for s, v in pending.items() if v[2] <= time.monotonic()]
                if late:
                    self._resync()
                for seq in late:
                    self.stats["timeouts"] += 1
                    self._retry(pending, seq, send, wait)
            if reload:
                reloads += 1
                if reloads > self.retries:
                    raise BoardError(f"INFER: the board lost its model {reloads} times")
                self.stats["reloads"] += 1
                self._bound = self._bound or cycle_bound(pm, self.info()["params"])
                self.load_words(encode_commands(pm.params, load_commands(pm)), self._bound)
                now = time.monotonic()
                for seq, v in pending.items():
                    send(seq, v[0])
                    v[2] = now + wait
        return pm.from_hw_order(results)

    def _retry(self, pending, seq, send, wait) -> None:
        v = pending[seq]
        if v[1] >= self.retries:
            raise BoardError(f"INFER of input {v[0]}: no answer after {self.retries} tries "
                             f"({self.port})")
        v[1] += 1
        self.stats["retries"] += 1
        send(seq, v[0])
        v[2] = time.monotonic() + wait
