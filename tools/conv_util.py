"""Utilization of LeNet-5's conv2 (20x12x12 -> 50, 5x5, max pool 2) on 8 PEs, from the cycle
model (which equals the RTL's counter, ``tests/test_cycles.py``), at weight densities
{1.0, 0.5, 0.25, 0.1} and random activations of densities {1.0, 0.5, 0.3} (seed 1), with the
busiest PE's entries and the per-pixel overhead. Run: ``python tools/conv_util.py``."""

from __future__ import annotations

import numpy as np

from zeroskip.sim.conv_cases import conv_inputs, conv_layer
from zeroskip.sw.cycles import predict
from zeroskip.sw.geometry import Geometry
from zeroskip.sw.pack import pack_model
from zeroskip.sw.params import HwParams
from zeroskip.sw.quant import QModel


def main() -> None:
    params = HwParams(entry_depth=1 << 16, ptr_depth=2048, row_depth=256, act_depth=4096,
                      max_layers=4)
    rng = np.random.default_rng(1)
    g2 = Geometry("conv", (20, 12, 12), (5, 5), pool=(2, 2))
    g3 = Geometry.fc(800, in_shape=(50, 4, 4))
    print("| w dens | a dens | cycles | useful MACs | util | cycles/pixel | busiest PE "
          "entries/pixel | overhead/pixel |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for wd in [1.0, 0.5, 0.25, 0.1]:
        for ad in [1.0, 0.5, 0.3]:
            qm = QModel([conv_layer(rng, 50, g2, wd),
                         conv_layer(rng, 10, g3, 0.5, requant=False)], 1.0)
            pm = pack_model(qm, params)
            x = conv_inputs(rng, 1, (20, 12, 12), ad)[0]
            lc = predict(pm, x)[0]
            pix = 64
            util = lc.useful_macs / params.pes / lc.cycles
            busy = max(lc.pe_work) / pix
            print(f"| {wd} | {ad} | {lc.cycles} | {lc.useful_macs} | {util:.3f} | "
                  f"{lc.cycles / pix:.1f} | {busy:.1f} | {lc.cycles / pix - busy:.1f} |")


if __name__ == "__main__":
    main()
