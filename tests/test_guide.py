"""``docs/guide.md``: its ```python blocks run, in order, in one namespace.

The blocks that call the simulator (``zeroskip.simulate``, the simulated board
``zeroskip.Board``) run only in the ``sim`` test; the other test runs every other block, so the
guide's software half is checked even without Verilator.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "guide.md"


def guide_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", GUIDE.read_text(), flags=re.S | re.M)


def needs_rtl(block: str) -> bool:
    return "zeroskip.simulate" in block or "zeroskip.Board(" in block


def _run(blocks: list[str]) -> dict:
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)    # a tiny model: more threads only contend on a shared machine
    namespace: dict = {"__name__": "guide"}
    try:
        for i, code in enumerate(blocks):
            exec(compile(code, f"{GUIDE.name} block {i + 1}", "exec"), namespace)  # noqa: S102
    finally:
        torch.set_num_threads(threads)
    return namespace


def test_guide_has_blocks():
    blocks = guide_blocks()
    assert len(blocks) >= 6
    assert sum("zeroskip.simulate" in b for b in blocks) == 1
    assert sum('zeroskip.Board("sim:' in b for b in blocks) == 1


def test_guide_without_rtl():
    ns = _run([b for b in guide_blocks() if not needs_rtl(b)])
    assert ns["acc_ref"] > 0.9
    assert ns["zeroskip"].load(ns["path"]).params == ns["pm"].params


@pytest.mark.sim
def test_guide_with_rtl():
    ns = _run(guide_blocks())
    assert ns["res"].checked and len(ns["res"].outputs) == 40
    # the simulated board's outputs, element for element, are the reference's
    assert ns["y_board"].shape == (100, 10)
    assert (ns["y_board"] == ns["ref"][:100]).all()
    assert ns["info"]["board"] == "icebreaker"
    assert ns["pm"].params.packs_like(ns["info"]["params"])
