"""Incremental inference for occlusion (Krypton: Nakandala, Kumar, Papakonstantinou, SIGMOD 2019):
each layer recomputes only the region of its output that a window's change reaches.

`record` runs the clean pass once under a TorchFunctionMode that keeps the output of every call
the replay can patch. An `IncrementalProbe` then runs the model's own forward on a batch of
occluded copies under `IncrementalMode`, which meets every call however the model makes it
(module, functional, Tensor method, in place) and, call by call:
  - a value that differs from the clean pass only in per-copy boxes is a `Patched` (clean map +
    patches); the model's code holds a placeholder of the right shape that owns no memory;
  - convolutions, max and average pooling, eval batch norm, pointwise activations, residual
    additions and products, channel concatenations and zero pads compute only the patches
    (incremental_calls), reading tiles gathered by featvis::gather_patches;
  - any other call, a region above `full_above` of its map, or a call sequence that departs
    from the recorded one, materializes the placeholders it reads (featvis::scatter_patches) and
    runs as usual: global pooling, attention, reshapes and unknown layers end the incremental part
    there, and everything after is the plain forward. Nothing is guessed.
The results equal the full recompute to float rounding.
"""
from __future__ import annotations

import weakref
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves, tree_map

from . import incremental_calls as calls
from .capture import StopForward, find_module
from .patched import Patched
from .rewrite_calls import only_shape

FULL_ABOVE = 0.99  # a layer whose changed region exceeds this share of its map runs in full


@dataclass
class Recording:
    """The clean pass: its output, the captured layers' outputs, and the replay's clean maps.

    Attributes:
        output: the model's output on the clean images.
        layers: {name: output} of the layers asked for, in the order they ran (`order`).
        funcs: every call the pass made (metadata reads aside), in order.
        clean: {call index: a copy of its (B, C, H, W) output} for the calls the replay can patch.
    """

    output: object
    layers: dict[str, torch.Tensor]
    order: list[str]
    funcs: list = field(default_factory=list)
    clean: dict[int, torch.Tensor] = field(default_factory=dict)


