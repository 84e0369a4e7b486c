"""Randomisation metrics: does the explanation change when the model or the explained class does?

- mprt: the Model Parameter Randomisation Test (Adebayo et al. 2018, "Sanity Checks for Saliency
  Maps", NeurIPS): the similarity between the explanation of the trained model and the explanation
  of the model with its layers re-initialised, cascading from the output (or the input) or one
  layer at a time. A method that passes the check gives low similarities.
- random_logit (Sixt et al. 2020, "When Explanations Lie: Why Many Modified BP Attributions Fail",
  ICML): the similarity between the explanation of the target class and that of a random other
  class. Lower is better.

Quantus 0.6's definitions (MPRT, RandomLogit): each map is divided by its largest |value|, MPRT
then takes |a|; the similarity is Spearman's rank correlation or SSIM. The B images are explained
together (in batches sized to memory) once per randomised layer; similarities are batched tensor
ops on x's device. Where Quantus differs:
- normalisation: its normalise_by_max divides by the largest |a| of the whole batch it is given, so
  an image's SSIM depends on the other images of the batch. Ours divides each map by its own
  largest |a| (Quantus with normalise_func_kwargs={"normalise_axes": (1, 2, 3)}, or on one image).
- SSIM: Quantus flattens each map before calling skimage's structural_similarity, so its 7-wide
  window slides along the rows of the flattened map, across row ends. similarity="ssim" is
  skimage's SSIM on the (H, W) map (7 x 7 window, per channel, averaged), the SSIM of the papers;
  similarity="ssim_flattened" is Quantus' number. (Quantus' MPRT cannot take its own ssim as
  similarity_func: it calls .tolist() on the list that ssim returns.)
- MPRT's average: Quantus' return_average_correlation also averages in the similarity to the
  unrandomised model (it skips a key "orig" that is spelled "original"); our `scores` average the
  randomised layers only (the unrandomised one is `original`).
- layer draws: Quantus re-seeds torch's global generator with seed + 1 before every layer, so all
  layers of one shape get the same weights, drawn on the model's device. Ours draw one seed per
  layer from a CPU generator (`layer_seeds` replays Quantus') and re-initialise a CPU copy of the
  layer, so a seed gives the same weights on any device; torch's global RNG state is left as it was.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from numbers import Integral
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from .._validate import check_choice, check_model_and_batch
from ..engine import Target, batches
from ..engine.class_scores import score_dtype
from ._explain import Explain, explain_item_bytes, explainer
from ._inputs import attribution_maps, generator_for, positive_int, prepared, require_target
from .similarities import similarity_function

ORDERS = ("top_down", "bottom_up", "independent")


class MPRTResult(NamedTuple):
    """The Model Parameter Randomisation Test of a batch.

    Attributes:
        scores: (B,) the mean similarity over the randomised layers (lower: the explanation depends
            more on the parameters); NaN when a layer's similarity is NaN (a constant map, e.g. a zero
            gradient).
        similarities: (B, L) the similarity after randomising each of the L layers, in the order
            they were randomised (`similarities[:, -1]`: the fully randomised model when cascading,
            Quantus' return_last_correlation).
        layers: the L module names, in the same order.
        original: (B,) the similarity between the attributions and the explanation of the
            unrandomised model (1 when the attributions come from the same method).
    """
    scores: torch.Tensor
    similarities: torch.Tensor
    layers: tuple[str, ...]
    original: torch.Tensor


# ---------------------------------------------------------------- explanations and layers


def _target_slice(target: Target, batch: int, start: int, stop: int) -> Target:
    """The target of images start..stop: per-image classes sliced, anything else passed as is."""
    if isinstance(target, torch.Tensor) and target.dim() > 0 and target.shape[0] == batch and batch > 1:
        return target[start:stop]
    return target


def _explain_batches(explain: Explain, model: torch.nn.Module, x: torch.Tensor, target: Target, size: int,
                     attributions: torch.Tensor | None) -> torch.Tensor:
    """(B, Ca, H, W) explanations of x, `size` images per call; checked against the attributions' channels."""
    batch = x.shape[0]
    parts = []

    def work(start: int, stop: int) -> None:
        parts.append(explain(model, x[start:stop], _target_slice(target, batch, start, stop)))

    batches.run_batches(batch, size, work, progress=False, desc="explain", device=x.device)
    maps = torch.cat(parts) if len(parts) > 1 else parts[0]
    if attributions is not None and maps.shape[1] != attributions.shape[1]:
        raise ValueError(f"the explanations have {maps.shape[1]} channels, the attributions {attributions.shape[1]}: "
                         "pass attributions made by the same explain method (or attributions=None)")
    return maps


def randomisable_layers(model: torch.nn.Module, layers: Sequence[str] | None = None) -> list[str]:
    """Names of the modules MPRT re-initialises, in the model's module order.

    Args:
        model: the model.
        layers: module names to keep (None: every module with a reset_parameters method, Quantus'
            choice: convolutions, linear layers and batch norms, whose reset sets weight 1, bias 0
            and the running statistics to 0 / 1).

    Returns:
        the names, in named_modules() order.
    """
    names = [name for name, module in model.named_modules() if hasattr(module, "reset_parameters")]
    if layers is None:
        if not names:
            raise ValueError("the model has no module with reset_parameters to randomise")
        return names
    if isinstance(layers, str) or not all(isinstance(name, str) for name in layers):
        raise TypeError(f"layers must be a list of module names, got {layers!r}")
    modules = dict(model.named_modules())
    for name in layers:
        if name not in modules:
            raise ValueError(f"the model has no module {name!r} (layers names modules of model.named_modules())")
        if not hasattr(modules[name], "reset_parameters"):
            raise ValueError(f"module {name!r} ({type(modules[name]).__name__}) has no reset_parameters to "
                             "randomise it with")
    if not layers:
        raise ValueError("layers is empty")
    wanted = set(layers)
    return [name for name in names if name in wanted]


def draw_layer_seeds(count: int, generator: torch.Generator) -> list[int]:
    """One seed per randomised layer (distinct layers get distinct weights).

    Args:
        count: the number of layers.
        generator: a CPU generator.

    Returns:
        `count` ints in [0, 2**62).
    """
    return torch.randint(0, 2**62, (count,), generator=generator).tolist()


def randomise_layer(module: torch.nn.Module, seed: int) -> None:
    """Re-initialise `module` in place by its reset_parameters, drawing on the CPU from `seed`.

    The reset runs on a CPU copy of the module under torch's default CPU generator seeded with
    `seed` (torch.manual_seed(seed) before reset_parameters, as Quantus does, gives the same
    weights for a CPU model); the global RNG state is restored afterwards.

    Args:
        module: a module with reset_parameters (on any device).
        seed: the seed of its new parameters.
    """
    fresh = copy.deepcopy(module).cpu()
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        fresh.reset_parameters()
    module.load_state_dict(fresh.state_dict())


# ---------------------------------------------------------------- metrics


def mprt(model: torch.nn.Module, x: torch.Tensor, attributions: object, target: Target, *,
         explain: str | Explain = "saliency", explain_kwargs: dict | None = None, order: str = "top_down",
         similarity: str = "spearman", layers: Sequence[str] | None = None, skip_layers: bool = False,
         normalise: bool = True, abs: bool = True, layer_seeds: Sequence[int] | None = None, seed: int = 0,
         generator: torch.Generator | None = None, batch_size: int | None = None,
         progress: bool = False) -> MPRTResult:
    """Model Parameter Randomisation Test (Adebayo et al. 2018, "Sanity Checks for Saliency Maps").

    Re-initialises the model's layers one by one (on a copy: the caller's model is never changed)
    and compares the explanation of each randomised model with the attributions. Quantus' MPRT
    with its defaults (Spearman, top_down, normalise, abs); see the module's note for where it
    differs.

    Args:
        model: the CNN (eval mode).
        x: images (B, C, H, W), float32 or float64.
        attributions: the explanations of x by the trained model, (B, H, W), (B, 1, H, W) or
            (B, C, H, W) (channels as `explain` returns them); None: computed by `explain`.
        target: the explained class: an int, a LongTensor (B,) or a callable on the output (a
            callable is resolved on each randomised model's output).
        explain: the explanation method re-run on every randomised model: a name of this package's
            methods (featvis_fast.metrics.METHODS) or a callable (model, x, target) -> maps.
        explain_kwargs: keyword arguments of a named method (e.g. {"abs": True} for saliency,
            {"layer": ...} for the CAMs).
        order: "top_down": cascading from the output, each step re-initialising one more layer
            (the modules in reverse named_modules() order: output to input for torchvision's
            models; the paper's cascading randomisation, Quantus' default); "bottom_up": cascading
            from the input (named_modules() order); "independent": one layer at a time, the
            others trained (the paper's independent randomisation).
        similarity: "spearman" (rank correlation over all values, Quantus' default), "ssim"
            (SSIM of the (H, W) maps, 7 x 7 uniform window, per channel) or "ssim_flattened"
            (Quantus' ssim: a 7-wide window along the flattened map).
        layers: the module names to randomise (None: every module with reset_parameters, as
            Quantus); they are randomised in `order`'s order.
        skip_layers: compare only once, after the last layer is randomised (the fully randomised
            model when cascading): one explanation instead of L; similarities has one column
            then (Quantus' skip_layers).
        normalise: divide every map by its largest |value| (Quantus' normalise_by_max per image).
        abs: take |a| after normalising (Quantus' MPRT default).
        layer_seeds: the seed each layer's re-initialisation draws from, in randomisation order
            (None: drawn from `seed` / `generator`; [s + 1] * L replays Quantus' MPRT(seed=s) on a
            CPU model).
        seed: seed of the layer seeds (used when generator and layer_seeds are None).
        generator: a CPU torch.Generator for the layer seeds (overrides seed).
        batch_size: images explained together (None: as many as fit in memory).
        progress: a tqdm bar over the layers.

    Returns:
        an MPRTResult: scores (B,), similarities (B, L), layers (L names) and original (B,), on x's
        device, float64 for float64 inputs, else float32.
    """
    check_model_and_batch(model, x)
    if x.dim() != 4:
        raise ValueError(f"mprt needs images (B, C, H, W), got shape {tuple(x.shape)}")
    require_target(target, "mprt")
    check_choice("order", order, ORDERS)
    compare = similarity_function(similarity)
    explain_fn = explainer(explain, **(explain_kwargs or {}))
    names = randomisable_layers(model, layers)
    if order == "top_down":
        names = names[::-1]
    if layer_seeds is None:
        seeds = draw_layer_seeds(len(names), generator_for(seed, generator))
    else:
        seeds = list(layer_seeds)
        if len(seeds) != len(names) or not all(isinstance(s, Integral) and not isinstance(s, bool) for s in seeds):
            raise ValueError(f"layer_seeds must be {len(names)} ints (one per randomised layer), got {layer_seeds!r}")
    x = x.detach()
    dtype = score_dtype(x)
    a = None if attributions is None else attribution_maps(attributions, x)
    size = batches.pick_batch_size(batch_size, x.shape[0], x.device,
                                   explain_item_bytes(model, x) if batch_size is None else 1)

    explained = _explain_batches(explain_fn, model, x, target, size, a)
    reference = prepared(explained if a is None else a, normalise, abs)
    original = compare(reference, prepared(explained, normalise, abs))
    randomised = copy.deepcopy(model)
    modules = dict(randomised.named_modules())
    trained = dict(model.named_modules())
    compared = names[-1:] if skip_layers else names
    similarities = torch.empty(x.shape[0], len(compared), dtype=torch.float64, device=x.device)
    for step, (name, layer_seed) in enumerate(tqdm(list(zip(names, seeds)), desc="mprt", unit="layer",
                                                   disable=not progress, leave=False)):
        column = step - (len(names) - len(compared))
        if order == "independent" and column < 0:
            continue  # a layer randomised alone and never compared
        randomise_layer(modules[name], int(layer_seed))
        if column >= 0:
            maps = _explain_batches(explain_fn, randomised, x, target, size, reference)
            similarities[:, column] = compare(reference, prepared(maps, normalise, abs))
        if order == "independent":
            modules[name].load_state_dict(trained[name].state_dict())
    return MPRTResult(similarities.mean(dim=1).to(dtype), similarities.to(dtype), tuple(compared),
                      original.to(dtype))


def _class_targets(target: Target, batch: int, device: torch.device) -> torch.Tensor:
    """(B,) long classes of an int or integer-tensor target."""
    if isinstance(target, bool) or not isinstance(target, (int, torch.Tensor)):
        raise TypeError(f"random_logit needs class targets (an int or a LongTensor (B,)), got {type(target).__name__}")
    if isinstance(target, int):
        return torch.full((batch,), target, dtype=torch.long, device=device)
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"target classes must be integers, got {target.dtype}")
    classes = target.reshape(-1).to(device=device, dtype=torch.long)
    if classes.numel() == 1:
        return classes.expand(batch).contiguous()
    if classes.numel() != batch:
        raise ValueError(f"target holds {classes.numel()} classes for a batch of {batch} images")
    return classes


