"""One vocabulary across the public API (issue 15): the same names and positions for model,
inputs, target, layer, seed / generator and backend in every method, and the 0.1 names still
working for one release with a DeprecationWarning that names the new one."""
import inspect
import warnings
from pathlib import Path

import pytest
import tomllib
import torch
import torch.nn as nn

import featvis_fast as fv
from featvis_fast import jobs
from featvis_fast.dissection import PlantedNet, SyntheticShapes
from featvis_fast.reconstruction.class_agnostic import ClassAgnostic

TARGET_METHODS = (fv.saliency, fv.deconvnet, fv.guided_backprop, fv.gradcam, fv.guided_gradcam, fv.lrp,
                  fv.occlusion, fv.rise)
LAYER_METHODS = (fv.invert, fv.class_agnostic, fv.extract)
EVERY_METHOD = TARGET_METHODS + (fv.invert, fv.class_agnostic, fv.maximize, fv.dissect)


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1),
                                      nn.ReLU())
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def _positional(func) -> list[str]:
    return [p.name for p in inspect.signature(func).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def test_every_method_takes_model_inputs_target_then_layer():
    for func in TARGET_METHODS:
        assert _positional(func)[:3] == ["model", "x", "target"], func.__name__
    for func in (fv.gradcam, fv.guided_gradcam):
        assert _positional(func)[3] == "layer", func.__name__
    for func in LAYER_METHODS:
        assert _positional(func)[:3] == ["model", "x", "layer"], func.__name__
    assert _positional(fv.dissect)[:3] == ["model", "dataset", "layer"]
    assert _positional(fv.maximize)[:2] == ["model", "objective"]


def test_backend_is_a_keyword_everywhere_and_seed_is_always_an_rng_seed():
    for func in EVERY_METHOD:
        params = inspect.signature(func).parameters
        assert params["backend"].default is None, func.__name__
        if "seed" in params:
            assert params["seed"].default == 0, f"{func.__name__}: seed= is an RNG seed (an int)"
        if "generator" in params:
            assert params["generator"].default is None, func.__name__
    for func in (fv.saliency, fv.deconvnet, fv.guided_backprop, fv.gradcam, fv.guided_gradcam):
        assert inspect.signature(func).parameters["grad_seed"].default == "onehot", func.__name__


def test_target_type_is_exported_and_documented():
    assert fv.Target is fv.engine.Target
    assert fv.GRAD_SEEDS == ("onehot", "activation")
    doc = (Path(__file__).parents[1] / "docs" / "api.md").read_text()
    assert "featvis_fast.Target" in doc and "Renamed in 0.2" in doc


def test_version_matches_the_package_metadata():
    meta = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert fv.__version__ == meta["project"]["version"]


@pytest.mark.parametrize("method", ["saliency", "deconvnet", "guided_backprop", "gradcam", "guided_gradcam"])
def test_old_seed_keyword_warns_and_means_grad_seed(method):
    model, x = SmallNet().double().eval(), torch.randn(2, 3, 9, 11, dtype=torch.float64)
    func = getattr(fv, method)
    layer = {"layer": "features.2"} if "gradcam" in method else {}
    new = func(model, x, 1, grad_seed="activation", **layer)
    with pytest.warns(DeprecationWarning, match=r"seed=\.\.\.\) is deprecated .*use grad_seed=") as record:
        old = func(model, x, 1, seed="activation", **layer)
    assert record[0].filename == __file__, "the warning should point at the caller"
    assert torch.equal(new, old)
    assert not torch.equal(new, func(model, x, 1, **layer)), "grad_seed must change the result"
    with pytest.raises(TypeError, match="both seed= .* and grad_seed="):
        func(model, x, 1, seed="activation", grad_seed="onehot", **layer)


@pytest.mark.parametrize("method", ["saliency", "gradcam"])
def test_an_unknown_grad_seed_is_refused_before_any_pass(method):
    model = SmallNet().double().eval()
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    layer = {"layer": "features.2"} if method == "gradcam" else {}
    with pytest.raises(ValueError, match=r"grad_seed must be one of \('onehot', 'activation'\), got 'ones'"):
        getattr(fv, method)(model, torch.randn(1, 3, 8, 8, dtype=torch.float64), grad_seed="ones", **layer)
    assert calls == []


def test_dissect_in_the_old_order_warns_and_gives_the_same_result():
    data = SyntheticShapes(n=24, seed=5, batch_size=8)
    kw = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), progress=False, top_n=2)
    new = fv.dissect(PlantedNet(), data, "detectors", **kw)
    with pytest.warns(DeprecationWarning, match=r"dissect\(model, layer, dataset\) is deprecated.*"
                                                r"dissect\(model, dataset, layer\)") as record:
        old = fv.dissect(PlantedNet(), "detectors", data, **kw)
    assert record[0].filename == __file__
    assert torch.equal(new.thresholds, old.thresholds) and torch.equal(new.iou, old.iou)
    with pytest.raises(TypeError, match="layer must be a module name"):
        fv.dissect(PlantedNet(), data, 3, **kw)


