"""Occlusion sensitivity (Zeiler & Fergus 2014), batched on the device: Captum's `Occlusion`
semantics for the score, FeatureVis' for activation changes at a layer.

For each window the occluded copy is written by `featvis::occlude` straight into the batch
buffer, the model runs on whole batches of copies (no gradients, forward rewrites, channels-last
on the CPU), and `featvis::box_accumulate` spreads one value per window over its pixels:
  measure="score"            value = target score of x - target score of the copy; a pixel gets
                             the mean over the windows covering it (Captum; 0 where none does)
  measure=layer / (layer, f) value = ||A_f(x) - A_f(copy)|| (Frobenius norm of filter f's map at
                             that layer; f defaults per image to the filter with the largest
                             norm, as FeatureVis does); a pixel gets the sum over its windows
Several window specs (lists of windows and strides): each spec's map is divided by its largest
absolute value per image, the maps are summed and divided again (FeatureVis).
layer="name" occludes that layer's output instead of the input (feature-map occlusion): windows
and the result are in that layer's (h, w) cells, and the forward before it runs once per batch
on one image instead of once per window.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from .. import _backend
from .._validate import check_model_and_batch
from ..engine import Target, batches, cached_cpu_memory, class_scores, find_module, rewritten_forward
from ..engine import incremental as _incremental
from ..engine.patched import Patched, occluded
from ..engine.probe import Probe
from ..ops import perturbation as ops
from . import _windows
from ._fills import make_fill


def _parse_measure(measure):
    if measure == "score":
        return None, None
    if isinstance(measure, str):
        return measure, None
    if isinstance(measure, tuple) and len(measure) == 2 and isinstance(measure[0], str) \
            and (measure[1] is None or (isinstance(measure[1], int) and not isinstance(measure[1], bool))):
        return measure
    raise ValueError(f"measure must be 'score', a layer name or (layer name, filter), got {measure!r}")


class _Capture:
    """Forward hooks that keep some modules' outputs (no stop)."""

    def __init__(self, modules):
        self.outputs, self.order = {}, []
        self.handles = [m.register_forward_hook(self._hook(name)) for name, m in modules.items()]

    def _hook(self, name):
        def hook(module, inputs, output):
            if not isinstance(output, torch.Tensor) or output.dim() != 4:
                raise ValueError(f"layer {name!r} must output a (B, C, h, w) tensor, got "
                                 f"{tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__}"
                                 )
            if name not in self.outputs:
                self.outputs[name] = output
                self.order.append(name)
        return hook

    def close(self):
        for h in self.handles:
            h.remove()


def _reference_pass(model, x, names):
    """The clean pass over all images: model output and the outputs of the named layers."""
    def run():
        capture = _Capture({n: find_module(model, n) for n in names if n is not None})
        try:
            out = model(x)
        finally:
            capture.close()
        return out, capture.outputs, capture.order

    return rewritten_forward(model, run)


def _change_norms(ref_values: torch.Tensor, out, src: torch.Tensor, filters: torch.Tensor,
                  dtype: torch.dtype) -> torch.Tensor:
    """(N,) ||A_f(x) - A_f(copy)|| per copy; for patched copies only the patches can differ."""
    rows = torch.arange(len(src), device=src.device)
    f = filters[src.long()]
    if isinstance(out, Patched):
        diff = out.clean()[rows, f].to(dtype) - out.patches[rows, f].to(dtype)
    else:
        diff = ref_values[src.long(), f].to(dtype) - out[rows, f].to(dtype)
    return diff.pow(2).sum(dim=(1, 2)).sqrt()


def _filters(acts: torch.Tensor, measure_filter, layer: str) -> torch.Tensor:
    """(B,) filter per image: the given one, or the one with the largest activation norm."""
    channels = acts.shape[1]
    if measure_filter is None:
        return acts.to(class_scores.score_dtype(acts)).pow(2).sum(dim=(2, 3)).argmax(dim=1)
    if not 0 <= measure_filter < channels:
        raise ValueError(f"filter {measure_filter} is out of range for layer {layer!r} with {channels} filters")
    return torch.full((acts.shape[0],), measure_filter, dtype=torch.long, device=acts.device)


