"""ViewerSession: frames, vectors and layers computed on demand, cached, and checked."""
import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

import featvis_fast as fv
from featvis_fast.render import COLORMAPS, colormap
from featvis_fast.render import colormap as colormap_table
from featvis_fast.viewer.protocol import ProtocolError, Request
from featvis_fast.viewer.session import FEATURES_LAYER, ViewerSession


def hover(image="rand", layer=FEATURES_LAYER, x=0.0, y=0.0, **kw) -> Request:
    return Request("hover", kw.pop("seq", 1), image, layer, x=x, y=y, **kw)


@pytest.fixture
def feature_session():
    torch.manual_seed(0)
    session = ViewerSession()
    feats = torch.randn(37, 11, 23)
    overlay = Image.new("RGB", (230, 110), (10, 20, 30))
    session.add_features(feats, "rand", overlay)
    return session, feats


@pytest.fixture(scope="module")
def model_session():
    model, preprocess = fv.load_model()
    session = ViewerSession(model, preprocess, input_size=96)
    session.add_image(fv.sample_image("chelsea"), "chelsea")
    return session


@pytest.mark.parametrize("metric", ["cosine", "dot", "euclidean"])
@pytest.mark.parametrize("x,y", [(0.0, 0.0), (229.9, 109.9), (117.3, 51.0)])
def test_a_hover_frame_is_the_map_of_the_cell_under_the_pixel(feature_session, metric, x, y):
    session, feats = feature_session
    header, rgba, vector = session.frame(hover(x=x, y=y, metric=metric, colormap="viridis", seq=5, panel=1))
    row, col = math.floor(y * 11 / 110), math.floor(x * 23 / 230)
    assert header["cell"] == [row, col]
    assert (header["seq"], header["panel"], header["height"], header["width"], header["channels"]) == (5, 1, 11, 23, 37)
    expected, lo, hi = fv.FeatureSimilarity(feats, metric=metric).render((row, col), colormap="viridis",
                                                                         return_range=True)
    assert rgba == expected.numpy().tobytes()
    assert (header["lo"], header["hi"]) == pytest.approx((float(lo), float(hi)))
    assert np.array_equal(np.frombuffer(vector, "<f4"), feats[:, row, col].numpy())
    if metric == "cosine":  # the reference cell is the most similar: the top of the colour map
        top = np.frombuffer(rgba, np.uint8).reshape(11, 23, 4)[row, col]
        assert np.array_equal(top, colormap("viridis")[255])


def test_a_channel_frame_shows_that_channel_and_a_fixed_stretch_is_kept(feature_session):
    session, feats = feature_session
    header, rgba, _ = session.frame(hover(x=5, y=5, channel=36, colormap="gray"))
    assert rgba == fv.colorize(feats[36], "gray").numpy().tobytes()
    assert (header["lo"], header["hi"]) == pytest.approx((float(feats[36].min()), float(feats[36].max())))
    header, rgba, _ = session.frame(hover(x=5, y=5, channel=0, stretch=(-1.0, 1.0)))
    assert (header["lo"], header["hi"]) == (-1.0, 1.0)
    assert rgba == fv.colorize(feats[0], "fire", (-1.0, 1.0)).numpy().tobytes()
    _, rgba, _ = session.frame(hover(x=5, y=5, stretch=(0.0, 0.5)))
    expected = fv.FeatureSimilarity(feats).render((0, 0), stretch=(0.0, 0.5))
    assert rgba == expected.numpy().tobytes()


@pytest.mark.parametrize("req,needle", [
    (hover(image="nope"), "unknown image 'nope'; loaded: rand"),
    (hover(layer="_blocks.3"), "its only layer is 'features'"),
    (hover(x=230.0), "lies outside the 230x110 image"),
    (hover(y=-0.5), "lies outside"),
    (hover(metric="manhattan"), "unknown metric 'manhattan'"),
    (hover(colormap="jet2"), "unknown colormap 'jet2'"),
    (hover(channel=37), "channel 37 out of range: layer 'features' has 37 channels"),
    (hover(channel=-1), "channel -1 out of range"),
])
def test_bad_requests_raise_protocol_errors(feature_session, req, needle):
    session, _ = feature_session
    with pytest.raises(ProtocolError) as info:
        session.frame(req)
    assert needle in str(info.value)


def test_a_feature_session_cannot_take_uploads_and_rejects_bad_maps(feature_session):
    session, _ = feature_session
    with pytest.raises(ProtocolError, match="no model"):
        session.add_image(Image.new("RGB", (8, 8)), "x")
    with pytest.raises(ValueError, match="NaN"):
        session.add_features(torch.full((3, 4, 4), float("nan")), "bad")
    assert [i["id"] for i in session.state()["images"]] == ["rand"]


