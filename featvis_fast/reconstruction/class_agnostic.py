"""Class-agnostic feature visualization (Stergiou, "The Mind's Eye: Visualizing Class-Agnostic
Features of CNNs", ICIP 2021; reference code: GitHub alexandrosstergiou/
Class-Agnostic-Feature-Visualisation, vis.py): from a set of images, one image per facet of what
a layer sees in them.

1. Facets (_clusters): the layer's global-average-pooled (GAP) features of the images (resized
   to `size`, bilinear, antialiased) -> PCA(50) -> t-SNE(2) -> k-means(10) in the t-SNE plane;
   per cluster the 10 images nearest its centre, weights w = softmax(1 / d) of their distances d. Cluster k's target
   is t = sum w a(x_i) (C,), its start image sum w x_i, its target channels the top 50 of t.
2. Per cluster, gradient descent on the image x (all clusters as one batch) on
       -sum_{c in top} a_c(x) t_c + lambda ||h(x)||_1 + mean_c rho(a_c(x) - t_c)
   a(x): the layer's GAP features; h(x): the input of the `penalty` module (default: the last
   convolution inside the layer; the reference penalizes the input of '7.2.conv3', the last
   convolution of ResNet-152's last block, whose output it visualizes);
   rho: Barron's general robust loss at alpha = 1, scale = 1, rho(e) = sqrt(e^2 + 1) - 1.
   Written as a score to maximize (its negative), which `scores` report.
3. The preset "stergiou" (the reference's settings, StergiouPreset): x in the model's input
   space (normalized, as the reference optimizes), SGD with Nesterov momentum 0.9, 2001 steps at
   512 x 512; linear schedules from the first to the last step: lr 0.5 -> 0.08, blur sigma 0.9 ->
   0.2 pixels, denoise weight 2 -> 8, lambda 1e-4 -> 5e-4, mask sigma 420 -> 340. The gradient
   is multiplied by a centre mask M (a Gaussian of std mask_sigma / sqrt(-ln 2^-52) pixels around
   the centre, scaled to [0, 1]: the reference's form). Every 10 steps, in [0, 1] pixels: before
   the step x = M blur(x) + (1 - M) x, and every 50 steps x = clip(x + 5/255); after the step
   x = M denoise(x) + (1 - M) x. After every step x is clipped to the valid pixel range.
Everything runs on the model's device except t-SNE and k-means (a few hundred 2-D points).

Where this differs from the reference:
- Momentum carries over from step to step. The reference builds a new SGD optimizer every
  iteration, so its momentum buffer starts empty each time and every step is (1 + 0.9) lr times
  the gradient; with the momentum kept, the preset's steps are larger once it has built up.
  StergiouPreset(reset_momentum=True) does what the reference does.
- The denoise is Chambolle's TV algorithm (_filters.tv_denoise, 50 iterations) with weight
  1 / (2 denoise_weight) instead of scikit-image's split-Bregman denoise_tv_bregman(weight=
  denoise_weight, 100 iterations): scikit-image documents its weight as half the ROF fidelity
  parameter, min TV(u) + weight ||u - x||^2, and on a noisy 96 x 96 photo (scikit-image 0.26)
  Bregman's results were closest to Chambolle's at weights 0.4 / w (w = 2) and 0.7 / w (w = 8),
  mean absolute difference 0.02 and 0.01. The blur is _filters.gaussian_blur (the reference's
  is imgaug's GaussianBlur).
- The images are not rounded to 8 bits after every step (the reference's uint8 round trip).
- Each cluster's dot product runs over its own top channels and the penalty and rho terms are
  per image. (The reference indexes all clusters' channel lists for every image and adds the
  whole batch's L1 norm and the batch mean of rho to each of its K x K entries.)
- t-SNE starts from PCA (scikit-learn's default now; the reference's version started at random).
- The chosen images are a cluster's members nearest its centre, as the reference's own comment
  ("closest to each cluster centre") has it. (Its code sorts all images' distances to the centre
  and reverses the order: it takes the farthest 10 of all images.)
- The reference's 1.2x zoomed canvas, from which a new randomly placed window is taken every 400
  steps, is left out; the mask sigma (given for 512 x 512) scales with `size`; images are RGB
  (the reference normalizes OpenCV's BGR arrays with RGB statistics); t-SNE and k-means are
  seeded; the features come from the images resized to `size` bilinearly (the reference: area).
- Small inputs: counts are clamped (see _clusters); schedules hold their end values past `steps`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .._deprecation import renamed_keywords
from ..models import IMAGENET_MEAN, IMAGENET_STD, find_module
from ._ascent import StepSettings
from ._clusters import Facets, blend, find_facets, gap_features
from ._filters import centre_distance, centre_mask, gaussian_blur, tv_denoise
from ._gradient import capture
from ._run import Reconstruction, check_model, check_steps, eval_mode, norm_tensor
from .objectives import Objective, input_key

PRESETS = ("stergiou",)
MASK_STD = 1.0 / math.sqrt(52 * math.log(2))  # the reference's eps^(((r-1)/s)^2/2) is a Gaussian of std s * this
REFERENCE_SIZE = 512  # the image size the reference's mask sigmas are given for


def linear(start: float, end: float, step: int, steps: int) -> float:
    """start at step 1, end at step `steps`, linear between (the reference's find_new_val); held
    at `end` past it."""
    if steps <= 1:
        return float(start)
    f = min(max((step - 1) / (steps - 1), 0.0), 1.0)
    return float(start + (end - start) * f)


class Scheduled(NamedTuple):
    lr: float
    blur_sigma: float
    denoise_weight: float
    penalty_weight: float
    mask_sigma: float


@dataclass(frozen=True)
class StergiouPreset:
    """The reference's settings; pairs are (first step, last step) of a linear schedule.
    denoise_weight: the reference's split-Bregman weight (larger: less denoising; Chambolle's
    weight is 1 / (2 denoise_weight)); mask_sigma:
    its mask parameter for a 512 x 512 image; filter_every: blur / denoise period; brightness:
    added to [0, 1] pixels every brightness_every steps (at filter steps; 0: never);
    reset_momentum: start each step with no momentum, as the reference's code does."""

    lr: tuple[float, float] = (0.5, 0.08)
    momentum: float = 0.9
    blur_sigma: tuple[float, float] = (0.9, 0.2)
    denoise_weight: tuple[float, float] = (2.0, 8.0)
    penalty_weight: tuple[float, float] = (1e-4, 5e-4)
    mask_sigma: tuple[float, float] = (420.0, 340.0)
    filter_every: int = 10
    brightness: float = 5.0 / 255.0
    brightness_every: int = 50
    denoise_iterations: int = 50
    reset_momentum: bool = False

    def __post_init__(self) -> None:
        for name in ("lr", "denoise_weight", "mask_sigma"):
            if not all(v > 0 for v in getattr(self, name)):
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("filter_every", "brightness_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an int >= 1, got {getattr(self, name)!r}")

    def at(self, step: int, steps: int) -> Scheduled:
        """The scheduled values of step `step` (from 1) of `steps`."""
        return Scheduled(*(linear(*getattr(self, f), step, steps) for f in Scheduled._fields))


