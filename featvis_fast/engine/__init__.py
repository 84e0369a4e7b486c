"""The model-execution engine every method family runs its model through.

Families (backprop, perturbation, reconstruction, dissection, similarity) import what they need
from here (this package's modules are its internal API) and never from each other. Layers,
bottom up:

- capture: find a layer by name, hook its output, stop the forward once captured.
- targets: what an attribution or a score explains (class, per-sample classes, callable, Unit)
  and how the backward pass is seeded.
- layout: the one place that chooses channels-last or contiguous for a model's input.
- cpu_cache: the caching CPU allocator installed for the length of a call.
- rule_mode: the torch-function mode that runs every rectifier through the fused rule kernels
  (rectifiers parses the calls), with lean (input-gradient-only) convolutions, linear layers,
  batch norms and max pooling (lean), LRP-epsilon on linear layers (lrp_epsilon), and zero pads
  folded into convolutions (fast_pad).
- rewrites: the forward-pass rewrites learnt per model (rewrite_calls reads the calls);
  inference: forward-only passes under them; output_gradient: a batch's input gradient of
  per-row scores under all of the above (for families that optimize inputs).
- probe: no-grad passes over a batch that return the output or stop at a layer (feature-map
  injection); batches: batch sizes from memory and the batch loop (progress, OOM halving);
  class_scores: a target resolved once, per-copy scores read from outputs. The perturbation
  family and the metrics score batches of perturbed copies with these three.
- incremental: Krypton's incremental inference for occlusion (a replay of the model's forward on
  per-window patches of the clean pass; incremental_calls: the calls it patches; patched: the
  value of one activation; changed_regions: where a window's change reaches).

Imports flow one way: entry points -> evaluation (metrics) -> families -> engine -> ops -> backends.
"""
from .capture import LayerCapture, StopForward, extract, find_module
from .cpu_cache import cached_cpu_memory, cpu_cache_stats, empty_cpu_cache
from .inference import rewritten_forward
from .layout import VIEW_ERROR, best_layout, is_layout_error, prefers_channels_last, run_in_best_layout
from .lean import fold_batch_norms
from .output_gradient import output_gradient
from .rewrites import set_forward_rewrites
from .rule_mode import NonPiecewiseLinearWarning, RectifierRuleMode
from .targets import GRAD_SEEDS, Target, Unit, as_unit, backward_seed, check_grad_seed, select_output, select_unit

__all__ = [
    "GRAD_SEEDS", "LayerCapture", "NonPiecewiseLinearWarning", "RectifierRuleMode", "StopForward", "Target", "Unit",
    "VIEW_ERROR", "as_unit", "backward_seed", "best_layout", "cached_cpu_memory", "check_grad_seed",
    "cpu_cache_stats", "empty_cpu_cache", "extract", "find_module", "fold_batch_norms", "is_layout_error",
    "output_gradient", "prefers_channels_last", "rewritten_forward", "run_in_best_layout", "select_output",
    "select_unit", "set_forward_rewrites",
]