def test_state_lists_images_layers_metrics_and_colour_maps(feature_session):
    session, _ = feature_session
    state = session.state()
    assert state["images"] == [{"id": "rand", "name": "rand", "width": 230, "height": 110, "layers": ["features"]}]
    assert state["metrics"] == list(fv.METRICS) and not state["can_upload"]
    assert set(state["colormaps"]) == set(COLORMAPS)
    assert all(len(lut) == 256 and len(lut[0]) == 4 for lut in state["colormaps"].values())


def test_image_ids_are_unique_and_safe_and_the_image_count_is_bounded():
    session = ViewerSession(max_images=3)
    ids = [session.add_features(torch.randn(2, 3, 3), name).id for name in ("a b/../c", "a b/../c", "")]
    assert ids == ["a_b_.._c", "a_b_.._c-2", "image"]
    with pytest.raises(ProtocolError, match="at most 3 images"):
        session.add_features(torch.randn(2, 3, 3), "d")
    png = Image.open(io.BytesIO(session.image_png("image")))
    assert png.size == (3, 3)


def test_layers_are_computed_on_demand_cached_and_unknown_ones_get_a_suggestion(model_session):
    session = model_session
    layer = "_blocks.10"
    ready = session.layer_ready(Request("layer", 2, "chelsea", layer))
    feats = session.features("chelsea", layer)
    assert session.features("chelsea", layer) is feats  # cached
    assert (ready["channels"], ready["height"], ready["width"]) == tuple(feats.shape)
    model, preprocess = fv.load_model()
    x = preprocess(fv.sample_image("chelsea"), size=(64, 96))  # 451x300 scaled to a longest side of 96
    assert torch.allclose(feats, fv.extract(model, x, layer)[0], atol=1e-5)
    with pytest.raises(ProtocolError, match=r"unknown layer '_blocks\.100'; did you mean"):
        session.features("chelsea", "_blocks.100")
    with pytest.raises(ProtocolError, match="unknown layer"):
        ViewerSession(model, preprocess, layers=["nope"])


def test_uploaded_images_get_frames_and_the_caches_stay_within_their_budget():
    model, preprocess = fv.load_model()
    session = ViewerSession(model, preprocess, input_size=64, cache_bytes=2)  # room for one entry per cache
    session.add_image(Image.new("RGB", (50, 40), (200, 10, 10)), "red")
    session.add_image(fv.sample_image("coffee"), "coffee")
    for image in ("red", "coffee"):
        header, rgba, vector = session.frame(hover(image, "_blocks.3", x=10, y=10))
        assert len(rgba) == header["height"] * header["width"] * 4 and len(vector) == 4 * header["channels"]
    assert list(session._features.entries) == [("coffee", "_blocks.3")]
    assert list(session._similarity.entries) == [("coffee", "_blocks.3", "cosine")]


def test_heatmap_png_is_the_frame_blended_over_the_image(feature_session):
    session, feats = feature_session
    req = hover(x=100, y=50, colormap="gray")
    png = Image.open(io.BytesIO(session.heatmap_png(req, alpha=0.5)))
    header, rgba, _ = session.frame(req)
    heat = np.frombuffer(rgba, np.uint8).reshape(11, 23, 4)
    expected = fv.overlay(session.image("rand").image, heat, alpha=0.5)
    assert png.size == (230, 110)
    assert np.array_equal(np.asarray(png.convert("RGB")), np.asarray(expected))


def test_vector_requests_return_the_raw_features(feature_session):
    session, feats = feature_session
    header, vector = session.vector(Request("vector", 8, "rand", FEATURES_LAYER, x=229, y=0))
    assert header["cell"] == [0, 22] and header["seq"] == 8 and header["channels"] == 37
    assert np.array_equal(np.frombuffer(vector, "<f4"), feats[:, 0, 22].numpy())


def test_warm_up_loads_the_kernels_without_touching_the_caches(feature_session):
    session, _ = feature_session
    session.warm_up()
    assert not session._features.entries and not session._similarity.entries
    assert [i["id"] for i in session.state()["images"]] == ["rand"]


@pytest.mark.parametrize("colormap", ["fire", "viridis", "gray"])
@pytest.mark.parametrize("channel,stretch", [(None, "minmax"), (None, (0.0, 0.5)), (4, "minmax")])
def test_index8_frames_are_the_rgba_frames_through_the_lut(feature_session, colormap, channel, stretch):
    session, _ = feature_session
    kw = dict(x=61.0, y=33.0, colormap=colormap, channel=channel, stretch=stretch)
    rgba_header, rgba, vector = session.frame(hover(**kw))
    index_header, index, index_vector = session.frame(hover(encoding="index8", **kw))
    assert (index_header["encoding"], index_header["map_bytes"], rgba_header["map_bytes"]) == ("index8", 11 * 23,
                                                                                               11 * 23 * 4)
    assert (index_header["lo"], index_header["hi"], index_header["colormap"]) == (rgba_header["lo"], rgba_header["hi"],
                                                                                  colormap)
    lut = colormap_table(colormap).numpy()
    assert lut[np.frombuffer(index, np.uint8)].tobytes() == rgba and index_vector == vector