def barron_rho(x: torch.Tensor, alpha: float = 1.0, scale: float = 1.0) -> torch.Tensor:
    """Barron's general robust loss (CVPR 2019) rho(x, alpha, c) = |a-2|/a (((x/c)^2/|a-2| + 1)^(a/2) - 1),
    with its limits at alpha = 2 ((x/c)^2 / 2) and 0 (log((x/c)^2 / 2 + 1)); alpha = 1 gives
    sqrt((x/c)^2 + 1) - 1."""
    z = (x / scale) ** 2
    if alpha == 2:
        return 0.5 * z
    if alpha == 0:
        return torch.log1p(0.5 * z)
    b = abs(alpha - 2)
    return b / alpha * ((z / b + 1) ** (alpha / 2) - 1)


def default_penalty(model: torch.nn.Module, layer: str) -> str:
    """The last convolution inside `layer` (the layer itself when it has none)."""
    convs = [n for n, m in find_module(model, layer).named_modules(prefix=layer) if isinstance(m, torch.nn.Conv2d)]
    return convs[-1] if convs else layer


class FacetMatch(Objective):
    """Per cluster k (image k): sum_{c in channels[k]} a_c t_kc - lam ||h||_1 - mean_c rho(a_c - t_kc),
    a: the layer's GAP features (K, C), t: targets (K, C), h: the penalty module's input."""

    def __init__(self, layer: str, penalty: str, targets: torch.Tensor, channels: torch.Tensor) -> None:
        self.layer, self.penalty = layer, penalty
        self.layers, self.inputs = frozenset({layer}), frozenset({penalty})
        self.targets, self.channels = targets.detach().float(), channels
        self.images = int(targets.shape[0])
        self.lam = 0.0

    def terms(self, acts) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(dot, ||h||_1, mean rho), each (K,)."""
        a = acts[self.layer].float()
        a = a.flatten(2).mean(2) if a.dim() > 2 else a
        t = self.targets.to(a.device)
        top = self.channels.to(a.device)
        dot = (a.gather(1, top) * t.gather(1, top)).sum(1)
        l1 = acts[input_key(self.penalty)].float().abs().flatten(1).sum(1)
        return dot, l1, barron_rho(a - t).mean(1)

    def __call__(self, acts, output):
        dot, l1, rho = self.terms(acts)
        return dot - self.lam * l1 - rho


def _check_images(images) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a (B, 3, H, W) tensor, got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[0] == 0 or images.shape[2] * images.shape[3] == 0:
        raise ValueError(f"images must be (B, 3, H, W) normalized model inputs, got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"images must be a floating-point tensor, got {images.dtype}")
    if not bool(torch.isfinite(images).all()):
        raise ValueError("images contain NaN or infinite values")
    if images.shape[0] < 2:
        raise ValueError("class-agnostic visualization clusters a set of images: give 2 or more")
    return images


def _check_count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


class ClassAgnostic(Reconstruction):
    """One image per facet of `x` (B, 3, H, W normalized model inputs) at `layer`, step by
    step (see _run.Reconstruction; `steps` sets the schedules' length). The constructor finds the
    facets: `facets`, `targets` (K, C), `channels` (K, top). only: the clusters this run
    optimizes (default all; a job shards them; each cluster's image does not depend on the
    others); `initial` (len(only), 3, size, size) is their start in the model's input space."""

    @renamed_keywords(images="x")
    def __init__(self, model: torch.nn.Module, x: torch.Tensor, layer: str, steps: int = 2001, *,
                 preset: str | StergiouPreset = "stergiou", size: int = 512, clusters: int = 10,
                 per_cluster: int = 10, top_channels: int = 50, pca: int = 50, penalty: str | None = None,
                 seed: int = 0, mean=IMAGENET_MEAN, std=IMAGENET_STD, backend: str | None = None,
                 only: list[int] | None = None) -> None:
        device = check_model(model)
        x = _check_images(x)
        check_steps(steps)
        for name, value in (("size", size), ("clusters", clusters), ("per_cluster", per_cluster),
                            ("top_channels", top_channels), ("pca", pca)):
            _check_count(name, value)
        if isinstance(preset, str):
            if preset not in PRESETS:
                raise ValueError(f"unknown class-agnostic preset {preset!r}; choose one of {', '.join(PRESETS)}")
            preset = StergiouPreset()
        elif not isinstance(preset, StergiouPreset):
            raise TypeError(f"preset must be a name or a StergiouPreset, got {type(preset).__name__}")
        find_module(model, layer)
        penalty = default_penalty(model, layer) if penalty is None else penalty
        find_module(model, penalty)
        self.model, self.layer, self.penalty, self.steps, self.preset = model, layer, penalty, steps, preset
        x = x.detach().to(device=device, dtype=torch.float32)
        if tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        with eval_mode(model):
            features = gap_features(model, x, layer)
        self.facets: Facets = find_facets(features, clusters, per_cluster, pca, seed)
        self.targets = blend(features, self.facets)
        self.channels = torch.topk(self.targets, min(top_channels, self.targets.shape[1]), dim=1).indices
        k = self.targets.shape[0]
        self.clusters = list(range(k)) if only is None else [int(c) for c in only]
        if not self.clusters or any(not 0 <= c < k for c in self.clusters):
            raise ValueError(f"only must name clusters in 0..{k - 1}, got {only!r}")
        chosen = torch.tensor(self.clusters, device=self.targets.device)
        self.goal = FacetMatch(layer, penalty, self.targets[chosen], self.channels[chosen])
        self.mean, self.std = norm_tensor(mean, "mean", device), norm_tensor(std, "std", device)
        self.lo, self.hi = -self.mean / self.std, (1 - self.mean) / self.std
        self.initial = torch.maximum(torch.minimum(blend(x, self.facets), self.hi), self.lo)[chosen.to(device)]
        self._distance = centre_distance(size, size, device=device)
        self._mask_scale = MASK_STD * size / REFERENCE_SIZE
        self._set_step(1)
        self.generator = torch.Generator().manual_seed(seed)
        self.start(self.initial, self._settings(1), self._prepare, self._pixels, backend, schedule=self._settings)
        if input_key(penalty) not in self._capture(self.initial):
            raise ValueError(f"the penalty module {penalty!r} does not run before layer {layer!r} ends the forward "
                             "pass; choose a module inside or before it")

    def _settings(self, step: int) -> StepSettings:
        return StepSettings(optimizer="nesterov", lr=self.preset.at(step, self.steps).lr, momentum=self.preset.momentum)

    def _set_step(self, step: int) -> Scheduled:
        v = self.preset.at(step, self.steps)
        self.mask = centre_mask(self._distance, v.mask_sigma * self._mask_scale).view(1, 1, *self._distance.shape)
        self.goal.lam = v.penalty_weight
        return v

    def _prepare(self, z: torch.Tensor) -> torch.Tensor:
        """z itself, with its gradient multiplied by the centre mask."""
        fixed = z.detach()
        return fixed + self.mask * (z - fixed)

    def _pixels(self, z: torch.Tensor) -> torch.Tensor:
        return (z * self.std + self.mean).clamp(0, 1)

    def _filter(self, fn) -> None:
        """x = fn(x) in [0, 1] pixels, x in the model's input space."""
        self.ascent.apply(lambda z: (fn(self._pixels(z)) - self.mean) / self.std)

    def before_step(self, step: int) -> None:
        v, p = self._set_step(step), self.preset
        if p.reset_momentum:
            self.ascent.m = torch.zeros_like(self.ascent.m)
        if step % p.filter_every == 0:
            def blur(x):
                x = self.mask * gaussian_blur(x, v.blur_sigma) + (1 - self.mask) * x
                return (x + p.brightness).clamp(0, 1) if p.brightness and step % p.brightness_every == 0 else x
            self._filter(blur)

    def after_step(self, step: int) -> None:
        self.ascent.apply(lambda z: torch.maximum(torch.minimum(z, self.hi), self.lo))
        p = self.preset
        if step % p.filter_every == 0:
            weight = 0.5 / self.preset.at(step, self.steps).denoise_weight
            self._filter(lambda x: self.mask * tv_denoise(x, weight, p.denoise_iterations) + (1 - self.mask) * x)

    def _capture(self, z: torch.Tensor) -> dict:
        with eval_mode(self.model), torch.no_grad():
            acts, _ = capture(self.model, z, self.goal)
        return acts

    def objective(self, z: torch.Tensor | None = None) -> torch.Tensor:
        """(K,) the score (the negated loss, at the current lambda) of z (K, 3, size, size) in the
        model's input space, by default the current images."""
        return self.goal(self._capture(self.ascent.x if z is None else z), None)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "members": [m.tolist() for m in self.facets.members],
                "clusters": self.clusters}

    def load_state_dict(self, state: dict) -> None:
        if "members" in state and state["members"] != [m.tolist() for m in self.facets.members]:
            raise ValueError("the checkpoint was made from other facets (other images, layer or seed)")
        if "clusters" in state and state["clusters"] != self.clusters:
            raise ValueError(f"the checkpoint holds clusters {state['clusters']}, this run optimizes {self.clusters}")
        super().load_state_dict(state)
        self._set_step(max(self.step, 1))  # the last step's lambda and mask, as after run()