class _Recorder(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.funcs: list = []
        self.clean: dict[int, torch.Tensor] = {}
        self.internal = False  # calls made by our own hooks are not the model's

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.internal or only_shape(func):
            return out
        self.funcs.append(func)
        if func in calls.HANDLERS and isinstance(out, torch.Tensor) and out.dim() == 4 and out.is_floating_point():
            self.clean[len(self.funcs) - 1] = out.detach().clone()  # later in-place calls must not change it
        return out


def record(model: torch.nn.Module, x: torch.Tensor, layers=()) -> Recording:
    """The clean pass over the images x (B, C, H, W), recorded for the replay; `layers` (names,
    None entries ignored) are captured as well."""
    names = [n for n in dict.fromkeys(layers) if n is not None]
    captured, order = {}, []

    def hook(name):
        def keep(module, inputs, output):
            if not isinstance(output, torch.Tensor) or output.dim() != 4:
                shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
                raise ValueError(f"layer {name!r} must output a (B, C, h, w) tensor, got {shape}")
            if name not in captured:
                recorder.internal = True
                try:
                    captured[name] = output.detach().clone()
                finally:
                    recorder.internal = False
                order.append(name)
        return keep

    recorder = _Recorder()
    handles = [find_module(model, n).register_forward_hook(hook(n)) for n in names]
    try:
        with torch.no_grad(), recorder:
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    return Recording(out, captured, order, recorder.funcs, recorder.clean)


class IncrementalMode(TorchFunctionMode):
    """Replays a forward on patched copies (see the module docstring).

    Args:
        recording: the clean pass of the same model on the copies' images.
        full_above: the share of a map above which a sliding-window layer runs in full.

    `stats` counts, per kind of call, how often it ran on patches ("conv2d") and how often it ran
    in full on materialized copies ("conv2d (full)"). `work` holds, per convolution (by call
    index), the multiply-adds it did and those the full recompute does: [done, full].
    """

    def __init__(self, recording: Recording, full_above: float = FULL_ABOVE) -> None:
        super().__init__()
        self.recording, self.full_above = recording, full_above
        self.values: dict[int, tuple[weakref.ref, Patched | torch.Tensor]] = {}  # freed with the placeholder
        self.index, self.diverged, self._internal = 0, False, False
        self.stats: Counter[str] = Counter()
        self.work: dict[int, list[int]] = {}

    @contextmanager
    def internal(self):
        """Torch calls made from hooks while the mode is active pass through uncounted."""
        self._internal = True
        try:
            yield
        finally:
            self._internal = False

    def hold(self, state: Patched, placeholder: torch.Tensor | None = None) -> torch.Tensor:
        """The placeholder the model's code gets for `state` (a new one, or `placeholder` rebound:
        an in-place call)."""
        if placeholder is None:
            with self.internal():
                placeholder = state.placeholder()
        self._bind(placeholder, state)
        return placeholder

    def _bind(self, placeholder: torch.Tensor, state) -> None:
        key = id(placeholder)
        self.values[key] = (weakref.ref(placeholder, lambda _, values=self.values, key=key: values.pop(key, None)),
                            state)

    def state(self, t) -> Patched | torch.Tensor | None:
        """What a placeholder stands for (a Patched, or its materialized copies); None for any other value."""
        entry = self.values.get(id(t)) if isinstance(t, torch.Tensor) else None
        return entry[1] if entry is not None and entry[0]() is t else None

    def patched(self, t) -> Patched | None:
        state = self.state(t)
        return state if isinstance(state, Patched) else None

    def real(self, t):
        """t itself, or for a placeholder the full copies it stands for (materialized once)."""
        state = self.state(t)
        if state is None:
            return t
        if isinstance(state, Patched):
            with self.internal():
                full = state.full()
            self._bind(t, full)
            return full
        return state

    def _holds_any(self, args, kwargs) -> bool:
        for a in (*args, *kwargs.values()):
            if isinstance(a, torch.Tensor):
                if id(a) in self.values:
                    return True
            elif isinstance(a, (list, tuple, dict)) and any(
                    isinstance(b, torch.Tensor) and id(b) in self.values for b in tree_leaves(a)):
                return True
        return False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self._internal or only_shape(func):
            return func(*args, **kwargs)
        index = self.index
        self.index += 1
        funcs = self.recording.funcs
        if not self.diverged and (index >= len(funcs) or funcs[index] is not func):
            self.diverged = True  # the model took another path than in the clean pass: no clean maps
        if not self._holds_any(args, kwargs):
            return self._tally(index, func, args, kwargs, func(*args, **kwargs))
        handler = calls.HANDLERS.get(func)
        if handler is not None and not self.diverged and index in self.recording.clean:
            out = handler(self, func, args, kwargs, self.recording.clean[index])
            if out is not NotImplemented:
                self.stats[calls.kind(func)] += 1
                return self._tally(index, func, args, kwargs, out)
        self.stats[f"{calls.kind(func)} (full)"] += 1
        args, kwargs = tree_map(self.real, (args, kwargs))
        return self._tally(index, func, args, kwargs, func(*args, **kwargs))

    def _tally(self, index: int, func, args, kwargs, out):
        """Count a convolution's multiply-adds (done, and those of the full recompute) into `work`."""
        if func is F.conv2d and isinstance(out, torch.Tensor) and out.dim() == 4:
            weight = args[1] if len(args) > 1 else kwargs["weight"]
            per_cell = weight[0].numel() * weight.shape[0]
            state = self.patched(out)
            done = out.shape[0] * out.shape[2] * out.shape[3] if state is None else \
                state.count * state.regions.h * state.regions.w
            tally = self.work.setdefault(index, [0, 0])
            tally[0] += done * per_cell
            tally[1] += out.shape[0] * out.shape[2] * out.shape[3] * per_cell
        return out


def has_hooks(model: torch.nn.Module) -> bool:
    """Whether any forward hook (the model's or global) could see a placeholder."""
    from torch.nn.modules import module as _module
    if _module._global_forward_hooks or _module._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


class IncrementalProbe:
    """Runs the model on a batch of patched copies; returns its output, or the value of
    `measure_layer` (a Patched while the incremental part still holds there, else a tensor).

    Args:
        model: the CNN (no hooks of its own: see has_hooks).
        recording: record(model, images, ...) of the clean images.
        measure_layer: stop at this layer's output.
        inject_layer: the copies replace this layer's output (feature-map occlusion); the model
            runs on `stem` (one image) up to it.
        stem: (1, C, H, W) the input for inject_layer.
        full_above: see IncrementalMode.
    """

    def __init__(self, model: torch.nn.Module, recording: Recording, measure_layer: str | None = None,
                 inject_layer: str | None = None, stem: torch.Tensor | None = None,
                 full_above: float = FULL_ABOVE) -> None:
        self.model, self.recording, self.full_above = model, recording, full_above
        self.measure = find_module(model, measure_layer) if measure_layer is not None else None
        self.inject = find_module(model, inject_layer) if inject_layer is not None else None
        self.stem = stem
        self.stats: Counter[str] = Counter()
        self.work: dict[int, list[int]] = {}  # per convolution: [multiply-adds done, in the full recompute]

    def __call__(self, copies: Patched):
        mode = IncrementalMode(self.recording, self.full_above)
        captured, handles = [], []

        def replace(module, inputs, output):
            if not isinstance(output, torch.Tensor) or output.shape[1:] != copies.base.shape[1:]:
                raise ValueError(f"the occluded layer's output changed shape: {getattr(output, 'shape', output)}")
            return mode.hold(copies)

        def capture(module, inputs, output):
            captured.append(mode.state(output) if mode.state(output) is not None else output)
            raise StopForward

        try:
            if self.inject is not None:
                handles.append(self.inject.register_forward_hook(replace))
            if self.measure is not None:
                handles.append(self.measure.register_forward_hook(capture))
            with torch.no_grad(), mode:
                try:
                    out = self.model(self.stem if self.inject is not None else mode.hold(copies))
                except StopForward:
                    out = None
        finally:
            for h in handles:
                h.remove()
            self.stats.update(mode.stats)
            for index, (done, full) in mode.work.items():
                tally = self.work.setdefault(index, [0, 0])
                tally[0] += done
                tally[1] += full
        if self.measure is not None:
            if not captured:
                raise ValueError("the measured layer did not run in the forward pass")
            return captured[0]
        return tree_map(mode.real, out)
