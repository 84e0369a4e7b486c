"""Localisation metrics (featvis_fast.metrics.localisation) and their regions (metrics.regions).

Parity: Quantus 0.6's PointingGame, AttributionLocalisation and TopKIntersection on the same float64
maps and masks (Quantus takes masks (B, 1, H, W) and needs no model for these: model=None), and
TorchRay's PointingGame.evaluate on the first maximum of each map. Quantus' quirks (the empty mask
that counts as a hit, the weighted options, its unstable sort) are shown to be the only differences.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _quantus import arrays, distinct_attributions, quantus

from featvis_fast.metrics import attribution_localisation, energy_pointing_game, pointing_game, top_k_intersection
from featvis_fast.metrics.regions import boxes_to_masks, load_regions, region_masks

B, SIDE = 3, 32


def quantus_scores(metric, a: torch.Tensor, masks: torch.Tensor, **kwargs) -> np.ndarray:
    """A Quantus 0.6 localisation metric on (B, 1, H, W) maps and (B, H, W) masks, as a float array."""
    a_np, s_np = arrays(a, masks[:, None].to(torch.float64))
    x = np.zeros((a_np.shape[0], 3, *a_np.shape[2:]))  # only its shape is read
    scores = metric(disable_warnings=True, **kwargs)(model=None, x_batch=x, y_batch=np.zeros(len(x), dtype=int),
                                                      a_batch=a_np, s_batch=s_np)
    return np.asarray(scores, dtype=np.float64)


def peaks(a: torch.Tensor) -> list[tuple[int, int]]:
    """(row, col) of each map's first maximum."""
    flat = a.reshape(a.shape[0], -1).argmax(1)
    return [(int(i) // a.shape[-1], int(i) % a.shape[-1]) for i in flat]


def boxes_near_peaks(a: torch.Tensor, gaps: list[int]) -> torch.Tensor:
    """(B, 4) boxes 3 px high, starting `gap` pixels right of (or, without room, left of) each map's peak."""
    out = []
    for (r, c), gap in zip(peaks(a), gaps):
        x0 = c + gap if c + gap + 3 <= a.shape[-1] else c - gap - 2
        y0 = min(max(r - 1, 0), a.shape[-2] - 3)
        out.append([x0, y0, x0 + 3, y0 + 3])
    return torch.tensor(out, dtype=torch.float64)


# --- regions: boxes, masks, the JSON file --------------------------------------------------------------------------

def test_box_covers_the_slice_from_x0_y0_to_x1_y1_exclusive():
    mask = boxes_to_masks([torch.tensor([[1, 2, 4, 5]])], 6, 7)[0]
    expected = torch.zeros(6, 7, dtype=torch.bool)
    expected[2:5, 1:4] = True
    assert torch.equal(mask, expected)
    # fractional boxes cover the pixels whose centre they contain; the whole image is (0, 0, W, H)
    assert torch.equal(boxes_to_masks([torch.tensor([[0.6, 1.51, 4.4, 5.49]])], 6, 7)[0], expected)
    assert bool(boxes_to_masks([torch.tensor([[0, 0, 7, 6]])], 6, 7).all())


def test_every_region_form_gives_the_same_masks():
    h, w = 10, 12
    boxes = [[1, 1, 4, 3], [0, 5, 12, 10]]
    union = torch.zeros(2, h, w, dtype=torch.bool)
    union[0, 1:3, 1:4] = True
    union[1, 5:10, 0:12] = True
    forms = [
        torch.tensor(boxes),  # (B, 4)
        boxes,  # one box per image
        [[boxes[0]], [boxes[1]]],  # lists of boxes
        [np.array(boxes[0]), torch.tensor([boxes[1]])],  # arrays (4,) and (N, 4)
        union, union[:, None].to(torch.uint8), union.numpy().astype(np.float32),  # masks
        [union[0].numpy(), boxes[1]],  # a mask beside a box
    ]
    for form in forms:
        assert torch.equal(region_masks(form, 2, h, w), union), form
    several = region_masks([[[1, 1, 4, 3], [6, 6, 8, 9]], []], 2, h, w)  # union of two boxes; no box: empty
    assert int(several[0].sum()) == 6 + 6 and several[0, 6:9, 6:8].all() and not several[1].any()


@pytest.mark.parametrize("box, problem", [
    ([-1, 0, 4, 4], "outside"), ([0, 0, 13, 4], "outside"), ([0, 0, 4, 11], "outside"), ([0, float("nan"), 4, 4],
                                                                                       "outside"),
    ([5, 0, 3, 4], "inverted"), ([0, 4, 4, 4], "inverted"),
])
def test_bad_box_is_named(box, problem):
    with pytest.raises(ValueError, match=rf"box 1 of image 1, .*{problem}"):
        region_masks([[[0, 0, 2, 2]], [[0, 0, 2, 2], box]], 2, 10, 12)


def test_bad_regions_raise_clear_errors():
    with pytest.raises(ValueError, match=r"masks must be \(B, H, W\) or \(B, 1, H, W\) = \(2, 10, 12\)"):
        region_masks(torch.zeros(2, 10, 11, dtype=torch.bool), 2, 10, 12)
    with pytest.raises(ValueError, match="bool or 0/1"):
        region_masks(torch.full((2, 10, 12), 0.5), 2, 10, 12)
    with pytest.raises(ValueError, match=r"boxes \(B, 4\) = \(2, 4\)"):
        region_masks(torch.zeros(3, 4), 2, 10, 12)
    with pytest.raises(ValueError, match="3 items for a batch of 2"):
        region_masks([[0, 0, 1, 1]] * 3, 2, 10, 12)
    with pytest.raises(ValueError, match=r"boxes_or_masks\[1\]\[0\]: a box must be 4 numbers"):
        region_masks([[0, 0, 1, 1], [[0, 0, 1]]], 2, 10, 12)
    with pytest.raises(TypeError, match="masks .B, H, W., boxes"):
        region_masks("boxes.json", 2, 10, 12)


def test_load_regions_reads_the_json_boxes_file(tmp_path):
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps({"cat.jpg": [[1, 1, 4, 3], [6, 6, 8, 9]], "dog.jpg": [0, 0, 2, 2], "none.jpg": []}))
    masks = load_regions(path, ["photos/dog.jpg", "cat.jpg", "none.jpg"], 10, 12)
    assert torch.equal(masks, region_masks([[[0, 0, 2, 2]], [[1, 1, 4, 3], [6, 6, 8, 9]], []], 3, 10, 12))
    with pytest.raises(ValueError, match="no boxes for image 'bird.jpg'"):
        load_regions(path, ["bird.jpg"], 10, 12)
    with pytest.raises(ValueError, match=r"box 0 of image 0, .* outside the 2x12 image"):
        load_regions(path, ["cat.jpg"], 2, 12)


# --- pointing game -------------------------------------------------------------------------------------------------

def test_pointing_game_known_answers():
    a = torch.zeros(1, 8, 8)
    a[0, 2, 5] = 1.0  # the peak at row 2, column 5
    on = torch.tensor([[5, 2, 6, 3]])  # the peak's pixel
    near = torch.tensor([[0, 5, 8, 8]])  # rows 5..7: 3 rows below the peak
    assert pointing_game(a, on, tolerance=0).tolist() == [1.0]
    assert pointing_game(a, near, tolerance=0).tolist() == [0.0]
    assert pointing_game(a, near, tolerance=3).tolist() == [0.0]  # distance 3 is not below 3 (TorchRay)
    assert pointing_game(a, near, tolerance=4).tolist() == [1.0]
    assert pointing_game(a, on, tolerance=0, weighted=True).tolist() == [1 - 1 / 64]
    assert torch.isnan(pointing_game(a, [[]])).all()  # no object: NaN


@pytest.mark.filterwarnings("ignore:torch.meshgrid")  # inside TorchRay
def test_pointing_game_matches_torchray():
    quantus()  # torchvision's schemas before TorchRay, which imports torchvision
    torchray_pg = pytest.importorskip("torchray.benchmark.pointing_game")
    a = distinct_attributions((8, 1, 48, 48), seed=3)
    a[7] = 0.0  # all tied: TorchRay's argmax takes the first pixel
    for tolerance in (1, 4, 15):
        gaps = [0, tolerance - 1, tolerance, tolerance + 1, 2, 20, 9, tolerance]
        boxes = boxes_near_peaks(a, gaps)
        masks = region_masks(boxes, 8, 48, 48)
        game = torchray_pg.PointingGame(1, tolerance=tolerance)
        expected = [float(game.evaluate(m, (c, r)) == 1) for m, (r, c) in zip(masks, peaks(a))]
        ours = pointing_game(a, boxes, tolerance=tolerance)
        assert ours.tolist() == expected, tolerance
        assert 0 < sum(expected) < 8


def test_pointing_game_at_tolerance_0_matches_quantus():
    q = quantus()
    a = distinct_attributions((B, 1, SIDE, SIDE), seed=1)
    masks = region_masks(boxes_near_peaks(a, [0, 1, 0]), B, SIDE, SIDE)
    expected = quantus_scores(q.PointingGame, a, masks)
    assert expected.tolist() == [1.0, 0.0, 1.0]
    for ties in ("first", "any"):  # one maximum per map: the tie rules agree
        assert pointing_game(a, masks, tolerance=0, ties=ties).numpy().tolist() == expected.tolist()
    # two tied maxima, the first outside the object and the second inside: Quantus counts any maximum
    a2 = a.clone()
    a2[:, 0, 0, 0] = a2[:, 0, SIDE - 1, SIDE - 1] = a.max() + 1
    corner = region_masks([[SIDE - 2, SIDE - 2, SIDE, SIDE]] * B, B, SIDE, SIDE)
    assert quantus_scores(q.PointingGame, a2, corner).tolist() == [1.0] * B
    assert pointing_game(a2, corner, tolerance=0, ties="any").tolist() == [1.0] * B
    assert pointing_game(a2, corner, tolerance=0, ties="first").tolist() == [0.0] * B  # TorchRay's first maximum


def test_pointing_game_quantus_quirks():
    q = quantus()
    a = distinct_attributions((B, 1, SIDE, SIDE), seed=2)
    masks = region_masks(boxes_near_peaks(a, [0, 1, 0]), B, SIDE, SIDE)
    masks[2] = False
    # Quantus writes NaN for an empty mask into a bool array: it reads as a hit
    assert quantus_scores(q.PointingGame, a, masks).tolist() == [1.0, 0.0, 1.0]
    ours = pointing_game(a, masks, tolerance=0)
    assert ours[:2].tolist() == [1.0, 0.0] and torch.isnan(ours[2])
    # Quantus' weighted option assigns (n, 1) weights into a bool array: it fails; ours weigh hits by the free area
    with pytest.raises(TypeError):
        quantus_scores(q.PointingGame, a, masks, weighted=True)
    weighted = pointing_game(a, masks, tolerance=0, weighted=True)
    assert weighted[:2].tolist() == [1 - float(masks[0].sum()) / SIDE ** 2, 0.0]


def test_pointing_game_any_tie_with_tolerance_dilates_the_object():
    a = torch.zeros(1, 20, 20)
    a[0, 2, 2] = a[0, 15, 15] = 1.0
    box = [[15, 10, 20, 12]]  # rows 10..11: 4 rows above the second peak, far from the first
    assert pointing_game(a, box, tolerance=5, ties="any").tolist() == [1.0]
    assert pointing_game(a, box, tolerance=4, ties="any").tolist() == [0.0]
    assert pointing_game(a, box, tolerance=5, ties="first").tolist() == [0.0]


# --- energy pointing game and attribution localisation ----------------------------------------------------------

def test_energy_pointing_game_known_answers():
    a = torch.tensor([[[4.0, -3.0], [1.0, 0.0]], [[-1.0, -2.0], [0.0, 0.0]]], dtype=torch.float64)
    box = [[0, 0, 1, 1]]  # the top-left pixel
    score = energy_pointing_game(a, box * 2)
    assert score[0].item() == 4 / 5  # the -3 counts as no energy
    assert torch.isnan(score[1])  # no positive energy
    assert torch.isnan(energy_pointing_game(a, [[], [[0, 0, 1, 1]]])[0])  # no object
    same = attribution_localisation(a[:1], box, abs=False, positive_attributions=True)
    assert abs(same.item() - 4 / 5) < 1e-9  # attribution_localisation's 1e-9 guard, on maps scaled to max 1


@pytest.mark.filterwarnings("ignore:Inside explanation is greater")  # Quantus warns beside its NaN
@pytest.mark.parametrize("kwargs", [{}, {"abs": False}, {"abs": False, "positive_attributions": True},
                                    {"positive_attributions": True}])
def test_attribution_localisation_matches_quantus(kwargs):
    q = quantus()
    a = distinct_attributions((B, 1, SIDE, SIDE), seed=4)
    a[0] += 1.5  # mostly positive: a signed ratio below 1
    a[1, 0, 8:20, 8:20] += 3.0  # relevance on the object
    a[2] -= 0.13
    a[2, 0, 3:12, 2:30] += 0.83  # positive on the object, negative around it: a signed ratio above 1
    a = a / a.abs().amax((1, 2, 3), keepdim=True)  # each map's max |a| is the batch's: Quantus' scaling is ours
    masks = region_masks([[8, 8, 20, 20], [[8, 8, 20, 20], [0, 0, 4, 30]], [2, 3, 30, 12]], B, SIDE, SIDE)
    expected = quantus_scores(q.AttributionLocalisation, a, masks, **kwargs)
    ours = attribution_localisation(a, masks, abs=kwargs.get("abs", True),
                                    positive_attributions=kwargs.get("positive_attributions", False))
    assert ours.dtype == torch.float64
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-12, atol=0)
    if kwargs == {"abs": False}:
        assert np.isnan(expected[2]) and 0 < expected[0] < 1  # a signed ratio above 1 is NaN in both


