"""zeroskip's software half: from a float PyTorch model to packed integer streams.

The stable entry points are re-exported by the ``zeroskip`` package (``docs/guide.md``); the
modules here are the toolkit underneath:

    data      data sets that ship with the machine (digits, Fashion-MNIST)
    models    reference models (MLPs, LeNet-5, a digits CNN)
    train     the training loop (one for every method) and evaluation
    prune     magnitude pruning; masks live on the modules (parametrizations)
    compress  the compression toolkit (schedules, distillation, sharing, Huffman, ...)
    quant     integer quantization: int8 weights, uint8 activations, integer requantization
    params    HwParams (re-exported from zeroskip.spec: the sw/hw contract)
    geometry  layer geometry (FC / convolution columns over an input map)
    pack      the packer and the ``.zsk`` model file
    ref       the bit-exact integer reference
    image     the load image: the memory writes that put a packed model into the accelerator
    cycles    a cycle model of the PE array (equal to the RTL's counter)
    golden    the golden model files of the tests
    errors    ZeroskipError and its subclasses (every error reported to a user)

The applications on top (the ``zeroskip compress`` command, ``zeroskip.commands.compress``;
the experiments runner that regenerates ``docs/results.md``, ``zeroskip.experiments.results``)
live outside this package.

Submodules are imported on demand: ``import zeroskip.sw`` alone imports none of them.
"""

__all__ = ["compress", "cycles", "data", "errors", "geometry", "golden", "image", "models",
           "pack", "params", "prune", "quant", "ref", "train"]
