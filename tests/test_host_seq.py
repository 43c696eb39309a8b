"""The host driver's sequence numbers and argument checks, against a fake serial port (no
simulator): an input in flight never shares its 8-bit sequence number with another, also
when a model reload in the middle of ``infer`` consumes sequence numbers of its own."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

import zeroskip.host as host
from zeroskip.boards.tops import BOARD_PARAMS
from zeroskip.cli import main
from zeroskip.sim.cases import random_model
from zeroskip.spec import (
    E_NOT_LOADED,
    RESPONSE,
    T_COMMIT,
    T_ERROR,
    T_INFER,
    FrameParser,
    encode_frame,
)
from zeroskip.sw.pack import pack_model


class FakeBoard:
    """Answers every frame at once. The first INFER says 'no model' (as after a reset), which
    makes the host reload; later INFERs answer every output with the input's first byte, so
    a result names the input it came from."""

    def __init__(self, out_f: int):
        self.out, self.parser, self.loaded, self.first, self.out_f = bytearray(), \
            FrameParser(), False, True, out_f

    def write(self, data: bytes) -> None:
        for typ, seq, pay in self.parser.feed(data):
            if typ == T_INFER and (self.first or not self.loaded):
                self.first = self.loaded = False
                self.out += encode_frame(T_ERROR, seq, bytes([E_NOT_LOADED, T_INFER]))
            elif typ == T_INFER:
                word = int(pay[0]).to_bytes(4, "little")
                self.out += encode_frame(T_INFER | RESPONSE, seq, word * self.out_f)
            else:
                self.loaded = self.loaded or typ == T_COMMIT
                self.out += encode_frame(typ | RESPONSE, seq)

    def read(self, n: int) -> bytes:
        d = bytes(self.out[:n])
        del self.out[:n]
        return d

    def close(self) -> None:
        pass


def _board(pm):
    b = host.Board.__new__(host.Board)
    b.port, b.sim, b.timeout, b.baud, b.retries = "fake", None, 0.05, 115200, 3
    b._ser = FakeBoard(pm.layers[-1].q.out_features)
    b._parser, b._inbox, b._seq = FrameParser(), deque(), 0
    b._info = {"max_payload": 256, "params": pm.params}
    b._model, b._bound, b.auto_reload = pm, 1000, True
    b.stats = {"sent": 0, "retries": 0, "timeouts": 0, "bad_frames": 0, "false_syncs": 0,
               "errors": {}, "reloads": 0, "stale": 0}
    return b


@pytest.mark.parametrize("n_load", [100, 252, 253, 254])
def test_a_reload_never_gives_two_inputs_one_sequence_number(n_load, monkeypatch):
    """253 LOAD frames + COMMIT and friends wrap the counter onto the input still in flight
    (the bug: its result was filed under the new input, then ``min()`` of nothing)."""
    rng = np.random.default_rng(0)
    pm = pack_model(random_model(rng, [16, 12, 6], 0.4), BOARD_PARAMS["icebreaker"])
    monkeypatch.setattr(host, "encode_commands",
                        lambda params, cmds: list(range(n_load * host.LOAD_CHUNK)))
    b = _board(pm)
    x = np.arange(1, 9)[:, None].repeat(16, 1).astype(np.uint8)    # input i begins with i+1
    out = b.infer(x)
    assert b.stats["reloads"] == 1
    np.testing.assert_array_equal(out, np.repeat(x[:, :1].astype(np.int32), 6, axis=1))


def test_board_arguments_are_checked(tmp_path):
    rng = np.random.default_rng(1)
    pm = pack_model(random_model(rng, [16, 12, 6], 0.4), BOARD_PARAMS["icebreaker"])
    b = _board(pm)
    assert b.infer(np.zeros((0, 16), np.uint8)).shape == (0, 6)
    with pytest.raises(host.BoardError, match="window"):
        b.infer(np.zeros((1, 16), np.uint8), window=0)
    for kw, msg in [({"baud": 0}, "baud"), ({"baud": -5}, "baud"), ({"timeout": 0}, "timeout"),
                    ({"retries": 0}, "retries")]:
        with pytest.raises(host.BoardError, match=msg):
            host.Board("/nonexistent", **kw)


@pytest.mark.parametrize("args", [["--baud", "0"], ["--baud", "-5"], ["--timeout", "0"],
                                  ["--timeout", "nan"], ["--limit", "-1"], ["--baud", "x"]])
def test_board_cli_rejects_bad_numbers(args, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["board", "infer", str(tmp_path / "m.zsk"), "--port", "sim:icebreaker",
              "--dataset", "digits", *args])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and ("above 0" in err or "not a number" in err)