def test_attribution_localisation_quantus_quirks():
    q = quantus()
    a = distinct_attributions((B, 1, SIDE, SIDE), seed=5)
    masks = region_masks([[8, 8, 20, 20]] * B, B, SIDE, SIDE)
    # Quantus scales by the batch's max |a| and ours by each map's: only the 1e-9 guard sees the difference
    plain = attribution_localisation(a, masks).numpy()
    np.testing.assert_allclose(plain, quantus_scores(q.AttributionLocalisation, a, masks), rtol=1e-9, atol=0)
    # weighted: Quantus divides the object's area by x_batch[2:].size ((B - 2) * C * H * W), ours by H * W
    weighted = attribution_localisation(a, masks, weighted=True)
    np.testing.assert_allclose(weighted.numpy(), plain * 144 / SIDE ** 2, rtol=1e-15)
    quantus_weighted = quantus_scores(q.AttributionLocalisation, a / a.abs().amax(), masks, weighted=True)
    np.testing.assert_allclose(quantus_weighted, weighted.numpy() * SIDE ** 2 / ((B - 2) * 3 * SIDE ** 2), rtol=1e-9)
    masks[1] = False
    assert torch.isnan(attribution_localisation(a, masks)[1])
    with pytest.warns(UserWarning, match=r"images \[0, 2\] cover more than max_size = 0.1"):
        attribution_localisation(a, masks, max_size=0.1)


