"""The `featvis` command end to end on a bundled sample photo."""
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from PIL import Image

import featvis_fast as fv
from featvis_fast import demo_panels
from featvis_fast.cli import main
from featvis_fast.similarity import similarity_overlay


def test_similarity_command_writes_the_overlay(tmp_path):
    out = tmp_path / "cat.png"
    rc = main(["similarity", "chelsea", "--layer", "_blocks.10", "--pixel", "150,220", "--out", str(out)])
    assert rc == 0
    written = np.asarray(Image.open(out).convert("RGB")).astype(int)
    photo = np.asarray(fv.sample_image("chelsea")).astype(int)
    assert written.shape == photo.shape
    assert np.abs(written - photo).mean() > 10, "no heat map was drawn"
    model, preprocess = fv.load_model()
    expected = np.asarray(similarity_overlay(model, preprocess, fv.sample_image("chelsea"), "_blocks.10", (150, 220)))
    assert np.array_equal(written, expected.astype(int))


def test_similarity_command_as_a_process_with_a_file(tmp_path):
    src = tmp_path / "in.png"
    fv.sample_image("coffee").resize((160, 120)).save(src)
    out = tmp_path / "out.png"
    proc = subprocess.run([sys.executable, "-m", "featvis_fast.cli", "similarity", str(src), "--layer", "_blocks.5",
                           "--pixel", "60,80", "--metric", "angular", "--colormap", "viridis", "--size", "0",
                           "--dtype", "bfloat16", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert Image.open(out).size == (160, 120)


@pytest.mark.parametrize("argv,message", [
    (["similarity", "chelsea", "--layer", "_blocks.99", "--pixel", "1,1"], "unknown layer name '_blocks.99'"),
    (["similarity", "chelsea", "--layer", "_blocks.3", "--pixel", "900,1"], "outside"),
    (["similarity", "no-such-file.png", "--layer", "_blocks.3", "--pixel", "1,1"], "neither an image file"),
])
def test_similarity_command_errors(tmp_path, capsys, argv, message):
    assert main(argv + ["--out", str(tmp_path / "x.png")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_demo_writes_every_familys_panel(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path)]) == 0
    grid = Image.open(tmp_path / "similarity_grid.png")
    assert grid.width > 1000 and grid.height > 500
    out = capsys.readouterr().out
    for name in ("similarity_grid.png", "attributions.png", "perturbation.png", "maximize.png", "invert.png"):
        image = Image.open(tmp_path / name).convert("L")
        assert image.width >= 256 and np.asarray(image, dtype=np.float32).std() > 5, name
        assert str(tmp_path / name) in out
    page = (tmp_path / "dissection" / "index.html").read_text()
    assert "hbar" in page and "uninterpretable" in page
    report = (tmp_path / "evaluation" / "index.html").read_text()
    assert report.count("<polyline") == 4 and "sparseness" in report  # deletion + insertion curves, 2 methods
    assert str(tmp_path / "evaluation" / "index.html") in out


def test_backends_command(capsys):
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "cpp" in out and "triton" in out and "cuda" in out


def _subparsers(parser):
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return action.choices


def test_every_command_takes_the_same_backend_choices():
    from featvis_fast._backend import BACKENDS
    from featvis_fast.cli import build_parser

    commands = _subparsers(build_parser())
    with_backend = {name for name, sub in commands.items()
                    if any("--backend" in a.option_strings for a in sub._actions)}
    assert with_backend == {"similarity", "demo", "serve", "maximize", "invert", "class-agnostic", "dissect"}
    for name in with_backend:
        (option,) = [a for a in commands[name]._actions if "--backend" in a.option_strings]
        assert tuple(option.choices) == BACKENDS, name
    assert main.__module__ == "featvis_fast.cli"


def test_demo_backend_reaches_every_panel(tmp_path, monkeypatch):
    """`featvis demo --backend torch` runs each family's panel with that backend."""
    from PIL import Image as PILImage

    from featvis_fast import demo

    seen = {}
    blank = PILImage.new("RGB", (8, 8))

    def record(name, result):
        def panel(*args, backend=None, **kwargs):
            seen[name] = backend
            return result
        return panel

    monkeypatch.setattr(demo, "similarity_overlay", record("similarity", blank))
    monkeypatch.setattr(demo_panels, "attributions", record("attributions", blank))
    monkeypatch.setattr(demo_panels, "perturbations", record("perturbations", blank))
    monkeypatch.setattr(demo_panels, "reconstructions", record("reconstructions", {}))
    monkeypatch.setattr(demo_panels, "dissection_report", record("dissection", str(tmp_path / "d.html")))
    monkeypatch.setattr(demo_panels, "evaluation_report", record("evaluation", str(tmp_path / "e.html")))
    assert main(["demo", "--out", str(tmp_path), "--backend", "torch", "--device", "cpu"]) == 0
    assert seen == dict.fromkeys(["similarity", "attributions", "perturbations", "reconstructions", "dissection",
                                  "evaluation"], "torch")


@pytest.mark.parametrize("panel,call", [
    ("attributions", lambda m, p, b: demo_panels.attributions(m, p, ["chelsea"], "cpu", backend=b)),
    ("perturbations", lambda m, p, b: demo_panels.perturbations(m, p, ["chelsea"], "cpu", backend=b)),
    ("reconstructions", lambda m, p, b: demo_panels.reconstructions(m, p, "cpu", backend=b)),
    ("dissection", lambda m, p, b: demo_panels.dissection_report("unused", backend=b)),
    ("evaluation", lambda m, p, b: demo_panels.evaluation_report(m, p, ["chelsea"], tempfile.mkdtemp(), "cpu",
                                                                 backend=b)),
])
def test_demo_panels_pass_the_backend_on(panel, call):
    """Each panel hands its backend to the methods it calls (an unknown name is refused by them)."""
    model, preprocess = fv.load_model()
    with pytest.raises(ValueError, match="unknown backend 'no-such'"):
        call(model, preprocess, "no-such")

