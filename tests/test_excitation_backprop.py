"""Excitation backprop and its contrastive form against TorchRay 1.0 (PyPI torchray, --no-deps).

TorchRay runs one image at a time; ours runs the batch. Float64 maps must equal TorchRay's to
1e-9 relative (two calls), float32 within 2x TorchRay's own float32 error against float64,
contiguous or channels-last, whichever is larger (the zoo's bar: our CPU passes run channels-last).
"""
from __future__ import annotations

import copy
import warnings

import _zoo
import pytest
import torch
import torch.nn as nn

import featvis_fast as fv

if not _zoo.has_torchvision():
    pytest.skip("needs torchvision model definitions (see design.md)", allow_module_level=True)
_zoo.torchvision_models()  # before torchray, which imports torchvision
torchray_ebp = pytest.importorskip("torchray.attribution.excitation_backprop")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    b = b.double()
    return ((a.double() - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()


@pytest.fixture(scope="module")
def vgg():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        model = _zoo.realistic(_zoo.torchvision_models().vgg16(weights=None), 64, batch=2)
    x64 = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    m64 = copy.deepcopy(model).double()
    with torch.no_grad():
        target = m64(x64).argmax(1)
    return model, m64, x64, target


def torchray_maps(model, x, target, layer, contrast_layer=None):
    """TorchRay's map per image, (B, h, w); its calls freeze the parameters, so each gets a copy."""
    maps = []
    for i in range(x.shape[0]):
        image = x[i:i + 1].clone()
        if contrast_layer is None:
            m = torchray_ebp.excitation_backprop(copy.deepcopy(model), image, int(target[i]),
                                                 saliency_layer=layer or "")
        else:
            m = torchray_ebp.contrastive_excitation_backprop(copy.deepcopy(model), image, int(target[i]),
                                                             saliency_layer=layer, contrast_layer=contrast_layer)
        maps.append(m[:, 0])
    return torch.cat(maps)


CASES = [(None, None), ("features.23", None), ("features.16", None), ("features.23", "features.30")]


@pytest.mark.parametrize("layer, contrast_layer", CASES)
def test_matches_torchray_on_vgg16(vgg, layer, contrast_layer):
    m32, m64, x64, target = vgg
    kwargs = dict(contrastive=contrast_layer is not None, contrast_layer=contrast_layer)
    expected = torchray_maps(m64, x64, target, layer, contrast_layer)
    assert expected.abs().max() > 0, "a degenerate reference proves nothing"
    for call in range(2):
        got = fv.excitation_backprop(m64, x64, target, layer, **kwargs)
        assert got.shape == expected.shape and got.dtype == torch.float64
        assert rel_err(got, expected) <= 1e-9, f"float64 call {call}"
    x32 = x64.float()
    mcl = copy.deepcopy(m32).to(memory_format=torch.channels_last)  # the zoo bar: either layout's error
    torch_err = max(rel_err(torchray_maps(m, x, target, layer, contrast_layer), expected)
                    for m, x in ((m32, x32), (mcl, x32.contiguous(memory_format=torch.channels_last))))
    for call in range(2):
        err = rel_err(fv.excitation_backprop(m32, x32, target, layer, **kwargs), expected)
        assert err <= 2 * torch_err, f"float32 call {call}: {err:.2e} > 2 x TorchRay's {torch_err:.2e}"


def test_contrastive_map_is_the_positive_part_of_a_difference(vgg):
    _, m64, x64, target = vgg
    plain = fv.excitation_backprop(m64, x64, target, "features.23")
    contrastive = fv.excitation_backprop(m64, x64, target, "features.23", contrastive=True,
                                         contrast_layer="features.30")
    assert bool((contrastive >= 0).all()) and not torch.equal(contrastive, plain.clamp(min=0))


def test_signal_is_conserved_through_positive_layers():
    """Each layer passes on exactly the signal it receives (inputs >= 0, no biases)."""
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.ReLU(), nn.AvgPool2d(2),
                        nn.Conv2d(6, 6, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(),
                        nn.Linear(6 * 16, 4, bias=False)).double().eval()
    x = torch.rand(5, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    maps = fv.excitation_backprop(net, x, torch.tensor([0, 1, 2, 3, 0]))
    torch.testing.assert_close(maps.sum(dim=(1, 2)), torch.ones(5, dtype=torch.float64), rtol=1e-9, atol=0)


def test_upsample_and_batch_agree_with_one_image_at_a_time(vgg):
    _, m64, x64, target = vgg
    batched = fv.excitation_backprop(m64, x64, target, "features.23", upsample=True)
    assert batched.shape == (3, 64, 64)
    single = fv.excitation_backprop(m64, x64[1:2], target[1:2], "features.23", upsample=True)
    assert rel_err(batched[1:2], single) <= 1e-12


@pytest.mark.parametrize("kwargs, match", [
    (dict(layer="features.99"), "features"),
    (dict(layer="features.23", contrastive=True), "contrast_layer"),
    (dict(layer="features.23", contrastive=True, contrast_layer="nope"), "nope"),
])
def test_bad_input_gives_a_clear_error(vgg, kwargs, match):
    _, m64, x64, target = vgg
    with pytest.raises(ValueError, match=match):
        fv.excitation_backprop(m64, x64, target, **kwargs)