@dataclass(frozen=True)
class ClassAgnosticResult:
    """images: (K, 3, size, size) in [0, 1], one per cluster, and start_images, the weighted blends
    they started from; per cluster k: members[k] (n_k,)
    indices into the input images (nearest the centre first), distances[k] and weights[k]
    (softmax(1 / d)) float64; channels (K, top) the target channels, targets (K, C) the GAP
    targets; labels (B,) the cluster of each input image, embedding (B, 2) their t-SNE
    coordinates; start_scores and scores (K,) the objective of the start and final images (at
    the last step's lambda)."""

    images: torch.Tensor
    start_images: torch.Tensor
    members: list[torch.Tensor]
    distances: list[torch.Tensor]
    weights: list[torch.Tensor]
    channels: torch.Tensor
    targets: torch.Tensor
    labels: torch.Tensor
    embedding: torch.Tensor
    start_scores: torch.Tensor
    scores: torch.Tensor


@renamed_keywords(images="x")
def class_agnostic(model: torch.nn.Module, x: torch.Tensor, layer: str, steps: int = 2001, *,
                   preset: str | StergiouPreset = "stergiou", size: int = 512, clusters: int = 10,
                   per_cluster: int = 10, top_channels: int = 50, pca: int = 50, penalty: str | None = None,
                   seed: int = 0, mean: tuple[float, ...] = IMAGENET_MEAN,
                   std: tuple[float, ...] = IMAGENET_STD, backend: str | None = None,
                   progress: bool = True) -> ClassAgnosticResult:
    """Class-agnostic visualization (Stergiou 2021) of `layer` from a set of images: one image per
    cluster of the images' features (see the module docstring).

    Args:
        model: the CNN (eval mode).
        x: (B >= 2, 3, H, W) normalized model inputs (0.1 called this `images=`; still accepted,
            with a DeprecationWarning).
        layer: the module whose features are clustered and maximized.
        steps: optimization steps per cluster image.
        preset: "stergiou" or a StergiouPreset.
        size: the side of the (size, size) output images.
        clusters: k-means clusters (at most B).
        per_cluster: images blended into each cluster's target.
        top_channels: channels kept per target.
        pca: PCA components before t-SNE.
        penalty: the module whose input gets the L1 penalty (default: the last convolution
            inside `layer`).
        seed: RNG seed of the clustering (t-SNE, k-means).
        mean: the input normalization's per-channel mean.
        std: the input normalization's per-channel standard deviation.
        backend: kernel backend (None: the fastest for the device).
        progress: a tqdm bar.

    Returns:
        ClassAgnosticResult: images (K, 3, size, size) in [0, 1] and what made them.
    """
    run = ClassAgnostic(model, x, layer, steps, preset=preset, size=size, clusters=clusters,
                        per_cluster=per_cluster, top_channels=top_channels, pca=pca, penalty=penalty, seed=seed,
                        mean=mean, std=std, backend=backend)
    with tqdm(total=steps, desc="class-agnostic", disable=not progress, leave=False) as bar:
        run.run(steps, bar.update)
    f = run.facets
    return ClassAgnosticResult(run.images(), run.image_of(run.initial), f.members, f.distances, f.weights,
                               run.channels, run.targets, f.labels, f.embedding, run.objective(run.initial),
                               run.objective())