def test_class_agnostic_images_keyword_warns_and_means_x():
    model = SmallNet().eval()
    torch.manual_seed(1)
    x = torch.randn(6, 3, 16, 16)
    kw = dict(size=16, clusters=2, per_cluster=2, top_channels=4, pca=3, penalty="features.2")
    new = ClassAgnostic(model, x, "features.2", 3, **kw)
    with pytest.warns(DeprecationWarning, match=r"ClassAgnostic.__init__\(images=\.\.\.\) is deprecated.*use x="):
        old = ClassAgnostic(model, images=x, layer="features.2", steps=3, **kw)
    assert torch.equal(new.targets, old.targets)
    with pytest.warns(DeprecationWarning, match=r"class_agnostic\(images=\.\.\.\) is deprecated.*use x="):
        result = fv.class_agnostic(model, images=x, layer="features.2", steps=2, progress=False, **kw)
    assert result.images.shape == (2, 3, 16, 16)


def test_jobs_unit_is_the_work_unit_under_its_old_name():
    with pytest.warns(DeprecationWarning, match=r"featvis_fast.jobs.Unit is deprecated.*jobs.WorkUnit"):
        old = jobs.Unit
    assert old is jobs.WorkUnit
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert jobs.WorkUnit(0, ["a"], lambda seed: None).names == ["a"]
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        jobs.Nothing  # noqa: B018


def test_similarity_overlay_under_its_old_cli_name():
    from featvis_fast import cli, similarity

    with pytest.warns(DeprecationWarning, match=r"featvis_fast.cli.similarity_overlay is deprecated.*"
                                                r"featvis_fast.similarity.similarity_overlay"):
        old = cli.similarity_overlay
    assert old is similarity.similarity_overlay
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        cli.nothing  # noqa: B018


ISSUE_METRICS = ("deletion", "insertion", "pixel_flipping", "region_perturbation", "road", "faithfulness_correlation",
                 "infidelity", "max_sensitivity", "avg_sensitivity", "local_lipschitz", "pointing_game",
                 "energy_pointing_game", "attribution_localisation", "top_k_intersection", "mprt", "random_logit",
                 "sparseness", "complexity")


def test_every_metric_follows_the_call_convention():
    """fv.metrics.NAME(model, x, attributions, target, ...) for metrics that run the model,
    NAME(attributions, ...) for those that do not; random draws from keyword-only seed / generator."""
    from featvis_fast.metrics.registry import REGISTRY

    assert set(REGISTRY) == set(ISSUE_METRICS)
    for name in ISSUE_METRICS:
        fn = getattr(fv.metrics, name)
        assert REGISTRY[name].fn is fn
        params = inspect.signature(fn).parameters
        first = {"model": ["model", "x", "attributions", "target"], "explain": ["model", "x", "attributions", "target"],
                 "attributions": ["attributions"], "regions": ["attributions", "boxes_or_masks"]}[REGISTRY[name].call]
        assert list(params)[:len(first)] == first, name
        if "seed" in params:
            assert params["seed"].kind is params["generator"].kind is inspect.Parameter.KEYWORD_ONLY, name
        if REGISTRY[name].call == "explain":
            assert {"explain", "explain_kwargs"} <= set(params), name
        # one word per concept across the metrics
        assert not {"normalize", "substrate", "noise", "std", "nr_runs", "absolute"} & set(params), name
