"""Objectives for activation maximization (Erhan et al. 2009; Olah et al. 2017, Lucid): what a
batch of images is optimized to raise. Each objective maps the captured layer activations
{layer: (N, C, h, w)} and the model output (N, K) to per-image scores (N,), to be maximized.

    Channel(layer, c)         mean of channel c's map (c: int, or one per image: (N,) LongTensor)
    Neuron(layer, c, (y, x))  one activation (default position: the centre)
    DeepDream(layer)          mean squared activation of the whole layer
    ClassLogit(k)             the model output's k (int or (N,))
    Direction(layer, v)       the mean over positions of <v, activation> (v: (C,))
    Diversity(layer)          minus each image's mean cosine similarity of its Gram matrix to the
                              other images' (Lucid's diversity term; needs N > 1)
Objectives combine linearly: `a - 0.5 * b`, `2 * a + b`. Each([o_1, ..., o_N]) (objectives or strings; a
plain list means the same): image i maximizes o_i.
Strings (`parse`): "layer:37" channel, "layer:*" every channel (one image each), "layer:37@3,4"
neuron, "layer" DeepDream, "class:285" class logit; "+"/"-" combine terms.
"""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F


def input_key(module: str) -> str:
    """The key under which a module's input (objective.inputs) reaches the objective."""
    return f"{module}#input"