# --- top-k intersection --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("k, concept_influence, absolute", [(1, False, False), (50, True, False), (200, False, True),
                                                            (SIDE * SIDE - 1, True, True)])
def test_top_k_intersection_matches_quantus(k, concept_influence, absolute):
    q = quantus()
    a = distinct_attributions((B, 1, SIDE, SIDE), seed=6)
    a[:, 0, 4:16, 10:22] += 1.0
    masks = region_masks([[10, 4, 22, 16], [0, 16, 16, 32], [[10, 4, 22, 16], [0, 20, 32, 32]]], B, SIDE, SIDE)
    expected = quantus_scores(q.TopKIntersection, a, masks, k=k, concept_influence=concept_influence, abs=absolute)
    ours = top_k_intersection(a, masks, k=k, concept_influence=concept_influence, abs=absolute)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-12, atol=0)
    assert len(set(expected.tolist())) > 1


def test_top_k_intersection_ties_are_quantus_with_a_stable_sort(monkeypatch):
    q = quantus()
    a = torch.round(2 * distinct_attributions((B, 1, SIDE, SIDE), seed=7))  # a few values, many ties
    masks = region_masks([[0, 0, 20, 10], [5, 5, 30, 30], [[0, 0, 6, 6], [10, 10, 32, 14]]], B, SIDE, SIDE)
    argsort = np.argsort
    monkeypatch.setattr(np, "argsort", lambda values, axis=-1, kind=None: argsort(values, axis=axis, kind="stable"))
    for k in (10, 300):
        expected = quantus_scores(q.TopKIntersection, a, masks, k=k)
        np.testing.assert_allclose(top_k_intersection(a, masks, k=k).numpy(), expected, rtol=1e-12, atol=0)