def _items(boxes: torch.Tensor, batch: int, channels: int, per_channel: bool):
    """Every (image, window[, channel]) of one spec: src (N,), occlusion boxes and accumulation boxes (N, 6)."""
    k = boxes.shape[0]
    chans = torch.arange(channels) if per_channel else torch.zeros(1, dtype=torch.long)
    b, w, c = torch.meshgrid(torch.arange(batch), torch.arange(k), chans, indexing="ij")
    b, w, c = b.reshape(-1), w.reshape(-1), c.reshape(-1)
    spatial = boxes[w].long()
    if per_channel:
        occ_c = acc_c = torch.stack([c, c + 1], dim=1)
    else:
        occ_c = torch.tensor([0, channels]).expand(len(b), 2)
        acc_c = torch.tensor([0, 1]).expand(len(b), 2)
    occ = torch.cat([spatial, occ_c], dim=1).to(torch.int32)
    acc = torch.cat([spatial, acc_c], dim=1).to(torch.int32)
    return b.to(torch.int32), occ, acc


def occlusion(model: torch.nn.Module, x: torch.Tensor, target: Target = None, window: int | Sequence = 32,
              stride: int | Sequence = 16, *, fill: float | str | Sequence[float] | torch.Tensor = 0.0,
              measure: str | tuple[str, int | None] = "score", layer: str | None = None,
              positions: str = "inside", per_channel: bool = False, blur_sigma: float = 8.0,
              generator: torch.Generator | None = None, batch_size: int | None = None, progress: bool = True,
              backend: str | None = None, incremental: bool = True) -> torch.Tensor:
    """Occlusion sensitivity (Zeiler & Fergus 2014): the score drop when a window is occluded.

    measure="score" (Captum's Occlusion): a window's value is the target score of x minus that
    of the occluded copy, and a pixel gets the mean over the windows covering it (0 where none
    does). A layer measure (FeatureVis'): the value is the Frobenius norm of the change of one
    filter's map, and a pixel gets the sum over its windows. Several window specs are each
    divided by their largest absolute value per image, summed and divided again (FeatureVis).

    Args:
        model: the CNN.
        x: inputs (B, C, H, W), float32 or float64.
        target: a featvis_fast.Target at the output: None (predicted class), a class index, a
            LongTensor (B,) or a callable on the output (measure="score" only).
        window: the window size: an int, (h, w), or a list of them for several window specs.
        stride: the windows' stride, in the same forms.
        fill: what occluded pixels become: a number, per-channel values, a tensor like x,
            "mean" (each image's per-channel mean, FeatureVis'), "blur" (Gaussian, blur_sigma) or
            "noise" (each image's per-channel mean and std, from generator).
        measure: "score" (the target's output), a layer name (the filter of that layer with the
            largest change, per image) or (layer name, filter).
        layer: occlude this layer's output instead of the input; windows and maps are then in
            the layer's (h, w) cells.
        positions: "inside" (windows stay inside the image, Captum's) or "overhang" (they may run
            over the edge, FeatureVis').
        per_channel: occlude one channel at a time (maps (B, C, H, W)).
        blur_sigma: the blur fill's sigma in pixels.
        generator: the RNG of the noise fill.
        batch_size: occluded images per forward (None: the largest batch that fits in memory).
        progress: a tqdm bar.
        backend: kernel backend (None: the fastest for x's device).
        incremental: recompute, layer by layer, only what a window changes (Krypton; see
            featvis_fast.engine.incremental): equal to the full recompute to float rounding.
            False, or a model with forward hooks, runs every copy through the whole model.

    Returns:
        the maps (B, H, W) on x's device ((B, C, H, W) with per_channel; (B, h, w) with layer),
        float64 for a float64 model and input (every step in float64), else float32.
    """
    check_model_and_batch(model, x)
    if x.dim() != 4:
        raise ValueError(f"occlusion needs images (B, C, H, W), got shape {tuple(x.shape)}")
    chosen = _backend.resolve_backend(backend, x.device)
    measure_layer, measure_filter = _parse_measure(measure)
    if measure_layer is not None and target is not None:
        raise ValueError("target applies to measure='score'; for a layer measure give the filter as "
                         "measure=(layer, filter)")
    for name in (layer, measure_layer):
        if name is not None:
            find_module(model, name)
    with cached_cpu_memory(x.device):
        x, item_bytes = batches.laid_out_batch(model, x)
        incremental = incremental and not _incremental.has_hooks(model)
        if incremental:
            recording = _incremental.record(model, x, (layer, measure_layer))
            ref_out, acts, order = recording.output, recording.layers, recording.order
        else:
            ref_out, acts, order = _reference_pass(model, x, (layer, measure_layer))
        missing = [n for n in (layer, measure_layer) if n is not None and n not in acts]
        if missing:
            raise ValueError(f"layer {missing[0]!r} did not run in the forward pass")
        if layer is not None and measure_layer is not None and measure_layer != layer \
                and order.index(measure_layer) < order.index(layer):
            raise ValueError(f"the measured layer {measure_layer!r} runs before the occluded layer {layer!r}: "
                             "occluding can not change it")
        site = acts[layer] if layer is not None else x
        batch, channels, height, width = site.shape
        specs = _windows.parse_specs(window, stride, height, width)
        site_fill = make_fill(site, fill, blur_sigma=blur_sigma, generator=generator)
        if measure_layer is None:
            classes, ref_values = class_scores.resolve(ref_out, target)
            filters = None
        else:
            classes, ref_values = None, acts[measure_layer]
            filters = _filters(ref_values, measure_filter, measure_layer)
        stem = x[:1] if layer is not None else None
        if incremental:
            probe = _incremental.IncrementalProbe(model, recording, measure_layer, layer, stem)
        else:
            probe = Probe(model, measure_layer=measure_layer, inject_layer=layer, stem=stem)
        maps = []
        for spec in specs:
            src, occ_boxes, acc_boxes = _items(_windows.boxes_for(spec, height, width, positions), batch, channels,
                                               per_channel)
            src, occ_boxes, acc_boxes = src.to(x.device), occ_boxes.to(x.device), acc_boxes.to(x.device)
            values = torch.empty(src.numel(), dtype=class_scores.score_dtype(site), device=x.device)

            def work(start, stop):
                s = src[start:stop]
                if incremental:
                    out = probe(occluded(site, site_fill, s, occ_boxes[start:stop], chosen))
                else:
                    out = probe(ops.occlude(site, site_fill, s, occ_boxes[start:stop], chosen))
                if measure_layer is None:
                    values[start:stop] = ref_values[s.long()] - class_scores.scores(out, target, classes, s)
                else:
                    values[start:stop] = _change_norms(ref_values, out, s, filters, values.dtype)

            size = batches.pick_batch_size(batch_size, src.numel(), x.device, item_bytes)
            batches.run_batches(src.numel(), size, work, progress=progress, desc="occlusion", device=x.device)
            planes = channels if per_channel else 1
            sums, counts = ops.box_accumulate(values, src, acc_boxes, batch, planes, height, width, chosen)
            maps.append(torch.where(counts > 0, sums / counts.clamp_min(1), 0.0) if measure_layer is None else sums)
    result = maps[0] if len(maps) == 1 else _combine(maps)
    return result if per_channel else result[:, 0]


def _combine(maps: list[torch.Tensor]) -> torch.Tensor:
    """FeatureVis' sum of several specs: each (B, P, H, W) map / its largest |value| per image, summed, / again."""
    def normalized(m):
        peak = m.abs().amax(dim=(1, 2, 3), keepdim=True)
        return torch.where(peak > 0, m / peak.clamp_min(torch.finfo(m.dtype).tiny), 0.0)

    return normalized(sum(normalized(m) for m in maps))
