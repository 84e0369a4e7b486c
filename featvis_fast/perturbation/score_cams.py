"""CAMs whose channel weights come from perturbed forward passes, with pytorch-grad-cam's definitions.

scorecam      Score-CAM (Wang et al., CVPR-W 2020): each channel's map, bilinearly upsampled
              (align_corners=True) and min-max normalized, masks the input; w = softmax over
              channels of the target's scores of the masked copies
ablationcam   Ablation-CAM (Ramaswamy & Desai, WACV 2020): w_k = (S - S_k) / S, S_k the score
              with channel k of the layer zeroed

The map is sum_k w_k A_k (clamped at 0 with relu=True). The masked copies are written by the
fused `featvis::apply_masks` straight into the batch buffer; the ablated layer outputs are
injected into the model's forward in place of the layer's own (the forward before the layer
runs once per batch on one image, or on the batch's images for models whose later layers read
the input's batch size). Batches are sized to memory as occlusion's, B * K copies in
all for K channels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import _backend
from .._maps import upsample_maps
from .._validate import check_model_and_batch
from ..engine import Target, batches, cached_cpu_memory, class_scores, find_module, rewritten_forward
from ..engine.probe import Probe
from ..ops import perturbation as ops


def _clean_pass(model, x, layer: str):
    """(model output, the layer's (B, K, h, w) output) of one pass over x."""
    module = find_module(model, layer)
    seen = []

    def hook(mod, inputs, output):
        if not seen:  # a copy: rectifiers after the layer may run in place on its output
            seen.append(output.clone() if isinstance(output, torch.Tensor) else output)

    def run():
        handle = module.register_forward_hook(hook)
        try:
            return model(x)
        finally:
            handle.remove()

    out = rewritten_forward(model, run)
    if not seen:
        raise ValueError(f"layer {layer!r} did not run in the forward pass")
    acts = seen[0]
    if not isinstance(acts, torch.Tensor) or acts.dim() != 4:
        shape = tuple(acts.shape) if isinstance(acts, torch.Tensor) else type(acts).__name__
        raise ValueError(f"a score CAM needs a (B, C, h, w) layer output; {layer!r} gives {shape}")
    return out, acts


def _setup(model, x, target, layer, backend, method):
    check_model_and_batch(model, x)
    if layer is None:
        raise ValueError(f"{method} needs a layer name (see featvis_fast.layer_names(model))")
    if x.dim() != 4:
        raise ValueError(f"{method} needs images (B, C, H, W), got shape {tuple(x.shape)}")
    find_module(model, layer)
    return _backend.resolve_backend(backend, x.device)


def _finish(weights, acts, relu, upsample, size):
    cam = (weights[:, :, None, None] * acts.to(weights.dtype)).sum(dim=1).contiguous()
    if relu:
        cam = cam.clamp_min(0)
    return upsample_maps(cam, size, upsample)


def scorecam(model: torch.nn.Module, x: torch.Tensor, target: Target = None, layer: str = None, *,
             relu: bool = True, upsample: bool | str = False, batch_size: int | None = None, progress: bool = True,
             backend: str | None = None) -> torch.Tensor:
    """Score-CAM (Wang et al., CVPR Workshops 2020), pytorch-grad-cam's ScoreCAM.

    Each of the layer's K channel maps is upsampled to x (bilinear, align_corners=True), min-max
    normalized to [0, 1] (+1e-8) and multiplies x; the target's scores of the K masked copies,
    softmaxed over the channels, weight the maps. Departure from pytorch-grad-cam: the scores and
    weights keep x's precision (it rounds them to float32), so float64 maps differ from its by
    float32 rounding only.

    Args:
        model: the CNN (eval mode; it is not modified).
        x: images (B, C, H, W), float32 or float64.
        target: what is explained at the output: None (predicted class), a class index, a
            LongTensor (B,) or a callable output -> (B,) scores (the raw output, as pytorch-grad-cam).
        layer: the module whose (B, K, h, w) output is used (see featvis_fast.layer_names).
        relu: clamp the map at 0 (pytorch-grad-cam's).
        upsample: False (the layer's h x w), True / "bilinear" or "nearest" (to x's H x W).
        batch_size: masked copies per forward (None: the largest batch that fits in memory).
        progress: a tqdm bar on long runs.
        backend: kernel backend of the masking kernel (None: the fastest for x's device).

    Returns:
        the maps (B, h, w), or (B, H, W) with upsample, in x's precision (float32 or float64).
    """
    chosen = _setup(model, x, target, layer, backend, "scorecam")
    with cached_cpu_memory(x.device):
        x, item_bytes = batches.laid_out_batch(model, x)
        ref_out, acts = _clean_pass(model, x, layer)
        classes, _ = class_scores.resolve(ref_out, target)
        batch, channels = acts.shape[:2]
        height, width = x.shape[-2:]
        dtype = class_scores.score_dtype(x)
        flat = acts.to(dtype).reshape(batch * channels, 1, *acts.shape[2:])
        fill = torch.zeros_like(x)
        probe = Probe(model)
        scores = torch.empty(batch * channels, dtype=dtype, device=x.device)

        def work(start, stop):  # item i = b * K + k: channel k of image b masks image b
            up = F.interpolate(flat[start:stop], size=(height, width), mode="bilinear", align_corners=True)[:, 0]
            lo = up.amin(dim=(1, 2), keepdim=True)
            hi = up.amax(dim=(1, 2), keepdim=True)
            masks = (up - lo) / (hi - lo + 1e-8)
            src = torch.div(torch.arange(start, stop, device=x.device), channels, rounding_mode="floor").int()
            out = probe(ops.apply_masks(x, fill, masks, src, chosen))
            scores[start:stop] = class_scores.scores(out, target, classes, src)

        size = batches.pick_batch_size(batch_size, batch * channels, x.device, item_bytes)
        batches.run_batches(batch * channels, size, work, progress=progress, desc="Score-CAM", device=x.device)
        weights = torch.softmax(scores.view(batch, channels), dim=1)
        return _finish(weights, acts, relu, upsample, (height, width))


def ablationcam(model: torch.nn.Module, x: torch.Tensor, target: Target = None, layer: str = None, *,
                relu: bool = True, upsample: bool | str = False, batch_size: int | None = None,
                progress: bool = True, backend: str | None = None) -> torch.Tensor:
    """Ablation-CAM (Ramaswamy & Desai, WACV 2020), pytorch-grad-cam's AblationCAM.

    w_k = (S - S_k) / S, where S is the target's score and S_k its score with channel k of the
    layer's output set to 0 (the ablated outputs replace the layer's own in the forward pass).
    S is computed like the S_k, the unablated output through the part after the layer in the same
    batches: S - S_k is a small difference of two large scores, and rounding they share cancels.
    Departures from pytorch-grad-cam: the scores keep x's precision (it rounds them to float32);
    and a channel is always ablated to 0, where pytorch-grad-cam, for a layer output whose
    minimum is not 0, writes min - 1e7 instead (and lowers it further with each channel of a
    batch). The two agree on rectified layers, whose minimum is 0.

    Args:
        model: the CNN (eval mode; it is not modified).
        x: images (B, C, H, W), float32 or float64.
        target: what is explained at the output: None (predicted class), a class index, a
            LongTensor (B,) or a callable output -> (B,) scores (the raw output, as pytorch-grad-cam).
        layer: the module whose (B, K, h, w) output is ablated (see featvis_fast.layer_names).
        relu: clamp the map at 0 (pytorch-grad-cam's).
        upsample: False (the layer's h x w), True / "bilinear" or "nearest" (to x's H x W).
        batch_size: ablated copies per forward (None: the largest batch that fits in memory, counting
            only what runs after the layer; on the CPU up to as many bytes as 32 whole passes).
        progress: a tqdm bar on long runs.
        backend: unused by the ablation itself (kept for the common signature); checked.

    Returns:
        the maps (B, h, w), or (B, H, W) with upsample, in x's precision (float32 or float64).
    """
    _setup(model, x, target, layer, backend, "ablationcam")
    with cached_cpu_memory(x.device):
        x, item_bytes = batches.laid_out_batch(model, x)
        ref_out, acts = _clean_pass(model, x, layer)
        classes, ref_scores = class_scores.resolve(ref_out, target)
        batch, channels = acts.shape[:2]
        # item b * (K + 1) + k: image b's layer output with channel k zeroed, and for k = K unablated: S
        # runs through the same suffix, in the same batches, as the S_k, so that the rounding they
        # share cancels in the small difference S - S_k (float32 weights ~100x closer to float64)
        per_image = channels + 1
        total = batch * per_image
        scores = torch.empty(total, dtype=ref_scores.dtype, device=x.device)
        one_image_stem = [True]  # the forward before the layer on one image, unless the model needs a full batch

        def suffix_scores(outputs, src):  # the target's scores with `outputs` in place of the layer's
            if one_image_stem[0]:
                try:
                    return class_scores.scores(Probe(model, inject_layer=layer, stem=x[:1])(outputs), target, classes,
                                           src.int())
                except RuntimeError:  # e.g. EfficientNet's x.view(input_batch, -1) after the layer
                    one_image_stem[0] = False
            out = Probe(model, inject_layer=layer, stem=x[src])(outputs)
            return class_scores.scores(out, target, classes, src.int())

        def work(start, stop):
            items = torch.arange(start, stop, device=x.device)
            src = torch.div(items, per_image, rounding_mode="floor")
            channel = items % per_image
            ablated = acts[src]  # a gathered copy
            rows = (channel < channels).nonzero().squeeze(1)
            ablated[rows, channel[rows]] = 0
            scores[start:stop] = suffix_scores(ablated, src)

        # an item is the part after the layer: batches as large in memory as CPU_CAP whole passes
        # (each batch also reruns the part before the layer on one image)
        one_pass = lambda: rewritten_forward(model, lambda: model(x[:1]))
        after = 3 * max(1, batches.largest_activation_bytes(model, one_pass, after=find_module(model, layer)))
        cpu_cap = max(batches.CPU_CAP, batches.CPU_CAP * item_bytes // after)
        size = batches.pick_batch_size(batch_size, total, x.device, after, cpu_cap=cpu_cap)
        batches.run_batches(total, batches.balanced_batch_size(size, total), work, progress=progress,
                            desc="Ablation-CAM", device=x.device)
        scores = scores.view(batch, per_image)
        clean = scores[:, channels:]
        weights = (clean - scores[:, :channels]) / clean
        return _finish(weights, acts, relu, upsample, tuple(x.shape[-2:]))