class Objective:
    """Per-image scores from activations; `layers` names the outputs that must be captured,
    `inputs` the modules whose inputs must be (as acts[input_key(name)])."""

    layers: frozenset[str] = frozenset()
    inputs: frozenset[str] = frozenset()
    needs_output: bool = False
    images: int | None = None  # the batch size the objective itself sets (one image per channel)

    def __call__(self, acts: dict[str, torch.Tensor], output: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def validate(self, shapes: dict[str, tuple[int, ...]], classes: int | None) -> None:
        """Raise ValueError when a channel, position or class does not exist (shapes: per layer (C, h, w))."""

    @property
    def _on_device(self) -> dict:
        """This objective's constants on the device, made on first use (see _per_image)."""
        return self.__dict__.setdefault("_device_cache", {})

    def __add__(self, other: "Objective") -> "Objective":
        return Sum([(1.0, self), (1.0, _objective(other))])

    def __sub__(self, other: "Objective") -> "Objective":
        return Sum([(1.0, self), (-1.0, _objective(other))])

    def __mul__(self, weight: float) -> "Objective":
        return Sum([(float(weight), self)])

    __rmul__ = __mul__

    def __neg__(self) -> "Objective":
        return Sum([(-1.0, self)])


def _objective(o) -> Objective:
    if not isinstance(o, Objective):
        raise TypeError(f"objectives combine with objectives, not {type(o).__name__}")
    return o


class Sum(Objective):
    def __init__(self, terms: list[tuple[float, Objective]]) -> None:
        flat = []
        for w, t in terms:
            flat += [(w * w2, t2) for w2, t2 in t.terms] if isinstance(t, Sum) else [(w, t)]
        self.terms = flat
        self.layers = frozenset().union(*(t.layers for _, t in flat))
        self.inputs = frozenset().union(*(t.inputs for _, t in flat))
        self.needs_output = any(t.needs_output for _, t in flat)
        sizes = {t.images for _, t in flat if t.images is not None}
        if len(sizes) > 1:
            raise ValueError(f"combined objectives ask for different batch sizes: {sorted(sizes)}")
        self.images = sizes.pop() if sizes else None

    def __call__(self, acts, output):
        return sum(w * t(acts, output) for w, t in self.terms)

    def validate(self, shapes, classes):
        for _, t in self.terms:
            t.validate(shapes, classes)


def _per_image(cache: dict, index, n: int, device) -> torch.Tensor:
    """(n,) long on `device`, made once per (n, device) in the objective's `cache`, so that a step
    makes no host-to-device copy (a CUDA graph capture forbids one)."""
    key = (n, str(device))
    if key not in cache:
        t = torch.as_tensor(index, dtype=torch.long, device=device)
        cache[key] = t.expand(n) if t.dim() == 0 else t
    return cache[key]


class Channel(Objective):
    def __init__(self, layer: str, channel) -> None:
        self.layer, self.channel = layer, channel
        self.layers = frozenset({layer})
        if isinstance(channel, torch.Tensor) and channel.dim() == 1:
            self.images = int(channel.numel())

    def __call__(self, acts, output):
        a = acts[self.layer]
        c = _per_image(self._on_device, self.channel, a.shape[0], a.device)
        return a[torch.arange(a.shape[0], device=a.device), c].float().mean(dim=(1, 2))

    def validate(self, shapes, classes):
        channels = shapes[self.layer][0]
        c = torch.as_tensor(self.channel)
        if bool(((c < 0) | (c >= channels)).any()):
            raise ValueError(f"channel {c.tolist()} is out of range for layer {self.layer!r} with {channels} channels")


class Neuron(Channel):
    def __init__(self, layer: str, channel, position: tuple[int, int] | None = None) -> None:
        super().__init__(layer, channel)
        self.position = position

    def __call__(self, acts, output):
        a = acts[self.layer]
        y, x = self.position if self.position is not None else (a.shape[2] // 2, a.shape[3] // 2)
        c = _per_image(self._on_device, self.channel, a.shape[0], a.device)
        return a[torch.arange(a.shape[0], device=a.device), c, y, x].float()

    def validate(self, shapes, classes):
        super().validate(shapes, classes)
        _, h, w = shapes[self.layer]
        if self.position is not None and not (0 <= self.position[0] < h and 0 <= self.position[1] < w):
            raise ValueError(f"position {self.position} is outside layer {self.layer!r}'s {h}x{w} map")


class DeepDream(Objective):
    def __init__(self, layer: str) -> None:
        self.layer, self.layers = layer, frozenset({layer})

    def __call__(self, acts, output):
        return acts[self.layer].float().pow(2).mean(dim=(1, 2, 3))


class ClassLogit(Objective):
    needs_output = True

    def __init__(self, cls) -> None:
        self.cls = cls
        if isinstance(cls, torch.Tensor) and cls.dim() == 1:
            self.images = int(cls.numel())

    def __call__(self, acts, output):
        flat = output.reshape(output.shape[0], -1)
        k = _per_image(self._on_device, self.cls, flat.shape[0], flat.device)
        return flat[torch.arange(flat.shape[0], device=flat.device), k].float()

    def validate(self, shapes, classes):
        k = torch.as_tensor(self.cls)
        if classes is not None and bool(((k < 0) | (k >= classes)).any()):
            raise ValueError(f"class {k.tolist()} is out of range for an output with {classes} classes")


class Direction(Objective):
    def __init__(self, layer: str, vector: torch.Tensor) -> None:
        self.layer, self.vector, self.layers = layer, vector, frozenset({layer})

    def __call__(self, acts, output):
        a = acts[self.layer].float()
        key = (a.device, a.dtype)
        if key not in self._on_device:  # one copy per device, not one per step
            self._on_device[key] = self.vector.to(device=a.device, dtype=a.dtype).view(1, -1, 1, 1)
        v = self._on_device[key]
        return (a * v).sum(dim=1).mean(dim=(1, 2))

    def validate(self, shapes, classes):
        if self.vector.dim() != 1 or self.vector.numel() != shapes[self.layer][0]:
            raise ValueError(f"a direction for layer {self.layer!r} must be ({shapes[self.layer][0]},), "
                             f"got {tuple(self.vector.shape)}")


class Diversity(Objective):
    def __init__(self, layer: str) -> None:
        self.layer, self.layers = layer, frozenset({layer})

    def __call__(self, acts, output):
        a = acts[self.layer].float()
        n, c = a.shape[:2]
        if n < 2:
            raise ValueError("the diversity objective compares images: it needs a batch of 2 or more")
        flat = a.reshape(n, c, -1)
        gram = F.normalize((flat @ flat.transpose(1, 2)).reshape(n, -1), dim=1)
        sim = gram @ gram.T
        return -(sim.sum(dim=1) - sim.diagonal()) / (n - 1)


def _plain_channel(o: Objective) -> "Channel | None":
    """o as a Channel with one int channel (also when wrapped in a weight-1 Sum), else None."""
    if isinstance(o, Sum) and len(o.terms) == 1 and o.terms[0][0] == 1.0:
        o = o.terms[0][1]
    return o if type(o) is Channel and isinstance(o.channel, int) else None


class Each(Objective):
    """Image i maximizes objectives[i] (a job's batch of unrelated targets: one image per target).

    Args:
        objectives: Objectives or objective strings ("layer:37", "class:285", "a:1 - 0.5*b"), one
            per image; a plain list given to maximize() means the same.
    """

    def __init__(self, objectives) -> None:
        if isinstance(objectives, (str, Objective)):
            raise TypeError("Each takes a list of objectives (one per image), not a single objective")
        self.objectives = [parse(o) if isinstance(o, str) else _objective(o) for o in objectives]
        if not self.objectives:
            raise ValueError("Each needs at least one objective")
        self.layers = frozenset().union(*(o.layers for o in self.objectives))
        self.inputs = frozenset().union(*(o.inputs for o in self.objectives))
        self.needs_output = any(o.needs_output for o in self.objectives)
        self.images = len(self.objectives)
        # one channel per image of one layer (a job's channel sweep): one gather, not a loop per image
        plain = [_plain_channel(o) for o in self.objectives]
        layers = {c.layer for c in plain if c is not None}
        self._sweep = (Channel(layers.pop(), torch.tensor([c.channel for c in plain]))
                       if None not in plain and len(layers) == 1 else None)

    def __call__(self, acts, output):
        if self._sweep is not None:
            return self._sweep(acts, output)
        return torch.cat([o({k: a[i:i + 1] for k, a in acts.items()}, None if output is None else output[i:i + 1])
                          for i, o in enumerate(self.objectives)])

    def validate(self, shapes, classes):
        for o in self.objectives:
            if o.images not in (None, 1):
                raise ValueError(f"each target makes one image; {o!r} asks for {o.images}")
            o.validate(shapes, classes)


_EXPONENT = re.compile(r"^[0-9.]+[eE]$")
_WEIGHTED = re.compile(r"^([-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?)\*(.+)$")


def _split_weight(term: str) -> tuple[float, str]:
    """"0.5*layer:3" -> (0.5, "layer:3"); a term without a leading number* has weight 1."""
    m = _WEIGHTED.match(term)
    if m is None:
        if "*" in term.rstrip("*") and not term.endswith(":*"):
            raise ValueError(f"bad objective weight in {term!r}: write it as number*term")
        return 1.0, term
    return float(m.group(1)), m.group(2)


def _terms(spec: str):
    """(sign, term) for each +/- separated term of a string objective."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"an objective is an Objective or a string such as 'layer:37' or 'class:285', got {spec!r}")
    sign, term = 1.0, ""
    for ch in spec.replace(" ", ""):
        # a sign right after ':', '@', ',', '*' or a number's exponent belongs to the term
        if ch in "+-" and term and not term.endswith(("@", ",", ":", "*")) and not _EXPONENT.match(term):
            yield sign, term
            sign, term = (1.0 if ch == "+" else -1.0), ""
        elif ch in "+-" and not term:
            sign = -sign if ch == "-" else sign
        else:
            term += ch
    if not term:
        raise ValueError(f"objective {spec!r} ends with a sign")
    yield sign, term


def layer_names(spec) -> list[str]:
    """The layers an objective reads (for strings: before parsing, e.g. to look up channel counts);
    a list or tuple of objectives (one per image, see Each): the layers of all of them."""
    if isinstance(spec, Objective):
        return sorted(spec.layers)
    if isinstance(spec, (list, tuple)):
        return list(dict.fromkeys(n for o in spec for n in layer_names(o)))
    names = []
    for _, term in _terms(spec):
        body = _split_weight(term)[1]
        if not body.startswith("class:"):
            names.append(body.rsplit(":", 1)[0] if ":" in body else body)
    return list(dict.fromkeys(names))


def parse(spec, channels: dict[str, int] | None = None) -> Objective:
    """An objective from a string (see the module docstring); a list or tuple of objectives or
    strings is Each of them (image i maximizes item i). channels: per layer, to expand "layer:*"."""
    if isinstance(spec, Objective):
        return spec
    if isinstance(spec, (list, tuple)):
        return Each([parse(o, channels) for o in spec])
    total = None
    for sign, term in _terms(spec):
        piece = sign * _term(term, channels)
        total = piece if total is None else total + piece
    return total


def _term(term: str, channels: dict[str, int] | None) -> Objective:
    weight, term = _split_weight(term)
    if term.startswith("class:"):
        return weight * ClassLogit(_int(term[6:], term))
    if ":" not in term:
        return weight * DeepDream(term)
    layer, rest = term.rsplit(":", 1)
    if rest == "*":
        if channels is None or layer not in channels:
            raise ValueError(f"'{layer}:*' needs the layer's channel count (resolve the objective against the model)")
        return weight * Channel(layer, torch.arange(channels[layer]))
    if "@" in rest:
        c, pos = rest.split("@", 1)
        if pos.count(",") != 1:
            raise ValueError(f"bad objective {term!r}: a neuron is layer:channel@y,x")
        y, x = (_int(p, term) for p in pos.split(","))
        return weight * Neuron(layer, _int(c, term), (y, x))
    return weight * Channel(layer, _int(rest, term))


def _int(text: str, term: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"bad objective {term!r}: {text!r} is not an integer") from None
