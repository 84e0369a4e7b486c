"""fv.dissect (Network Dissection): planted units get their planted concepts and the noise unit
none; thresholds, tallies, IoU and labels equal a NetDissect-Lite-style NumPy procedure exactly;
streaming thresholds equal the in-memory ones; the folder format round-trips; the report is
written; bad data is named."""
import collections
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
from _netdissect_reference import dissect as numpy_dissect

import featvis_fast as fv
from featvis_fast.dissection import Concept, FolderDataset, PlantedNet, SyntheticShapes, dissect, write_folder
from featvis_fast.dissection.synthetic import UNIT_CONCEPTS
from featvis_fast.models import extract

PLAIN = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), progress=False)


class RandomConvNet(nn.Module):
    """A small random CNN (fresh weights per seed): layer "features" (B, 7, 16, 16) for 32 px input."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.features = nn.Sequential(nn.Conv2d(3, 7, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2))
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(7, 2))
        self.eval()

    def forward(self, x):
        return self.head(self.features(x))


class ListDataset:
    """Batches from a list, with no len(): dissect() counts the images by reading it once."""

    def __init__(self, batches, concepts):
        self.batches, self.concepts = batches, concepts

    def __iter__(self):
        return iter(self.batches)


def test_planted_units_get_their_concepts_and_the_noise_unit_none():
    result = dissect(PlantedNet(), SyntheticShapes(n=160, seed=3), "detectors", **PLAIN)
    assert result.labels == UNIT_CONCEPTS
    assert result.counts_per_category() == {"color": 3, "shape": 2}
    index, best = result.best
    assert (best[:5] > 0.08).all() and best[5] < 0.04


@pytest.mark.parametrize("quantile", [0.005, 0.05])
def test_parity_with_the_numpy_netdissect_procedure(quantile):
    seed = int(torch.randint(0, 2**31 - 1, ()))
    model = RandomConvNet(seed)
    data = SyntheticShapes(n=24, size=32, seed=seed % 1000, batch_size=5)
    result = dissect(model, data, "features", quantile=quantile, iou_threshold=0.02, **PLAIN)
    images, masks, annotated = (torch.cat(t) for t in zip(*data))
    features = extract(model, images, "features").numpy()
    ref = numpy_dissect(features, masks.numpy(), annotated.numpy(), quantile, 0.02)
    assert np.array_equal(result.thresholds.numpy(), ref["thresholds"]), seed
    assert np.array_equal(result.intersection.numpy(), ref["intersection"]), seed
    assert np.array_equal(result.unit_area.numpy(), ref["unit_area"]), seed
    assert np.array_equal(result.label_area.numpy(), ref["label_area"]), seed
    assert np.allclose(result.iou.numpy(), ref["iou"], atol=1e-6, rtol=0), seed
    assert np.array_equal(result.best[0].numpy(), ref["best"]), seed
    assert np.array_equal(result.interpretable.numpy(), ref["interpretable"]), seed


def test_streaming_thresholds_equal_the_in_memory_ones():
    model = RandomConvNet(1)
    data = SyntheticShapes(n=30, size=32, seed=4, batch_size=30)
    whole = dissect(model, data, "features", quantile=0.01, **PLAIN)
    for batch_size, forward_batch in ((1, None), (7, 3), (30, 4)):
        streamed = dissect(model, SyntheticShapes(n=30, size=32, seed=4, batch_size=batch_size), "features",
                           quantile=0.01, batch_size=forward_batch, **PLAIN)
        assert torch.equal(streamed.thresholds, whole.thresholds)
        assert torch.equal(streamed.intersection, whole.intersection)
    features = extract(model, torch.cat([b[0] for b in data]), "features").double()
    in_memory = torch.quantile(features.transpose(0, 1).flatten(1), 0.99, dim=1)
    assert torch.allclose(whole.thresholds, in_memory, rtol=0, atol=1e-12)


def test_a_dataset_without_len_is_counted():
    model = RandomConvNet(2)
    data = SyntheticShapes(n=12, size=32, seed=5, batch_size=5)
    counted = dissect(model, ListDataset(list(data), data.concepts), "features", **PLAIN)
    assert torch.equal(counted.thresholds, dissect(model, data, "features", **PLAIN).thresholds)


def test_the_folder_format_round_trips(tmp_path):
    data = SyntheticShapes(n=20, size=32, seed=6, batch_size=6)
    write_folder(data, tmp_path / "set")
    folder = FolderDataset(tmp_path / "set", transform=lambda im: torch.from_numpy(
        np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1), batch_size=6)
    assert folder.concepts == data.concepts and len(folder) == 20
    for (i1, m1, a1), (i2, m2, a2) in zip(data, folder, strict=True):
        assert torch.allclose(i1, i2, atol=1 / 255) and torch.equal(m1, m2) and torch.equal(a1, a2)
    model = RandomConvNet(3)
    assert torch.equal(dissect(model, folder, "features", **PLAIN).unit_area,
                       dissect(model, data, "features", **PLAIN).unit_area)


def test_the_report_has_the_summary_and_each_units_top_images(tmp_path):
    result = dissect(PlantedNet(), SyntheticShapes(n=40, seed=1), "detectors", top_n=3, **PLAIN)
    page = result.save_report(tmp_path / "report").read_text()
    assert "summary.png" in page and "uninterpretable" in page and "hbar" in page
    assert (tmp_path / "report" / "summary.png").exists()
    assert len(list((tmp_path / "report" / "units").glob("*.png"))) == 6 * 3
    assert result.top_images.shape == (6, 3)


def _batches(k=2, b=2, size=8, label=8):
    return [(torch.rand(b, 3, size, size), torch.zeros(b, k, label, label, dtype=torch.bool),
             torch.ones(b, k, dtype=torch.bool))]


CONCEPTS = [Concept("a", "x"), Concept("b", "x")]


@pytest.mark.parametrize("dataset,layer,kwargs,match", [
    (ListDataset(_batches(k=3), CONCEPTS), "features", {}, r"masks must be \(B=2, K=2"),
    (ListDataset(_batches() + _batches(label=6), CONCEPTS), "features", {}, "one label size"),
    (ListDataset([], CONCEPTS), "features", {}, "empty"),
    (ListDataset(_batches(), []), "features", {}, "concepts"),
    (ListDataset(_batches(), CONCEPTS), "nope", {}, "nope"),
    (ListDataset([(torch.full((2, 3, 8, 8), float("nan")),) + _batches()[0][1:]], CONCEPTS), "features", {}, "NaN"),
    (ListDataset(_batches(), CONCEPTS), "features", {"quantile": 1.5}, "quantile"),
])
def test_bad_data_is_named(dataset, layer, kwargs, match):
    with pytest.raises(ValueError, match=match):
        dissect(RandomConvNet(0), dataset, layer, **{**PLAIN, **kwargs})


def test_an_unknown_concept_in_a_label_map_is_named(tmp_path):
    write_folder(SyntheticShapes(n=3, size=32, seed=0), tmp_path / "set")
    (tmp_path / "set" / "concepts.csv").write_text("name,category\nred,color\n")
    with pytest.raises(ValueError, match="unknown columns|holds concept"):
        next(iter(FolderDataset(tmp_path / "set", transform=lambda im: torch.zeros(3, 32, 32))))


def test_the_default_model_dissects_to_a_full_table():
    model, _ = fv.load_model()
    data = SyntheticShapes(n=8, size=64, seed=2, batch_size=4)
    result = fv.dissect(model, data, "_blocks.2", progress=False)
    assert result.iou.shape == (24, 5) and len(result.labels) == 24 and result.thresholds.dtype == torch.float64


def _featvis_dissect(data, out, launcher=(), batch=4):
    cmd = [sys.executable, *launcher, "-m", "featvis_fast.cli", "dissect", "--layer", "_blocks.2", "--data",
           str(data), "--out", str(out), "--size", "64", "--batch", str(batch), "--top", "2", "--no-progress"]
    return subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=600)


def test_the_command_writes_the_report_and_two_torchrun_processes_agree(tmp_path):

    write_folder(SyntheticShapes(n=14, size=64, seed=8, batch_size=4), tmp_path / "data")
    one = _featvis_dissect(tmp_path / "data", tmp_path / "one")
    assert one.returncode == 0, one.stderr
    results = json.loads((tmp_path / "one" / "results.json").read_text())
    assert results["images"] == 14 and len(results["units"]) == 24
    assert (tmp_path / "one" / "index.html").exists() and (tmp_path / "one" / "summary.png").exists()
    two = _featvis_dissect(tmp_path / "data", tmp_path / "two",
                           launcher=("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"))
    assert two.returncode == 0, two.stderr[-3000:]
    assert json.loads((tmp_path / "two" / "results.json").read_text()) == results
    single = _featvis_dissect(tmp_path / "data", tmp_path / "single", batch=20,
                              launcher=("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"))
    assert single.returncode == 0, single.stderr[-3000:]  # one batch: the second process reads none
    assert json.loads((tmp_path / "single" / "results.json").read_text()) == results
    bad = _featvis_dissect(tmp_path / "nothing", tmp_path / "three")
    assert bad.returncode == 2 and "concepts.csv is missing" in bad.stderr


def test_the_readme_figure_script(tmp_path):
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "..", "examples", "dissection_figure.py")
    spec = importlib.util.spec_from_file_location("dissection_figure", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    figure = module.make_figure(str(tmp_path / "d.png"), images=48, top=2)
    assert (tmp_path / "d.png").exists() and figure.width >= 2 * 96 and figure.height > 6 * 96
    assert np.asarray(figure.convert("L"), dtype=np.float32).std() > 5


class OneShot(ListDataset):
    def __init__(self, batches, concepts):
        super().__init__(batches, concepts)
        self._it = iter(batches)

    def __iter__(self):
        return self._it


class Shuffled(ListDataset):
    """Another order on every pass (as a shuffling loader)."""

    def __init__(self, batches, concepts):
        super().__init__(batches, concepts)
        self.calls = 0

    def __len__(self):
        return sum(b[0].shape[0] for b in self.batches)

    def __iter__(self):
        self.calls += 1
        return iter(self.batches if self.calls % 2 else self.batches[::-1])


class CountsBatches(ListDataset):
    def __len__(self):
        return len(self.batches)


def test_datasets_that_cannot_be_read_again_the_same_way_are_named():
    data = list(SyntheticShapes(n=12, size=32, seed=1, batch_size=4))
    concepts = SyntheticShapes.concepts
    with pytest.raises(ValueError, match="one-shot iterator"):
        dissect(RandomConvNet(0), OneShot(data, concepts), "features", **PLAIN)
    with pytest.raises(ValueError, match="changed between the passes"):
        dissect(RandomConvNet(0), Shuffled(data, concepts), "features", **PLAIN)
    with pytest.raises(ValueError, match="must count images, not batches"):
        dissect(RandomConvNet(0), CountsBatches(data, concepts), "features", **PLAIN)
    with pytest.raises(ValueError, match="iou_threshold"):
        dissect(RandomConvNet(0), ListDataset(data, concepts), "features", iou_threshold=0, **PLAIN)


def test_top_images_break_ties_by_image_index_whatever_the_batching():
    model = RandomConvNet(5)
    with torch.no_grad():
        model.features[0].bias[:3] = -100.0  # dead units: every image peaks at 0
    runs = [dissect(model, SyntheticShapes(n=20, size=32, seed=2, batch_size=b), "features", top_n=4, **PLAIN)
            for b in (1, 3, 20)]
    assert all(torch.equal(r.top_images, runs[0].top_images) for r in runs)
    assert runs[0].top_images[:3].tolist() == [[0, 1, 2, 3]] * 3


def test_write_folder_takes_uint8_masks(tmp_path):
    images, masks, annotated = next(iter(SyntheticShapes(n=4, size=32, seed=3)))
    data = ListDataset([(images, masks.to(torch.uint8), annotated.to(torch.uint8))], SyntheticShapes.concepts)
    write_folder(data, tmp_path / "set")
    folder = FolderDataset(tmp_path / "set", transform=lambda im: torch.zeros(3, 32, 32))
    assert torch.equal(next(iter(folder))[1], masks)


class ImageItems(torch.utils.data.Dataset):
    """SyntheticShapes as a map-style dataset of single images (what a DataLoader batches), with
    its concepts as namedtuples (a record with the same fields as Concept)."""

    def __init__(self, data: SyntheticShapes):
        images, masks, annotated = (torch.cat(t) for t in zip(*data))
        self.items = list(zip(images, masks, annotated))
        record = collections.namedtuple("Record", "name category")
        self.concepts = [record(c.name, c.category) for c in data.concepts]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


@pytest.mark.parametrize("batch_size,drop_last", [(5, False), (4, True), (13, True)])
def test_a_dataloader_over_images_with_namedtuple_concepts_dissects_as_the_batches_do(batch_size, drop_last):
    model = RandomConvNet(3)
    items = ImageItems(SyntheticShapes(n=13, size=32, seed=6, batch_size=13))
    loader = torch.utils.data.DataLoader(items, batch_size=batch_size, drop_last=drop_last)
    assert len(loader) != len(items)  # len() counts batches
    kept = len(items) - (len(items) % batch_size if drop_last else 0)
    batches = [tuple(torch.stack(t) for t in zip(*items.items[:kept]))]
    expected = dissect(model, ListDataset(batches, SyntheticShapes.concepts), "features", **PLAIN)
    got = dissect(model, loader, "features", **PLAIN)
    assert got.n_images == kept and got.concepts == SyntheticShapes.concepts
    for name in ("thresholds", "intersection", "unit_area", "label_area", "top_images"):
        assert torch.equal(getattr(got, name), getattr(expected, name)), name


def test_a_shuffling_dataloader_and_shapeless_concepts_are_named():
    items = ImageItems(SyntheticShapes(n=8, size=32, seed=1, batch_size=8))
    with pytest.raises(ValueError, match="DataLoader shuffles"):
        dissect(RandomConvNet(0), torch.utils.data.DataLoader(items, batch_size=4, shuffle=True), "features", **PLAIN)
    items.concepts = [("red", "color"), 7]
    with pytest.raises(ValueError, match="concept 7 has no name and category"):
        dissect(RandomConvNet(0), torch.utils.data.DataLoader(items, batch_size=4), "features", **PLAIN)
