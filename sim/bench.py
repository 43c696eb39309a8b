"""``nox -s bench`` / ``python -m zeroskip.sim.bench``: cycle benchmarks on the Verilated RTL.

For a 784->300 and a 300->100 layer (random int8 weights, requantized ReLU output), weight
densities {1.0, 0.5, 0.25, 0.1, 0.05} x activation densities {1.0, 0.5}, on the 8-PE array:

* ``cycles``: the sparse packing with activation skipping, mean over the input vectors;
* ``dense_cycles``: the same hardware fed the same layer packed dense (every weight an entry)
  with activation skipping off, on the same inputs, in the same run;
* ``useful_macs`` (from the RTL's counter), ``utilization = useful_macs / (pes * cycles)``,
  ``speedup = dense_cycles / cycles``, ``ideal_speedup = dense MACs / useful MACs``;
* ``predicted_cycles`` from the software cycle model (:mod:`zeroskip.sw.cycles`), with its
  breakdown: ``max_pe_entries``/``mean_pe_entries`` (entries of the busiest / the mean PE) and
  ``finalize_cycles``;
* ``bit_exact``: every output of every run equals the integer reference.

Writes ``build/bench/fc.json`` (and prints a table).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from ..spec import HwParams
from ..sw.cycles import predict
from ..sw.pack import pack_model
from ..sw.ref import run_model
from .cases import random_inputs, random_model
from .verilated import Case, run_cases

LAYERS = [(784, 300), (300, 100)]
WEIGHT_DENSITIES = [1.0, 0.5, 0.25, 0.1, 0.05]
ACT_DENSITIES = [1.0, 0.5]


def run_bench(params: HwParams, inputs: int = 4, seed: int = 1,
              layers=LAYERS, weight_densities=WEIGHT_DENSITIES,
              act_densities=ACT_DENSITIES) -> list[dict]:
    rng = np.random.default_rng(seed)
    cases, meta = [], []
    for cols, rows in layers:
        for wd in weight_densities:
            qm = random_model(rng, [cols, rows], wd, last_requant=True)
            sparse = pack_model(qm, params)
            dense = pack_model(qm, params, dense=True)
            for ad in act_densities:
                x = random_inputs(rng, inputs, cols, ad)
                exp = run_model(sparse, x).numpy()
                cases.append(Case(sparse, x, exp, name=f"{rows}x{cols} w{wd} a{ad} sparse"))
                cases.append(Case(dense, x, exp, skip_zero_acts=False,
                                  name=f"{rows}x{cols} w{wd} a{ad} dense"))
                meta.append((rows, cols, wd, ad, sparse, x, exp))
    t0 = time.time()
    print(f"running {len(cases)} cases ({inputs} inputs each) on the Verilated {params.pes}-PE "
          "array...", file=sys.stderr, flush=True)
    results = run_cases(params, cases, seed=seed, name="accel-bench")
    print(f"  done in {time.time() - t0:.0f} s", file=sys.stderr)
    records = []
    for i, (rows, cols, wd, ad, pm, x, exp) in enumerate(meta):
        rs, rd = results[2 * i], results[2 * i + 1]
        cyc = float(np.mean([c["cycles"] for c in rs.counters]))
        dcyc = float(np.mean([c["cycles"] for c in rd.counters]))
        useful = float(np.mean([c["useful_macs"] for c in rs.counters]))
        lcs = [predict(pm, v)[0] for v in x]      # one layer per bench model
        pred = float(np.mean([lc.cycles for lc in lcs]))
        records.append({
            "pes": params.pes, "rows": rows, "cols": cols,
            "weight_density": wd, "act_density": ad,
            "measured_weight_density": float(np.count_nonzero(pm.layers[0].q.weight)
                                             / (rows * cols)),
            "measured_act_density": float(np.count_nonzero(x) / x.size),
            "cycles": cyc, "dense_cycles": dcyc, "useful_macs": useful,
            "utilization": useful / (params.pes * cyc),
            "speedup": dcyc / cyc,
            "ideal_speedup": rows * cols / useful if useful else float("inf"),
            "predicted_cycles": pred,
            # where the cycles go (cycle model): the busiest PE's entries, the mean PE's, and
            # the finalization tail (rows per PE + pipeline)
            "max_pe_entries": float(np.mean([max(lc.pe_work) for lc in lcs])),
            "mean_pe_entries": float(np.mean([np.mean(lc.pe_work) for lc in lcs])),
            "finalize_cycles": float(np.mean([lc.finalize for lc in lcs])),
            "bit_exact": bool(np.array_equal(rs.outputs, exp) and np.array_equal(rd.outputs, exp)),
            "inputs": len(x),
        })
    return records


def table(records: list[dict]) -> str:
    head = ("| layer | w dens | a dens | cycles | dense cycles | useful MACs | util | speedup "
            "| ideal | speedup/ideal | predicted | bit-exact |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:-:|"]
    for r in records:
        lines.append(
            f"| {r['rows']}x{r['cols']} | {r['weight_density']} | {r['act_density']} | "
            f"{r['cycles']:.0f} | {r['dense_cycles']:.0f} | {r['useful_macs']:.0f} | "
            f"{r['utilization']:.3f} | {r['speedup']:.2f} | {r['ideal_speedup']:.2f} | "
            f"{r['speedup'] / r['ideal_speedup']:.3f} | {r['predicted_cycles']:.0f} | "
            f"{'yes' if r['bit_exact'] else 'NO'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m zeroskip.sim.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="build/bench/fc.json", help="output JSON")
    ap.add_argument("--pes", type=int, default=8)
    ap.add_argument("--inputs", type=int, default=4, help="input vectors per case")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="one weight density (0.1) only")
    args = ap.parse_args(argv)
    if args.inputs < 1:
        ap.error("--inputs must be at least 1")
    params = HwParams(pes=args.pes)
    wds = [0.1] if args.quick else WEIGHT_DENSITIES
    records = run_bench(params, args.inputs, args.seed, weight_densities=wds)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(records, indent=2))
    os.replace(tmp, out)
    print(table(records))
    print(f"wrote {out}")
    bad = [r for r in records if not r["bit_exact"]]
    if bad:
        print(f"error: {len(bad)} cases were not bit-exact", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