def draw_other_classes(classes: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """A class other than each image's, uniform over the num_classes - 1 others (Quantus' draw: an
    index into the other classes in ascending order).

    Args:
        classes: (B,) long target classes.
        num_classes: the number of classes.
        generator: a CPU generator.

    Returns:
        (B,) long classes on classes' device.
    """
    offsets = torch.randint(0, num_classes - 1, (classes.shape[0],), generator=generator).to(classes.device)
    return offsets + (offsets >= classes).long()


def random_logit(model: torch.nn.Module, x: torch.Tensor, attributions: object, target: Target, *,
                 num_classes: int | None = None, explain: str | Explain = "saliency",
                 explain_kwargs: dict | None = None, similarity: str = "ssim", normalise: bool = True,
                 abs: bool = False, other_class: torch.Tensor | None = None, seed: int = 0,
                 generator: torch.Generator | None = None, batch_size: int | None = None) -> torch.Tensor:
    """Random Logit (Sixt et al. 2020, "When Explanations Lie"): the similarity between the explanation
    of the target class and that of a random other class. Lower is better.

    Quantus' RandomLogit with its defaults (SSIM, normalise, no abs); see the module's note for
    where it differs (its SSIM is similarity="ssim_flattened").

    Args:
        model: the CNN (eval mode).
        x: images (B, C, H, W), float32 or float64.
        attributions: the explanations of the target classes, (B, H, W), (B, 1, H, W) or
            (B, C, H, W) (channels as `explain` returns them); None: computed by `explain`.
        target: the explained classes: an int or a LongTensor (B,).
        num_classes: the classes the other one is drawn from (None: the model's output size).
        explain: the explanation method: a name of this package's methods
            (featvis_fast.metrics.METHODS) or a callable (model, x, target) -> maps.
        explain_kwargs: keyword arguments of a named method.
        similarity: "ssim" (SSIM of the (H, W) maps, 7 x 7 uniform window, per channel),
            "ssim_flattened" (Quantus' ssim: a 7-wide window along the flattened map) or "spearman".
        normalise: divide every map by its largest |value| (Quantus' normalise_by_max per image).
        abs: take |a| after normalising.
        other_class: (B,) the class each image is compared with (None: drawn uniformly among the
            num_classes - 1 classes other than its target, from `seed` / `generator`).
        seed: seed of the drawn classes (used when generator is None).
        generator: a CPU torch.Generator for the drawn classes (overrides seed).
        batch_size: images explained together (None: as many as fit in memory).

    Returns:
        (B,) similarities on x's device, float64 for float64 inputs, else float32.
    """
    check_model_and_batch(model, x)
    if x.dim() != 4:
        raise ValueError(f"random_logit needs images (B, C, H, W), got shape {tuple(x.shape)}")
    require_target(target, "random_logit")
    compare = similarity_function(similarity)
    explain_fn = explainer(explain, **(explain_kwargs or {}))
    x = x.detach()
    batch, device = x.shape[0], x.device
    classes = _class_targets(target, batch, device)
    if num_classes is None:
        with torch.no_grad():
            num_classes = model(x[:1]).numel()
    num_classes = positive_int(num_classes, "num_classes")
    if num_classes < 2:
        raise ValueError("random_logit needs num_classes >= 2 (another class to compare with)")
    if bool(((classes < 0) | (classes >= num_classes)).any()):
        raise ValueError(f"target classes {classes.tolist()} are not all in [0, {num_classes})")
    if other_class is None:
        other = draw_other_classes(classes, num_classes, generator_for(seed, generator))
    else:
        other = _class_targets(other_class, batch, device)
        if bool(((other < 0) | (other >= num_classes) | (other == classes)).any()):
            raise ValueError(f"other_class {other.tolist()} must be classes in [0, {num_classes}) other than the "
                             f"targets {classes.tolist()}")
    a = None if attributions is None else attribution_maps(attributions, x)
    size = batches.pick_batch_size(batch_size, batch, device, explain_item_bytes(model, x) if batch_size is None else 1)
    if a is None:
        a = _explain_batches(explain_fn, model, x, classes, size, None)
    others = _explain_batches(explain_fn, model, x, other, size, a)
    scores = compare(prepared(a, normalise, abs), prepared(others, normalise, abs))
    return scores.to(score_dtype(x))
