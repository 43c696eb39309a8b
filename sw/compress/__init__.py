"""Network compression methods from the survey literature, as a library.

Each sub-module is one family; everything works on models built from ``Linear``, ``Conv2d``,
``BatchNorm2d``, ``ReLU``, ``MaxPool2d`` and ``Flatten`` (:mod:`.graph`) and uses the one
training loop of :mod:`zeroskip.sw.train`. Pruning masks live on the modules
(:mod:`zeroskip.sw.prune`), so any training loop keeps pruned weights at zero.

In place or copy, one rule for every method: a method that keeps the model's architecture
(masks, weight sharing, ternary weights, training) changes the model you pass, in place; a
method that changes the architecture (structured removal, low rank, progressive search)
returns a new model and leaves yours unchanged; ``quantized_copy`` returns a copy, as its
name says. See ``docs/compression.md``.

* :mod:`.schedule`: train -> prune -> fine-tune, one-shot / iterative / gradual (Han 2015)
* :mod:`.granularity`: element, vector, kernel, block, filter, channel (Mao 2017)
* :mod:`.importance`: unit criteria (L1, BN scale, mean activation, APoZ, or your callable)
* :mod:`.selection`: per-layer de-biasing and per-layer / global selection of units
* :mod:`.structured`: physical removal of the units selected
* :mod:`.global_prune`: progressive global neuron pruning with per-layer de-biased scores
* :mod:`.distill`: knowledge distillation loss (Hinton 2015)
* :mod:`.sharing`: k-means weight sharing + centroid fine-tuning (Deep Compression)
* :mod:`.ternary`: ternary weight networks (TWN) and trained ternary quantization (TTQ)
* :mod:`.huffman`: canonical Huffman codes
* :mod:`.report`: per-layer Deep Compression style storage report
* :mod:`.lowrank`: truncated SVD of Linear layers
"""

from .distill import distillation_loss, soft_target_loss
from .global_prune import progressive_prune, uniform_to_params
from .granularity import GRANULARITIES, granular_prune, group_ids, index_cost
from .graph import GraphError, UnsupportedLayerError, check_model, count_params, units, weight_count
from .huffman import HuffmanCode, HuffmanError
from .importance import APoZ, BatchNormScale, L1Norm, MeanActivation, resolve_criterion
from .lowrank import low_rank, svd_linear
from .report import CompressionReport, compression_report, quantized_copy
from .schedule import SCHEDULES, iterative_prune, sparsity_schedule
from .selection import global_keep, normalize_scores, select_keep
from .sharing import Codebook, finetune_centroids, share_weights, snap_int8
from .structured import CRITERIA, bn_l1_penalty, prune_structured, remove_units, unit_scores
from .ternary import ternarize, train_ternary, train_ttq

__all__ = [
    "distillation_loss", "soft_target_loss",
    "global_keep", "normalize_scores", "progressive_prune", "uniform_to_params",
    "GRANULARITIES", "granular_prune", "group_ids", "index_cost",
    "GraphError", "UnsupportedLayerError", "check_model", "count_params", "units",
    "weight_count",
    "APoZ", "BatchNormScale", "L1Norm", "MeanActivation", "resolve_criterion", "select_keep",
    "HuffmanCode", "HuffmanError",
    "low_rank", "svd_linear",
    "CompressionReport", "compression_report", "quantized_copy",
    "SCHEDULES", "iterative_prune", "sparsity_schedule",
    "Codebook", "finetune_centroids", "share_weights", "snap_int8",
    "CRITERIA", "bn_l1_penalty", "prune_structured", "remove_units", "unit_scores",
    "ternarize", "train_ternary", "train_ttq",
]
