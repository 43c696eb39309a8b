"""Train one Fashion-MNIST baseline by the recipe of ``zeroskip.sw.baseline`` (no cache).

    python tools/baseline_recipe.py lenet5 [SEED] [THREADS] [OUT.pt]
    python tools/baseline_recipe.py lenet300 [SEED] [THREADS] [OUT.pt]

The recipe (epochs, augmentation, optimizer) is ``zeroskip.sw.baseline.RECIPES``; the results
runner (``nox -s results``) trains the same models through its cache. With ``OUT.pt`` the
state_dict (inputs in [0, 1], normalization folded in) is saved there.
"""

import sys

import torch

from zeroskip.sw import models
from zeroskip.sw.baseline import RECIPES, train_baseline
from zeroskip.sw.data import load_fashion_mnist


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in RECIPES:
        print(f"usage: baseline_recipe.py {{{','.join(RECIPES)}}} [SEED] [THREADS] [OUT.pt]",
              file=sys.stderr)
        return 2
    arch = argv[0]
    seed = int(argv[1]) if len(argv) > 1 else 0
    torch.set_num_threads(int(argv[2]) if len(argv) > 2 else 1)
    model = models.lenet5() if arch == "lenet5" else models.lenet_300_100()
    model, info = train_baseline(model, load_fashion_mnist(), RECIPES[arch], seed=seed,
                                 log=lambda s: print(s, flush=True))
    print(f"{arch} seed {seed}: validation {100 * info['acc_val']:.2f}%, "
          f"test {100 * info['acc_test']:.2f}% ({info['seconds']:.0f} s)")
    if len(argv) > 3:
        torch.save(model.state_dict(), argv[3])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
