"""Shared pytest options and fixtures.

``--seed N`` fixes the random seed of every RTL simulation (same as ``ZEROSKIP_SEED=N``); without
it each simulation draws a fresh seed and prints it, and a failure message repeats it. Both are
parsed by the one rule of :func:`zeroskip.sim.runner.resolve_seed`.

The simulators the tests compile go to ``<checkout>/build/sim`` (so CI caches stay in the
checkout), unless ``ZEROSKIP_SIM_BUILD`` says otherwise; ``zeroskip run`` outside the tests uses
the user cache directory.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from zeroskip.sim.runner import parse_seed, resolve_seed

os.environ.setdefault("ZEROSKIP_SIM_BUILD",
                      str(Path(__file__).resolve().parent.parent / "build" / "sim"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--seed",
        action="store",
        type=parse_seed,
        default=None,
        help="random seed for RTL simulations (default: $ZEROSKIP_SEED or random)",
    )


@pytest.fixture
def sim_seed(request: pytest.FixtureRequest) -> int:
    """The seed of this test's simulation (``--seed``, else ``$ZEROSKIP_SEED``, else random);
    printed, so that a failing run can be repeated."""
    seed = resolve_seed(request.config.getoption("--seed"))
    print(f"simulation seed {seed} (reproduce with --seed {seed})")
    return seed


def pytest_collection_modifyitems(config: pytest.Config, items) -> None:
    """Tests marked ``slow`` (long RTL variants of default tests) run only when the marker
    expression names them (``pytest -m slow``, ``-m "sim and slow"``)."""
    if "slow" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
