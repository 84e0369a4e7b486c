"""Activation maximization (Erhan et al. 2009; Yosinski et al. 2015; Olah et al. 2017, Lucid):
images that make an objective (channel, neuron, layer, class logit, direction, diversity, and
weighted sums) as large as possible.

Each step: the parameters' jittered crop (written by the previous fused step) -> image (pixels
or Lucid's decorrelated FFT) -> transforms (pad, jitter, scale, rotate; seeded) -> input
normalization -> the model up to the objective's layers (objective_gradient: lean backward,
forward rewrites) -> the objective's gradient -> `featvis::ascent_step` (regularizers, Adam or
SGD, clipping, the next crop in one pass). The plain eager loop is featvis_fast.reconstruction._eager.

maximize(model, objective, steps, ...) -> (N, 3, H, W) images in [0, 1]; N is set by the
objective ("layer:*": one image per channel; a list: one image per item) or by `batch` (default 1).
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .._ascent_reference import Regularizers
from ..models import IMAGENET_MEAN, IMAGENET_STD, extract, find_module
from . import objectives as obj
from ._ascent import StepSettings
from ._run import Reconstruction, check_model, check_steps, eval_mode, norm_tensor
from .param import FFTParam, PixelParam
from .transforms import preset

PARAMS = {"fft": FFTParam, "pixel": PixelParam}


def resolve_many(model: torch.nn.Module, objectives: list, size: tuple[int, int], device) -> list[obj.Objective]:
    """Objectives (parsed from strings with the model's channel counts) checked against the model,
    from one probe forward."""
    names = list(dict.fromkeys(n for o in objectives for n in obj.layer_names(o)))
    for n in names:
        find_module(model, n)
    probe = torch.zeros(1, 3, *size, device=device)
    with torch.no_grad():
        acts = extract(model, probe, names) if names else {}
        shapes = {n: tuple(a.shape[1:]) for n, a in acts.items()}
        parsed = [obj.parse(o, channels={n: s[0] for n, s in shapes.items()}) for o in objectives]
        extra = sorted({n for p in parsed for n in p.layers} - set(shapes))
        if extra:
            shapes.update({n: tuple(a.shape[1:]) for n, a in extract(model, probe, extra).items()})
        classes = model(probe).reshape(1, -1).shape[1] if any(p.needs_output for p in parsed) else None
    for p in parsed:
        p.validate(shapes, classes)
    return parsed


def resolve(model: torch.nn.Module, objective, size: tuple[int, int], device) -> obj.Objective:
    """One objective (see resolve_many)."""
    return resolve_many(model, [objective], size, device)[0]


def regularizers_from(value) -> Regularizers:
    """None, a Regularizers, or a dict of its fields (l1, l2, lp, p, tv, beta, tv_eps)."""
    if value is None:
        return Regularizers()
    if isinstance(value, Regularizers):
        return value
    if isinstance(value, dict):
        unknown = set(value) - set(Regularizers.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown regularizer(s) {sorted(unknown)}; known: l1, l2, lp, p, tv, beta, tv_eps")
        return Regularizers(**value)
    raise TypeError(f"regularizers must be a dict or Regularizers, got {type(value).__name__}")


class Maximization(Reconstruction):
    """One batch of images being maximized, step by step (see _run.Reconstruction)."""

    def __init__(self, model: torch.nn.Module, objective, *, batch: int | None = None, size=224,
                 param: str = "fft", transforms="standard", seed: int = 0, settings: StepSettings | None = None,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD, backend: str | None = None, channels_last: bool | None = None,
                 autocast: str | None = None, cuda_graph: bool = False) -> None:
        device = check_model(model)
        if param not in PARAMS:
            raise ValueError(f"param must be one of {tuple(PARAMS)}, got {param!r}")
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        settings = settings or StepSettings()
        if param == "fft" and (settings.jitter or settings.blur_every or settings.regularizers != Regularizers()):
            raise ValueError("jitter, blur_every and the regularizers act on pixels; with param='fft' they would act "
                             "on the spectrum: use param='pixel' (or the transforms' Jitter)")
        if settings.jitter >= min(h, w):
            raise ValueError(f"jitter {settings.jitter} leaves no crop of a {h}x{w} image")
        chain = preset(transforms)
        m, s = norm_tensor(mean, "mean", device), norm_tensor(std, "std", device)
        # the objective is checked at the size the model sees (crop, then the transforms)
        seen = chain(torch.zeros(1, 3, h - settings.jitter, w - settings.jitter, device=device),
                     torch.Generator().manual_seed(0)).shape[-2:]
        self.model = model
        with eval_mode(model):
            self.goal = resolve(model, objective, tuple(seen), device)
        n = self.goal.images or batch or 1
        if self.goal.images is not None and batch is not None and batch != self.goal.images:
            raise ValueError(f"the objective sets the batch to {self.goal.images} images; batch={batch} disagrees")
        self.generator = torch.Generator().manual_seed(seed)
        self.param = PARAMS[param](n, h, w, generator=self.generator, device=device)
        self.start(self.param.flat(), settings,
                   lambda crop: (chain(self.param.image_of(crop), self.generator) - m) / s,
                   self.param.image_of, backend, channels_last=channels_last, autocast=autocast, cuda_graph=cuda_graph)


def maximize(model: torch.nn.Module, objective: obj.Objective | str | list, steps: int = 512, *,
             batch: int | None = None, size: int | tuple[int, int] = 224, param: str = "fft",
             transforms: str | list = "standard", seed: int = 0, lr: float = 0.05, optimizer: str = "adam",
             regularizers: dict | None = None, jitter: int = 0, blur_every: int = 0, blur_sigma: float = 0.5,
             normalize_grad: bool = False, mean: tuple[float, ...] = IMAGENET_MEAN,
             std: tuple[float, ...] = IMAGENET_STD, backend: str | None = None,
             channels_last: bool | None = None, autocast: str | None = None, cuda_graph: bool = False,
             progress: bool = True) -> torch.Tensor:
    """Activation maximization (Erhan et al. 2009; Olah et al. 2017, Lucid's defaults).

    Args:
        model: the CNN (eval mode).
        objective: what to maximize: an Objective or a string ("layer:37", "layer:*" for every
            channel, "class:285", "a:1 - 0.5*b:3"), or a list of those (image i maximizes item i).
        steps: optimization steps.
        batch: images optimized together (None: what the objective asks for).
        size: the output side, an int or (H, W).
        param: "fft" (decorrelated Fourier parameters, Lucid's default) or "pixel".
        transforms: "standard" (Lucid's pad, jitter, scale, rotate), "none" or a list of transforms.
        seed: RNG seed of the start and the transforms.
        lr: the step size.
        optimizer: "adam", "sgd" or "nesterov".
        regularizers: {"l1", "l2", "lp", "p", "tv", "beta"} weights on the parameters.
        jitter: a random crop of this many pixels inside the fused step (pixel parameters only).
        blur_every: blur the parameters every this many steps (0: never).
        blur_sigma: that blur's sigma.
        normalize_grad: divide each image's gradient by its mean magnitude.
        mean: the model's input normalization mean (ImageNet's by default).
        std: the input normalization's standard deviation.
        backend: kernel backend of the fused step (None: the fastest for the model's device).
        channels_last: run the model channels-last (None: on the CPU).
        autocast: "bf16" or "fp16" to run the model under autocast (None: full precision).
        cuda_graph: replay the model part of each step from a CUDA graph.
        progress: a tqdm bar.

    Returns:
        the images (N, 3, H, W) in [0, 1] on the model's device.
    """
    check_steps(steps)
    settings = StepSettings(optimizer=optimizer, lr=lr, regularizers=regularizers_from(regularizers), jitter=jitter,
                            blur_every=blur_every, blur_sigma=blur_sigma, normalize=normalize_grad)
    run = Maximization(model, objective, batch=batch, size=size, param=param, transforms=transforms, seed=seed,
                       settings=settings, mean=mean, std=std, backend=backend, channels_last=channels_last,
                       autocast=autocast, cuda_graph=cuda_graph)
    with tqdm(total=steps, desc="maximize", disable=not progress, leave=False) as bar:
        run.run(steps, bar.update)
    return run.images()
