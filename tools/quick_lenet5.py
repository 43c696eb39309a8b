"""Save the demo's quick pruned LeNet-5 (NOT a well-trained baseline) as a state_dict.

    python tools/quick_lenet5.py build/models/lenet5-quick.pt [lenet5|lenet5_classic] [seed]

The recipe is :func:`zeroskip.demo.quick_pruned_lenet5` (2 epochs on 20,000 Fashion-MNIST
training images, pruned to the demo's plan in 3 steps of one fine-tuning epoch). The file is a
stand-in for the benches (``python -m zeroskip.sim.bench --only network --model FILE``) until
a well-trained pruned model is given.
"""

import sys
import time
from pathlib import Path

import torch

from zeroskip.demo import quick_pruned_lenet5
from zeroskip.sw.prune import sparsity


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    out = Path(argv[0])
    arch = argv[1] if len(argv) > 1 else "lenet5"
    seed = int(argv[2]) if len(argv) > 2 else 0
    torch.set_num_threads(2)
    t0 = time.time()
    model, acc, acc_p = quick_pruned_lenet5(arch, seed, progress=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out)
    print(f"wrote {out}: {arch}, float accuracy {acc:.2%} dense, {acc_p:.2%} pruned "
          f"({1 - sparsity(model):.1%} of the weights kept), {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
