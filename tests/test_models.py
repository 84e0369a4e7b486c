"""Default model, sample photos, layer lookup and feature capture."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import featvis_fast as fv


@pytest.fixture(scope="module")
def default_model():
    return fv.load_model()


def test_sample_images_are_real_photos():
    names = fv.sample_images()
    assert {"chelsea", "coffee", "astronaut"} <= set(names)
    img = fv.sample_image("chelsea")
    assert img.mode == "RGB" and img.size == (451, 300)
    with pytest.raises(ValueError, match="unknown sample image 'dog'"):
        fv.sample_image("dog")


@pytest.mark.parametrize("name,label", [("chelsea", 285), ("coffee", 967)])
def test_default_model_classifies_sample_photos(default_model, name, label):
    model, preprocess = default_model
    x = preprocess(fv.sample_image(name))
    assert x.shape == (1, 3, 224, 224) and not model.training
    with torch.no_grad():
        assert int(model(x).argmax()) == label
    assert sum(p.numel() for p in model.parameters()) == 4652008


def test_extract_layers_of_default_model(default_model):
    model, preprocess = default_model
    x = preprocess(fv.sample_image("coffee"))
    names = fv.layer_names(model)
    assert "_blocks.10" in names and "_conv_head" in names and "" not in names
    f = fv.extract(model, x, "_blocks.10")
    assert f.shape == (1, 112, 14, 14)
    d = fv.extract(model, x, ["_blocks.15", "_blocks.10"])
    assert list(d) == ["_blocks.15", "_blocks.10"] and d["_blocks.15"].shape == (1, 320, 7, 7)
    assert torch.equal(d["_blocks.10"], f)
    # high resolution: the image's own size
    big = fv.extract(model, preprocess(fv.sample_image("coffee"), size=None), "_blocks.10")
    assert big.shape == (1, 112, 25, 37)  # 400x600 photo, stride 16 with static "same" padding


def test_reused_module_calls(default_model):
    """EfficientNet's top-level _swish runs for the stem (32 ch) and the head (1280 ch)."""
    model, preprocess = default_model
    x = preprocess(fv.sample_image("chelsea"))
    assert fv.extract(model, x, "_swish").shape == (1, 32, 112, 112)
    assert fv.extract(model, x, "_swish", call=1).shape == (1, 1280, 7, 7)
    assert fv.extract(model, x, "_swish", call=-1).shape == (1, 1280, 7, 7)
    with pytest.raises(ValueError, match="ran 2 time"):
        fv.extract(model, x, "_swish", call=2)


class _InplaceNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, padding=1)
        self.conv2 = nn.Conv2d(5, 4, 3, padding=1)
        self.head = nn.Conv2d(4, 2, 1)
        self.head_calls = 0

    def forward(self, x):
        y = self.conv(x)
        y = torch.relu_(y)          # inplace, functional
        y = F.relu(self.conv2(y), inplace=True)
        self.head_calls += 1
        return self.head(y)


def test_capture_survives_inplace_relu_and_forward_stops_early():
    torch.manual_seed(0)
    net = _InplaceNet().eval()
    x = torch.randn(2, 3, 9, 11)
    pre_relu = net.conv(x)
    assert (pre_relu < 0).any()
    d = fv.extract(net, x, ["conv", "conv2"])
    assert torch.allclose(d["conv"], pre_relu)   # not rectified by the later inplace relu
    net.head_calls = 0
    out = fv.extract(net, x, "conv")
    assert torch.allclose(out, pre_relu)
    assert net.head_calls == 0, "the forward pass must stop after the last requested layer"
    fv.extract(net, x, "head")
    assert net.head_calls == 1


def test_extract_errors():
    net = _InplaceNet()
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(ValueError, match="unknown layer name 'conv3'; did you mean 'conv'"):
        fv.extract(net, x, "conv3")
    with pytest.raises(ValueError, match="no layer"):
        fv.extract(net, x, [])
    with pytest.raises(TypeError, match="torch.Tensor"):
        fv.extract(net, "image", "conv")
    with pytest.raises(ValueError, match="call"):
        fv.extract(net, x, "conv", call=-2)
    with pytest.raises(ValueError, match="unknown model"):
        fv.load_model("resnet50")