def test_top_k_intersection_known_answers():
    a = torch.arange(16.0).reshape(1, 4, 4)  # the top 4 are the bottom row
    bottom_left = [[0, 3, 2, 4]]
    assert top_k_intersection(a, bottom_left, k=4).tolist() == [0.5]
    assert top_k_intersection(a, bottom_left, k=4, concept_influence=True).tolist() == [0.5 * 16 / 2]
    assert top_k_intersection(-a, bottom_left, k=4, abs=True).tolist() == [0.5]
    assert torch.isnan(top_k_intersection(a, [[]], k=4)).all()
    with pytest.raises(ValueError, match=r"k must be an int in \[1, H \* W\] = \[1, 16\]"):
        top_k_intersection(a, bottom_left, k=17)


# --- shared behaviour --------------------------------------------------------------------------------------------

METRICS = [
    lambda a, r: pointing_game(a, r, tolerance=3),
    energy_pointing_game,
    attribution_localisation,
    lambda a, r: top_k_intersection(a, r, k=40),
]


@pytest.mark.parametrize("metric", METRICS)
def test_channels_sum_lists_and_dtypes(metric):
    a = distinct_attributions((2, 3, 16, 16), seed=8)
    boxes = [[2, 2, 9, 9], [[0, 0, 4, 16], [10, 10, 16, 16]]]
    summed = metric(a.sum(1), boxes)
    assert torch.equal(metric(a, boxes), summed)  # channels are summed to one value per pixel
    assert torch.equal(metric(list(a.sum(1, keepdim=True)), boxes), summed)
    assert torch.equal(metric(a.sum(1).numpy(), boxes), summed)
    single = metric(a.sum(1)[1:], boxes[1:])
    assert torch.equal(single, summed[1:])  # an image's score does not depend on its batch
    out32 = metric(a.to(torch.float32), boxes)
    assert out32.dtype == torch.float32 and out32.shape == (2,)


@pytest.mark.parametrize("metric", METRICS)
def test_bad_inputs_name_the_problem(metric):
    a = distinct_attributions((2, 16, 16))
    with pytest.raises(ValueError, match=r"attributions must be \(B, H, W\)"):
        metric(a[0, 0], [[0, 0, 4, 4]] * 2)
    with pytest.raises(ValueError, match=r"masks must be .* = \(2, 16, 16\) like the attributions"):
        metric(a, torch.ones(2, 16, 15, dtype=torch.bool))
    with pytest.raises(ValueError, match="1 items for a batch of 2"):
        metric(a, [[0, 0, 4, 4]])
    with pytest.raises(ValueError, match="outside the 16x16 image"):
        metric(a, [[0, 0, 4, 4], [0, 0, 17, 4]])


def test_bad_options():
    a = distinct_attributions((2, 16, 16))
    with pytest.raises(ValueError, match="tolerance must be an int >= 0"):
        pointing_game(a, [[0, 0, 4, 4]] * 2, tolerance=-1)
    with pytest.raises(ValueError, match="unknown ties 'last'"):
        pointing_game(a, [[0, 0, 4, 4]] * 2, ties="last")
