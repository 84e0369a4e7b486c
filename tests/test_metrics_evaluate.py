"""featvis_fast.metrics.evaluate (resumable method x metric runs), write_report and `featvis evaluate`."""
import csv
import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats

import featvis_fast as fv
from featvis_fast.cli import main
from featvis_fast.metrics import registry


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, stride=2, padding=1),
        torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 5)).eval()


def _images(n=5, side=16):
    g = torch.Generator().manual_seed(1)
    return [(f"img{i}", torch.randn(1, 3, side, side, generator=g)) for i in range(n)]


def _regions(n=5, side=16):
    masks = torch.zeros(n, side, side, dtype=torch.bool)
    masks[:, 4:12, 3:9] = True
    return masks


METRICS = ["deletion", "sparseness", "pointing_game"]
KW = dict(methods=["saliency", "gradcam"], metrics=METRICS, batch_size=2,
          method_kwargs={"gradcam": {"layer": "2"}}, metric_settings={"deletion": {"step": 64}}, progress=False)


@pytest.fixture
def counted(monkeypatch):
    """Every registry metric wrapped to count its calls (and to fail on demand)."""
    calls = {"n": 0, "fail_at": None}

    def wrap(fn):
        def counting(*args, **kwargs):
            calls["n"] += 1
            if calls["fail_at"] == calls["n"]:
                raise RuntimeError("interrupted")
            return fn(*args, **kwargs)
        return counting

    table = {name: dataclasses.replace(spec, fn=wrap(spec.fn)) for name, spec in registry.REGISTRY.items()}
    monkeypatch.setattr(registry, "REGISTRY", table)
    from featvis_fast.metrics import report, runner
    monkeypatch.setattr(runner, "REGISTRY", table)
    monkeypatch.setattr(report, "REGISTRY", table)
    return calls


def _scores(cells):
    return {(c.method, c.metric): c.scores for c in cells}


