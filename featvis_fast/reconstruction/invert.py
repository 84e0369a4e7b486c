"""Network inversion (Mahendran & Vedaldi, CVPR 2015): images whose features at a layer match
those of given images, found by gradient descent from noise.

    minimize  ||phi(x) - t||^2 / ||t||^2  +  lp * sum|x|^p  +  tv * TV_beta(x)

with the FeatureVis preset (FelixGruen/featurevis, simplenn_reconstruction): x in 0..255 pixel
units with the dataset mean subtracted (what MatConvNet models take; here the model gets
x / (255 std)), p = 6, lp = 1 / (H W 128^p), beta = 2 and FeatureVis' TV factor 1 / (H W 128^2 0.01^2)
(FeatureVis' TV gradient is half the true one: tv here is half its factor), SGD with momentum
0.9, 100 runs. Where this differs from FeatureVis, on purpose: each image's objective gradient is
divided by its mean magnitude and the step is 0.25. FeatureVis' raw step of 1 suits the
gradient scale of MatConvNet models fed 0..255 pixels; a model fed normalized inputs sees
gradients (255 std)^2 ~ 3000 times smaller in these units, and got nowhere in 100 runs (feature
error 1.2 -> 1.0 at _blocks.10 of the default model), while the normalized step reaches 0.04-0.05
at _blocks.2, 6 and 10 whatever the model's input scaling. The start is N(0, 1) noise (pixel
units) from the seed (FeatureVis takes a start image from the caller).

invert(model, x, layer, ...) -> (N, 3, H, W) in [0, 1]; x: (N, 3, H, W) model inputs (normalized).
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .._ascent_reference import Regularizers
from .._validate import check_model_and_batch
from ..models import IMAGENET_MEAN, IMAGENET_STD, extract, find_module
from ._ascent import StepSettings
from ._run import Reconstruction, check_model, check_steps, eval_mode, norm_tensor
from .objectives import Objective

PRESETS = ("featurevis",)


class FeatureMatch(Objective):
    """-||a - t||^2 / ||t||^2 per image (to maximize), a: the layer's activation (N, C, h, w)."""

    def __init__(self, layer: str, target: torch.Tensor) -> None:
        self.layer, self.layers = layer, frozenset({layer})
        self.target = target.detach().float()
        self.norm = self.target.pow(2).flatten(1).sum(1).clamp_min(1e-30)
        self.images = int(target.shape[0])

    def __call__(self, acts, output):
        a = acts[self.layer].float()
        return -(a - self.target).pow(2).flatten(1).sum(1) / self.norm

    def validate(self, shapes, classes):
        if shapes[self.layer] != tuple(self.target.shape[1:]):
            raise ValueError(f"layer {self.layer!r} gives {shapes[self.layer]}, "
                             f"the target is {tuple(self.target.shape[1:])}")


def featurevis_settings(h: int, w: int, p: float = 6.0, lr: float = 0.25, momentum: float = 0.9,
                        lp: float | None = None, tv: float | None = None) -> StepSettings:
    """The preset for (h, w) images; lp / tv replace its regularizer weights."""
    lp = 1.0 / (h * w * 128.0 ** p) if lp is None else lp
    tv = 0.5 / (h * w * 128.0 ** 2 * 0.01 ** 2) if tv is None else tv
    return StepSettings(optimizer="sgd", lr=lr, momentum=momentum, normalize=True,
                        regularizers=Regularizers(lp=lp, p=p, tv=tv, beta=2.0))


class Inversion(Reconstruction):
    """A batch of inversions, step by step (see _run.Reconstruction). x: (N, 3, H, W) model inputs."""

    def __init__(self, model: torch.nn.Module, x: torch.Tensor, layer: str, *, seed: int = 0,
                 settings: StepSettings | None = None, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 backend: str | None = None, channels_last: bool | None = None, autocast: str | None = None,
                 cuda_graph: bool = False) -> None:
        device = check_model(model)
        with eval_mode(model):  # it runs in eval mode: no warning about training-mode batch norm
            check_model_and_batch(model, x)
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"x must be (N, 3, H, W) images, got {tuple(x.shape)}")
        find_module(model, layer)
        self.model, self.layer = model, layer
        x = x.detach().to(device)
        with eval_mode(model), torch.no_grad():
            target = extract(model, x, layer)
        self.goal = FeatureMatch(layer, target)
        h, w = x.shape[-2:]
        settings = settings or featurevis_settings(h, w)
        if settings.jitter:
            raise ValueError("inversion matches features position by position: jitter must be 0")
        self.generator = torch.Generator().manual_seed(seed)
        m, s = norm_tensor(mean, "mean", device), norm_tensor(std, "std", device)
        start = torch.randn(x.shape, generator=self.generator).to(device)
        self.start(start, settings, lambda u: u / (255.0 * s), lambda u: (u / 255.0 + m).clamp(0, 1), backend,
                   channels_last=channels_last, autocast=autocast, cuda_graph=cuda_graph)

    def feature_error(self) -> torch.Tensor:
        """(N,) ||phi(x) - t||^2 / ||t||^2 of the current images (as the model sees them)."""
        with eval_mode(self.model), torch.no_grad():
            a = extract(self.model, self.gradient.prepare(self.ascent.x), self.layer)
        return -self.goal({self.layer: a}, None)


def invert(model: torch.nn.Module, x: torch.Tensor, layer: str, steps: int = 100, *, preset: str = "featurevis",
           p: float = 6.0, lp: float | None = None, tv: float | None = None, lr: float = 0.25, momentum: float = 0.9,
           seed: int = 0, mean: tuple[float, ...] = IMAGENET_MEAN,
           std: tuple[float, ...] = IMAGENET_STD, backend: str | None = None,
           channels_last: bool | None = None, autocast: str | None = None, cuda_graph: bool = False,
           progress: bool = True) -> torch.Tensor:
    """Network inversion (Mahendran & Vedaldi 2015): images whose features at `layer` match x's.

    Args:
        model: the CNN (eval mode).
        x: (N, 3, H, W) normalized model inputs whose features are matched.
        layer: the module whose output is matched.
        steps: optimization steps (FeatureVis: 100).
        preset: "featurevis" (FelixGruen/featurevis' regularizers and schedule).
        p: the p of the p-norm regularizer.
        lp: the p-norm weight (None: the preset's).
        tv: the total-variation weight (None: the preset's).
        lr: the step size.
        momentum: SGD momentum.
        seed: RNG seed of the noise start.
        mean: the model's input normalization mean.
        std: the input normalization's standard deviation.
        backend: kernel backend of the fused step.
        channels_last: run the model channels-last (None: on the CPU).
        autocast: "bf16" or "fp16" to run the model under autocast.
        cuda_graph: replay the model part of each step from a CUDA graph.
        progress: a tqdm bar.

    Returns:
        the reconstructions (N, 3, H, W) in [0, 1] on the model's device.
    """
    check_steps(steps)
    if preset not in PRESETS:
        raise ValueError(f"unknown inversion preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a (N, 3, H, W) tensor, got {getattr(x, 'shape', type(x).__name__)}")
    settings = featurevis_settings(x.shape[-2], x.shape[-1], p=p, lr=lr, momentum=momentum, lp=lp, tv=tv)
    run = Inversion(model, x, layer, seed=seed, settings=settings, mean=mean, std=std, backend=backend,
                    channels_last=channels_last, autocast=autocast, cuda_graph=cuda_graph)
    with tqdm(total=steps, desc="invert", disable=not progress, leave=False) as bar:
        run.run(steps, bar.update)
    return run.images()
