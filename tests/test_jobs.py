"""Reconstruction jobs (featvis_fast.jobs, `featvis maximize|invert`): outputs, a resume after
kill -9 that ends in the same images as an uninterrupted run, refusal of a rerun with other
settings, and a 2-process torchrun job (gloo) that makes the same images as one process."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

JOB = ["maximize", "--objective", "_blocks.2:0", "_blocks.2:5", "_blocks.2:7", "class:3", "--steps", "40",
       "--size", "40", "--batch", "2", "--checkpoint-every", "4", "--param", "pixel", "--jitter", "3",
       "--no-progress", "--device", "cpu"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def featvis(args, out, **kw):
    return subprocess.run([sys.executable, "-m", "featvis_fast.cli", *args, "--out", str(out)], env=ENV,
                          capture_output=True, text=True, timeout=600, **kw)


def unit_images(out: Path) -> list[torch.Tensor]:
    return [torch.load(p) for p in sorted((out / "units").glob("unit-*.pt"))]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    done = featvis(JOB, out)
    assert done.returncode == 0, done.stderr
    return out


def test_a_job_writes_one_png_per_target_a_grid_and_a_manifest(uninterrupted):
    manifest = json.loads((uninterrupted / "manifest.json").read_text())
    names = [t["name"] for t in manifest["targets"]]
    assert names == ["_blocks.2_0", "_blocks.2_5", "_blocks.2_7", "class_3"]
    assert manifest["seed"] == 0 and manifest["settings"]["steps"] == 40
    assert all(isinstance(t["value"], float) for t in manifest["targets"])
    for t in manifest["targets"]:
        assert Image.open(uninterrupted / t["file"]).size == (40, 40)
    assert Image.open(uninterrupted / "grid.png").width > 40
    assert not list((uninterrupted / "checkpoints").glob("*.pt"))
    assert len(unit_images(uninterrupted)) == 2


def test_killed_with_sigkill_and_rerun_the_job_ends_with_identical_images(uninterrupted, tmp_path):
    cmd = [sys.executable, "-m", "featvis_fast.cli", *JOB, "--out", str(tmp_path)]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "checkpoints" / "unit-00001.pt"  # the second unit is under way
    deadline = time.time() + 300
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the job ended before it could be killed"
    assert not (tmp_path / "manifest.json").exists()
    assert (tmp_path / "units" / "unit-00000.json").exists()  # finished work is kept
    rerun = featvis(JOB, tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    for a, b in zip(unit_images(uninterrupted), unit_images(tmp_path), strict=True):
        assert torch.equal(a, b)
    for png in (uninterrupted / "images").glob("*.png"):
        assert png.read_bytes() == (tmp_path / "images" / png.name).read_bytes()


def test_a_rerun_with_other_settings_is_refused_and_changes_nothing(uninterrupted):
    before = {p: p.stat().st_mtime_ns for p in uninterrupted.rglob("*")}
    k = JOB.index("--steps") + 1
    other = featvis(JOB[:k] + ["41"] + JOB[k + 1:], uninterrupted)
    assert other.returncode == 2 and "other settings (steps differ)" in other.stderr
    assert {p: p.stat().st_mtime_ns for p in uninterrupted.rglob("*")} == before


def test_two_torchrun_processes_on_gloo_make_the_same_images(uninterrupted, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "featvis_fast.cli", *JOB, "--out", str(tmp_path)]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "manifest.json").read_text())["targets"] == \
        json.loads((uninterrupted / "manifest.json").read_text())["targets"]
    for a, b in zip(unit_images(uninterrupted), unit_images(tmp_path), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("args,match", [
    (["maximize", "--objective", "nope:1"], "nope"),
    (["maximize", "--objective", "_blocks.2:999"], "out of range"),
    (["maximize", "--objective", "_blocks.2:x"], "not an integer"),
    (["invert", "chelsea", "--layer", "nope"], "nope"),
    (["invert", "no-such-image", "--layer", "_blocks.2"], "neither an image file nor a sample name"),
])
def test_bad_jobs_are_named(args, match, tmp_path):
    done = featvis([*args, "--steps", "2", "--size", "32", "--no-progress"], tmp_path / "out")
    assert done.returncode == 2 and match in done.stderr, done.stderr


def test_an_inversion_job_makes_one_png_per_input_image(tmp_path):
    done = featvis(["invert", "chelsea", "coffee", "astronaut", "--layer", "_blocks.2", "--steps", "5", "--size", "32",
                    "--batch", "2", "--checkpoint-every", "2", "--no-progress"], tmp_path)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert [t["name"] for t in manifest["targets"]] == ["chelsea", "coffee", "astronaut"]
    assert all(t["value"] < 0 for t in manifest["targets"])  # minus the feature error
    assert len(unit_images(tmp_path)) == 2 and unit_images(tmp_path)[0].shape == (2, 3, 32, 32)


def test_a_class_agnostic_job_shards_clusters_over_units(tmp_path):
    """Each unit clusters with the job's seed (the same facets) and optimizes its own clusters, as
    ClassAgnostic(only=...) does in one process. (A cluster's image depends on its batch's
    composition only through rounding, which the chaotic ascent amplifies: units are fixed by
    --batch, never by the number of processes.) The job runs in another process, whose rounding
    may differ (thread count, allocator state): the images are compared loosely; bit-identity is claimed, and tested,
    only between runs made the same way (resume)."""
    import featvis_fast as fv
    from featvis_fast.reconstruction import ClassAgnostic

    samples = ["chelsea", "coffee", "astronaut", "rocket"]
    args = ["class-agnostic", *samples, "--layer", "_blocks.6", "--steps", "6", "--size", "48", "--clusters", "3",
            "--per-cluster", "2", "--top-channels", "8", "--pca", "3", "--batch", "2", "--no-progress"]
    done = featvis(args, tmp_path)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert [t["name"] for t in manifest["targets"]] == ["cluster-00", "cluster-01", "cluster-02"]
    model, preprocess = fv.load_model()
    x = torch.cat([preprocess(fv.sample_image(s), size=48) for s in samples])
    for only, images in zip(([0, 1], [2]), unit_images(tmp_path), strict=True):
        run = ClassAgnostic(model, x, "_blocks.6", 6, size=48, clusters=3, per_cluster=2, top_channels=8, pca=3,
                            only=only)
        start = run.images().clone()
        run.run(6)
        assert images.shape == run.images().shape
        # the unit's own clusters: far closer to this run than to its starting images
        assert (images - run.images()).abs().max() < 0.05 < (images - start).abs().max()
        values = [t["value"] for t in manifest["targets"] if t["unit"] == (only[0] // 2)]
        assert torch.allclose(torch.tensor(values), run.scores.cpu(), rtol=0.05)


def test_settings_that_cannot_run_leave_no_trace_and_the_corrected_job_runs(tmp_path):
    bad = featvis(["maximize", "--objective", "_blocks.2:0", "--param", "fft", "--jitter", "3", "--steps", "2",
                   "--size", "32", "--no-progress"], tmp_path / "job")
    assert bad.returncode == 2 and "param='pixel'" in bad.stderr
    assert not (tmp_path / "job" / "job.json").exists()
    good = featvis(["maximize", "--objective", "_blocks.2:0", "--steps", "2", "--size", "32", "--no-progress"],
                   tmp_path / "job")
    assert good.returncode == 0, good.stderr
    spec = json.loads((tmp_path / "job" / "job.json").read_text())
    assert spec["threads"] == 1 and spec["device"] == "cpu"  # CPU images depend on the thread count


@pytest.mark.parametrize("args,match", [
    (["maximize", "--objective", "_blocks.2:3", "_blocks.2:*"], "share output names: _blocks.2_3"),
    (["maximize", "--objective", "_blocks.2:3", "--device", "cuda"], "CUDA"),
    (["maximize", "--objective", "_blocks.2:3", "--threads", "0"], "--threads"),
])
def test_more_bad_jobs_are_named(args, match, tmp_path):
    done = featvis([*args, "--steps", "2", "--size", "32", "--no-progress"], tmp_path / "out")
    assert done.returncode == 2 and match in done.stderr, done.stderr
    assert not (tmp_path / "out" / "job.json").exists()