def test_evaluate_scores_each_cell_like_the_metric_itself(tmp_path):
    model, images = _model(), _images()
    cells = fv.metrics.evaluate(model, images, out=tmp_path, regions=_regions(), **KW)
    assert [(c.method, c.metric) for c in cells] == [(m, k) for m in KW["methods"] for k in METRICS]
    x = torch.cat([im for _, im in images])
    target = model(x).argmax(1)
    a = fv.saliency(model, x, target)
    expected = torch.cat([fv.metrics.deletion(model, x[k:k + 2], a[k:k + 2], target[k:k + 2], step=64).scores
                          for k in range(0, 5, 2)])
    got = _scores(cells)
    torch.testing.assert_close(got[("saliency", "deletion")], expected.double(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(got[("saliency", "sparseness")], fv.metrics.sparseness(a).double(), rtol=1e-6,
                               atol=1e-7)
    torch.testing.assert_close(got[("saliency", "pointing_game")],
                               fv.metrics.pointing_game(a, _regions()).double())
    assert cells[0].names == [n for n, _ in images] and cells[0].curves.shape[0] == 5


def test_a_rerun_computes_only_the_missing_cells(tmp_path, counted):
    model, images = _model(), _images()
    first = fv.metrics.evaluate(model, images, out=tmp_path, regions=_regions(), **KW)
    assert counted["n"] == 2 * 3 * 3  # methods x metrics x batches
    (tmp_path / "cells" / "gradcam" / "sparseness" / "batch-1.json").unlink()
    again = fv.metrics.evaluate(model, images, out=tmp_path, regions=_regions(), **KW)
    assert counted["n"] == 2 * 3 * 3 + 1
    for (key, value), (_, other) in zip(_scores(first).items(), _scores(again).items()):
        torch.testing.assert_close(value, other, rtol=0, atol=0, equal_nan=True, msg=str(key))


def test_an_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path, counted):
    model, images = _model(), _images()
    whole = fv.metrics.evaluate(model, images, out=tmp_path / "whole", regions=_regions(), **KW)
    counted["n"], counted["fail_at"] = 0, 7
    with pytest.raises(RuntimeError, match="interrupted"):
        fv.metrics.evaluate(model, images, out=tmp_path / "cut", regions=_regions(), **KW)
    done = sorted((tmp_path / "cut" / "cells").rglob("*.json"))
    assert len(done) == 6  # the cells before the failure were kept
    counted["fail_at"] = None
    resumed = fv.metrics.evaluate(model, images, out=tmp_path / "cut", regions=_regions(), **KW)
    for (key, value), (_, other) in zip(_scores(whole).items(), _scores(resumed).items()):
        torch.testing.assert_close(value, other, rtol=0, atol=0, equal_nan=True, msg=str(key))


def test_other_settings_and_bad_requests_are_refused(tmp_path):
    model, images = _model(), _images()
    fv.metrics.evaluate(model, images, out=tmp_path, regions=_regions(), **KW)
    with pytest.raises(ValueError, match="seed"):
        fv.metrics.evaluate(model, images, out=tmp_path, regions=_regions(), seed=1, **KW)
    kw = {**KW, "metrics": ["pointing_game"]}
    with pytest.raises(ValueError, match="need object boxes"):
        fv.metrics.evaluate(model, images, out=tmp_path / "b", **kw)
    with pytest.raises(ValueError, match="unknown metrics 'aopc'"):
        fv.metrics.evaluate(model, images, out=tmp_path / "c", **{**KW, "metrics": ["aopc"]})
    with pytest.raises(ValueError, match="unknown methods"):
        fv.metrics.evaluate(model, images, out=tmp_path / "d", **{**KW, "methods": ["shap"]})
    with pytest.raises(ValueError, match="regions must be"):
        fv.metrics.evaluate(model, images, out=tmp_path / "e", regions=_regions()[:3], **KW)
    with pytest.raises(ValueError, match="share a name"):
        fv.metrics.evaluate(model, images[:2] + images[:1], out=tmp_path / "f", **kw, regions=_regions(3))
    with pytest.raises(ValueError, match="needs layer="):
        fv.metrics.evaluate(model, images, out=tmp_path / "g", **{**KW, "method_kwargs": {}}, regions=_regions())


def test_report_holds_means_intervals_rankings_and_curves(tmp_path):
    model, images = _model(), _images()
    cells = fv.metrics.evaluate(model, images, out=tmp_path, regions=_regions(), **KW)
    page = fv.metrics.write_report(cells, tmp_path, title="test report")
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert len(rows) == 6
    for row in rows:
        values = next(c.scores for c in cells if (c.method, c.metric) == (row["method"], row["metric"])).numpy()
        mean, sd = values.mean(), values.std(ddof=1)
        half = stats.t.ppf(0.975, len(values) - 1) * sd / math.sqrt(len(values))
        assert float(row["mean"]) == pytest.approx(mean, rel=1e-12)
        assert float(row["ci_low"]) == pytest.approx(mean - half, rel=1e-12, abs=1e-15)
        assert float(row["ci_high"]) == pytest.approx(mean + half, rel=1e-12, abs=1e-15)
    for metric in ("deletion", "sparseness"):
        ranked = sorted((r for r in rows if r["metric"] == metric), key=lambda r: int(r["rank"]))
        means = [float(r["mean"]) for r in ranked]
        assert means == sorted(means, reverse=registry.REGISTRY[metric].higher_is_better)
    results = json.loads((tmp_path / "results.json").read_text())
    assert {c["metric"] for c in results["cells"]} == set(METRICS)
    deletion = next(c for c in results["cells"] if c["method"] == "saliency" and c["metric"] == "deletion")
    np.testing.assert_allclose(deletion["mean_curve"], cells[0].curves.mean(0).numpy())
    text = page.read_text()
    assert "<title>test report</title>" in text and text.count("<polyline") == 2  # one deletion curve per method
    assert "saliency" in text and "gradcam" in text and "pointing_game" in text


def test_featvis_evaluate_on_a_folder_with_boxes_resumes(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    sizes = {"a.png": (96, 64), "b.jpg": (80, 120)}
    for (name, size), photo in zip(sizes.items(), ("chelsea", "coffee")):
        fv.load_image(photo).resize(size).save(folder / name)
    # boxes in the files' pixels: the left half of a.png and the top half of b.jpg
    (tmp_path / "boxes.json").write_text(json.dumps({"a.png": [[0, 0, 48, 64]], "b.jpg": [[0, 0, 80, 60]]}))
    argv = ["evaluate", str(folder), "--methods", "saliency", "--metrics", "pointing_game,energy_pointing_game",
            "--boxes", str(tmp_path / "boxes.json"), "--size", "64", "--out", str(tmp_path / "out"), "--no-progress"]
    assert main(argv) == 0
    first = json.loads((tmp_path / "out" / "results.json").read_text())
    assert "report:" in capsys.readouterr().out
    model, preprocess = fv.load_model()
    x = torch.cat([preprocess(Image.open(folder / n), size=64) for n in sorted(sizes)])
    a = fv.metrics.explainer("saliency")(model, x, model(x).argmax(1))
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[0, :, :32] = True  # a.png's box scaled by 64 / 96
    masks[1, :32, :] = True  # b.jpg's box scaled by 64 / 120
    cell = next(c for c in first["cells"] if c["metric"] == "energy_pointing_game")
    np.testing.assert_allclose(cell["scores"], fv.metrics.energy_pointing_game(a, masks).numpy(), rtol=1e-5)
    assert main(argv) == 0  # everything done: the rerun only writes the report again
    assert json.loads((tmp_path / "out" / "results.json").read_text()) == first


@pytest.mark.parametrize("argv,message", [
    (["--metrics", "deletion,aopc"], "unknown metrics 'aopc'"),
    (["--metrics", "pointing_game"], "need object boxes"),
    (["--methods", ","], "--methods is empty"),
])
def test_featvis_evaluate_bad_requests_exit_2(tmp_path, capsys, argv, message):
    assert main(["evaluate", "--out", str(tmp_path / "o"), "--size", "32", "--no-progress"] + argv) == 2
    assert message in capsys.readouterr().err


def test_featvis_evaluate_rejects_a_missing_folder(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_a_failed_first_run_leaves_the_directory_usable(tmp_path):
    model, images = _model(), _images()
    bad = {**KW, "metric_settings": {"deletion": {"step": 0}}}
    with pytest.raises(ValueError, match="step"):
        fv.metrics.evaluate(model, images, out=tmp_path, regions=_regions(), **bad)
    with pytest.raises(ValueError, match="batch_size"):
        fv.metrics.evaluate(model, images, out=tmp_path, regions=_regions(), **{**KW, "batch_size": 0})
    with pytest.raises(ValueError, match="default order"):
        fv.metrics.evaluate(model, images, out=tmp_path, regions=_regions(),
                            **{**KW, "metric_settings": {"deletion": {"order": "lerf"}}})
    assert len(fv.metrics.evaluate(model, images, out=tmp_path, regions=_regions(), **KW)) == 6


def test_changed_images_or_regions_are_not_resumed(tmp_path):
    model, images = _model(), _images()
    fv.metrics.evaluate(model, images, out=tmp_path, regions=_regions(), **KW)
    moved = _regions()
    moved[:, :4] = True
    with pytest.raises(ValueError, match="regions"):
        fv.metrics.evaluate(model, images, out=tmp_path, regions=moved, **KW)
    brighter = [(name, x + 0.5) for name, x in images]
    with pytest.raises(ValueError, match="images"):
        fv.metrics.evaluate(model, brighter, out=tmp_path, regions=_regions(), **KW)


def test_batches_draw_their_own_random_numbers(tmp_path, monkeypatch):
    """Image j of every batch must not get the same draws: the seed differs per batch (not per method)."""
    from featvis_fast.metrics import runner

    seen = []
    spec = registry.REGISTRY["sparseness"]

    def record(a, seed=0):
        seen.append(seed)
        return spec.fn(a)

    table = {**registry.REGISTRY, "sparseness": dataclasses.replace(spec, fn=record)}
    monkeypatch.setattr(runner, "REGISTRY", table)
    fv.metrics.evaluate(_model(), _images(), out=tmp_path, **{**KW, "metrics": ["sparseness"]})
    assert seen == [0, 0, 1, 1, 2, 2]  # per batch (seed 0: s * stride + k), the same for both methods


def test_results_json_is_strict_json_with_nan_scores(tmp_path):
    model, images = _model(), _images()
    empty = _regions()
    empty[0] = False  # no object in the first image: its localisation scores are NaN
    cells = fv.metrics.evaluate(model, images, out=tmp_path, regions=empty, **KW)
    assert torch.isnan(next(c for c in cells if c.metric == "pointing_game").scores[0])
    fv.metrics.write_report(cells, tmp_path)
    text = (tmp_path / "results.json").read_text()
    assert "NaN" not in text
    results = json.loads(text, parse_constant=lambda name: pytest.fail(f"non-standard JSON constant {name}"))
    cell = next(c for c in results["cells"] if c["metric"] == "pointing_game")
    assert cell["scores"][0] is None and cell["scores"][1] in (0.0, 1.0)
    again = fv.metrics.evaluate(model, images, out=tmp_path, regions=empty, **KW)  # resumed cells read None as NaN
    assert torch.isnan(next(c for c in again if c.metric == "pointing_game").scores[0])


def test_boxes_at_the_file_edge_stay_inside_after_scaling(tmp_path):
    path = tmp_path / "boxes.json"
    sizes = [(100, 50), (164, 7)]
    path.write_text(json.dumps({"a.png": [[0, 0, 100, 50]], "b.png": [[82, 0, 164, 7]]}))
    masks = fv.metrics.load_regions(path, ["a.png", "b.png"], 224, 224, sizes)
    assert bool(masks[0].all())
    assert bool(masks[1][:, 112:].all()) and not bool(masks[1][:, :112].any())
