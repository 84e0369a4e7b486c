"""The viewer's HTTP + WebSocket server: token, static files, every endpoint and message type."""
import io
import json
import os
import time

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

import featvis_fast as fv
from featvis_fast.viewer import server as server_module
from featvis_fast.viewer.protocol import MAX_MESSAGE_BYTES, decode_binary
from featvis_fast.viewer.server import COOKIE, ViewerServer, create_app
from featvis_fast.viewer.session import ViewerSession

TOKEN = "s3cret-token"


def png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def hover(**kw) -> str:
    return json.dumps({"type": "hover", "seq": 1, "image": "rand", "layer": "features", "x": 3, "y": 4, **kw})


@pytest.fixture
def session():
    torch.manual_seed(1)
    s = ViewerSession()
    s.add_features(torch.randn(19, 13, 17), "rand", Image.new("RGB", (170, 130), (0, 90, 0)))
    return s


@pytest.fixture
def client(session):
    return TestClient(create_app(session, TOKEN))


@pytest.fixture(scope="module")
def model_client():
    model, preprocess = fv.load_model()
    s = ViewerSession(model, preprocess, layers=["_blocks.3", "_blocks.10"], input_size=96)
    s.add_image(fv.sample_image("chelsea"), "chelsea")
    return TestClient(create_app(s, TOKEN, max_upload_bytes=200_000))


# ---- the token -----------------------------------------------------------------------------------
PATHS = ["/", "/static/index.html", "/static/viewer.js", "/api/state", "/api/images/rand",
         "/api/heatmap.png?image=rand&layer=features&x=1&y=1"]


@pytest.mark.parametrize("path", PATHS)
def test_every_route_needs_the_token(client, path):
    assert client.get(path).status_code == 403
    assert client.post("/api/images", content=b"x").status_code == 403
    sep = "&" if "?" in path else "?"
    assert client.get(f"{path}{sep}token=wrong").status_code == 403
    assert client.get(path, headers={"X-Featvis-Token": "s3cret-tokeN"}).status_code == 403
    assert client.get(path, headers={"X-Featvis-Token": TOKEN}).status_code == 200
    assert client.get(f"{path}{sep}token={TOKEN}").status_code == 200


def test_the_page_sets_an_http_only_strict_cookie_that_then_authorizes(client):
    page = client.get(f"/?token={TOKEN}")
    cookie = page.headers["set-cookie"]
    assert (f"{COOKIE}={TOKEN}" in cookie and "HttpOnly" in cookie
            and "SameSite=strict" in cookie.replace("Strict", "strict"))
    assert client.get("/api/state").status_code == 200  # the client now carries the cookie
    client.cookies.clear()
    client.cookies.set(COOKIE, "forged")
    assert client.get("/api/state").status_code == 403


def test_websockets_need_the_token_and_the_same_origin(client):
    from starlette.websockets import WebSocketDisconnect

    for url, headers in [("/ws", {}), ("/ws?token=nope", {}),
                         (f"/ws?token={TOKEN}", {"origin": "http://evil.example"})]:
        with pytest.raises(WebSocketDisconnect) as info:
            with client.websocket_connect(url, headers=headers) as ws:
                ws.receive_text()
        assert info.value.code == 1008
    with client.websocket_connect(f"/ws?token={TOKEN}", headers={"origin": "http://testserver"}) as ws:
        ws.send_text(hover())
        assert decode_binary(ws.receive_bytes())[0]["type"] == "frame"


# ---- static files and traversal --------------------------------------------------------------------
def test_the_page_and_its_own_static_files_are_served(client):
    page = client.get(f"/?token={TOKEN}")
    assert page.headers["content-type"].startswith("text/html") and "/static/viewer.js" in page.text
    for name in ("viewer.js", "viewer.css"):
        r = client.get(f"/static/{name}?token={TOKEN}")
        assert r.status_code == 200 and r.content == (server_module.STATIC_DIR / name).read_bytes()


@pytest.mark.parametrize("path", [
    "/static/../session.py", "/static/%2e%2e/session.py", "/static/..%2fsession.py", "/static/%2e%2e%2fserver.py",
    "/static/....//session.py", "/static//etc/passwd", "/static/%2fetc%2fpasswd", "/static/..\\session.py",
    "/static/", "/../featvis_fast/viewer/session.py", "/session.py", "/api/images/..%2f..%2fsession.py",
])
def test_path_traversal_finds_nothing(client, path):
    r = client.get(path, headers={"X-Featvis-Token": TOKEN})
    assert r.status_code in (400, 404, 405), (path, r.status_code)
    assert b"import" not in r.content and b"root:" not in r.content


# ---- the HTTP API ----------------------------------------------------------------------------------
def test_state_image_and_heatmap_endpoints(client, session):
    auth = {"X-Featvis-Token": TOKEN}
    state = client.get("/api/state", headers=auth).json()
    assert state["images"][0]["id"] == "rand" and state["can_upload"] is False
    photo = Image.open(io.BytesIO(client.get("/api/images/rand", headers=auth).content))
    assert photo.size == (170, 130)
    assert client.get("/api/images/nope", headers=auth).status_code == 404
    r = client.get("/api/heatmap.png?image=rand&layer=features&x=60&y=70&colormap=gray&alpha=1", headers=auth)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    heat = fv.FeatureSimilarity(session.features("rand", "features")).render((7, 6), colormap="gray")
    expected = fv.overlay(session.image("rand").image, heat, alpha=1.0)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB")), np.asarray(expected))
    for bad in ("x=999&y=1", "x=1&y=1&metric=l7", "x=1&y=1&colormap=nope", "x=1&y=1&alpha=3", "x=1&y=1&lo=2&hi=1"):
        r = client.get(f"/api/heatmap.png?image=rand&layer=features&{bad}", headers=auth)
        assert r.status_code == 400 and r.json()["detail"], bad
    assert client.get("/api/heatmap.png?image=rand&layer=features&x=abc&y=1", headers=auth).status_code == 422


def test_uploads_are_decoded_limited_and_usable(model_client):
    auth = {"X-Featvis-Token": TOKEN}
    small = Image.new("RGB", (64, 48), (250, 200, 0))
    r = model_client.post("/api/images?name=my photo.png", content=png_bytes(small), headers=auth)
    assert r.status_code == 201
    info = r.json()
    assert (info["width"], info["height"], info["name"]) == (64, 48, "my photo.png")
    assert info["id"] in [i["id"] for i in model_client.get("/api/state", headers=auth).json()["images"]]
    with model_client.websocket_connect(f"/ws?token={TOKEN}") as ws:
        ws.send_text(json.dumps({"type": "hover", "image": info["id"], "layer": "_blocks.3", "x": 5, "y": 5}))
        assert decode_binary(ws.receive_bytes())[0]["image"] == info["id"]
    assert model_client.post("/api/images", content=b"", headers=auth).status_code == 400
    r = model_client.post("/api/images", content=b"GIF89a not really", headers=auth)
    assert r.status_code == 400 and "not a readable image" in r.json()["detail"]
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8))
    r = model_client.post("/api/images", content=png_bytes(noise), headers=auth)  # > 200 kB
    assert r.status_code == 413 and "larger than 200000 bytes" in r.json()["detail"]


def test_uploads_over_the_pixel_limit_are_refused_before_decoding(model_client, monkeypatch):
    monkeypatch.setattr(server_module, "MAX_UPLOAD_PIXELS", 1000)
    r = model_client.post("/api/images", content=png_bytes(Image.new("L", (40, 40))),
                          headers={"X-Featvis-Token": TOKEN})
    assert r.status_code == 413 and "the limit is 1000 pixels" in r.json()["detail"]


def test_a_feature_only_viewer_refuses_uploads(client):
    r = client.post("/api/images", content=png_bytes(Image.new("RGB", (8, 8))), headers={"X-Featvis-Token": TOKEN})
    assert r.status_code == 409 and "no model" in r.json()["detail"]


# ---- WebSocket messages ----------------------------------------------------------------------------
def test_every_message_type_gets_its_reply(client, session):
    feats = session.features("rand", "features")
    with client.websocket_connect(f"/ws?token={TOKEN}") as ws:
        ws.send_text(hover(seq=7, x=169.5, y=0, panel=1, colormap="magma"))
        header, payload = decode_binary(ws.receive_bytes())
        assert (header["type"], header["seq"], header["panel"], header["cell"]) == ("frame", 7, 1, [0, 16])
        expected = fv.FeatureSimilarity(feats).render((0, 16), colormap="magma").numpy().tobytes()
        assert payload[:header["map_bytes"]] == expected and header["map_bytes"] == 13 * 17 * 4
        assert np.array_equal(np.frombuffer(payload[header["map_bytes"]:], "<f4"), feats[:, 0, 16].numpy())
        ws.send_text(hover(seq=8, channel=3))
        header, payload = decode_binary(ws.receive_bytes())
        assert header["channel"] == 3 and payload[:header["map_bytes"]] == fv.colorize(feats[3]).numpy().tobytes()
        ws.send_text(json.dumps({"type": "vector", "seq": 9, "image": "rand", "layer": "features", "x": 0, "y": 129}))
        header, payload = decode_binary(ws.receive_bytes())
        assert (header["type"], header["seq"], header["cell"]) == ("vector", 9, [12, 0])
        assert np.array_equal(np.frombuffer(payload, "<f4"), feats[:, 12, 0].numpy())
        ws.send_text(json.dumps({"type": "layer", "seq": 10, "image": "rand", "layer": "features"}))
        ready = json.loads(ws.receive_text())
        assert (ready["type"], ready["seq"], ready["channels"], ready["height"], ready["width"]) == \
            ("layer_ready", 10, 19, 13, 17)


def test_a_layer_switch_computes_the_new_layer(model_client):
    with model_client.websocket_connect(f"/ws?token={TOKEN}") as ws:
        ws.send_text(json.dumps({"type": "layer", "seq": 1, "image": "chelsea", "layer": "_blocks.10"}))
        ready = json.loads(ws.receive_text())
        assert ready["type"] == "layer_ready" and ready["channels"] == 112
        ws.send_text(json.dumps({"type": "layer", "seq": 2, "image": "chelsea", "layer": "_blocks.99"}))
        error = json.loads(ws.receive_text())
        assert error == {"type": "error", "seq": 2, "message": error["message"]}
        assert "unknown layer '_blocks.99'" in error["message"]


@pytest.mark.parametrize("message,needle", [
    ("{bad json", "not valid JSON"),
    ('"a string"', "must be a JSON object"),
    (json.dumps({"type": "explode"}), "unknown message type"),
    (hover(x=float("nan")), "finite number"),
    (hover(image="x" * (MAX_MESSAGE_BYTES + 1)), f"larger than {MAX_MESSAGE_BYTES} bytes"),
    (hover(x=1e9), "outside the 170x130 image"),
    (hover(image="other"), "unknown image 'other'"),
    (hover(channel=19), "channel 19 out of range"),
    (hover(metric="l3"), "unknown metric"),
])
def test_bad_messages_get_an_error_and_the_socket_keeps_serving(client, message, needle):
    with client.websocket_connect(f"/ws?token={TOKEN}") as ws:
        ws.send_text(message)
        error = json.loads(ws.receive_text())
        assert error["type"] == "error" and needle in error["message"]
        ws.send_text(json.dumps({"type": "hover", "seq": 77, "image": "rand", "layer": "features", "x": 1}))
        assert json.loads(ws.receive_text()) == {"type": "error", "seq": 77, "message": "message is missing 'y'"}
        ws.send_bytes(b"\x00\x01binary")
        assert "binary messages are not accepted" in json.loads(ws.receive_text())["message"]
        ws.send_text(hover(seq=2))
        assert decode_binary(ws.receive_bytes())[0]["seq"] == 2


def test_an_internal_failure_is_reported_and_the_socket_keeps_serving(client, session, monkeypatch):
    real = session.frame
    calls = []

    def flaky(req):
        calls.append(req.seq)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return real(req)
    monkeypatch.setattr(session, "frame", flaky)
    with client.websocket_connect(f"/ws?token={TOKEN}") as ws:
        ws.send_text(hover(seq=1))
        error = json.loads(ws.receive_text())
        assert error["seq"] == 1 and "internal error: RuntimeError: boom" in error["message"]
        ws.send_text(hover(seq=2))
        assert decode_binary(ws.receive_bytes())[0]["seq"] == 2


def test_hovers_are_latest_wins_per_panel(client, session, monkeypatch):
    real = session.frame

    def slow_first(req):
        if req.seq == 1:
            time.sleep(0.6)  # every later hover arrives while this one is computed
        return real(req)
    monkeypatch.setattr(session, "frame", slow_first)
    with client.websocket_connect(f"/ws?token={TOKEN}") as ws:
        for seq in range(1, 21):
            ws.send_text(hover(seq=seq, x=seq, panel=0))
        ws.send_text(hover(seq=100, panel=1))
        got = []
        while 20 not in got or 100 not in got:
            got.append(decode_binary(ws.receive_bytes())[0]["seq"])
    assert got[0] == 1 and sorted(got[1:]) == [20, 100], got  # seqs 2..19 were dropped as stale


def test_memory_stays_flat_over_10000_hovers(client):
    def rss_bytes() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    with client.websocket_connect(f"/ws?token={TOKEN}") as ws:
        for k in range(11_000):
            if k == 1_000:
                start = rss_bytes()
            ws.send_text(hover(seq=k, x=k % 170, y=(k // 170) % 130, metric=("cosine", "dot")[k % 2]))
            ws.receive_bytes()
        grown = rss_bytes() - start
    assert grown < 16 << 20, f"RSS grew by {grown / 2**20:.1f} MiB over 10,000 hovers"


# ---- the real server (uvicorn in a thread) ----------------------------------------------------------
def test_the_real_server_serves_refuses_and_limits_messages(session):
    import httpx
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    server = ViewerServer(session, port=0)
    url = server.start()
    try:
        assert url.startswith(f"http://127.0.0.1:{server.port}/?token=") and len(server.token) >= 32
        assert httpx.get(url).status_code == 200
        assert httpx.get(url.split("?")[0]).status_code == 403
        ws_url = f"ws://127.0.0.1:{server.port}/ws?token={server.token}"
        with connect(ws_url, max_size=None) as ws:
            ws.send(hover(seq=3))
            assert decode_binary(ws.recv())[0]["seq"] == 3
            with pytest.raises(ConnectionClosed) as info:  # over the transport limit: closed with 1009
                ws.send("x" * (server_module.MAX_WS_BYTES + 1))
                ws.recv()
            assert info.value.rcvd.code == 1009
        with connect(ws_url) as ws:  # the server goes on serving
            ws.send(hover(seq=4))
            assert decode_binary(ws.recv())[0]["seq"] == 4
    finally:
        server.stop()
    assert not server.thread.is_alive()


def test_another_host_still_needs_the_token(session):
    import httpx

    server = ViewerServer(session, host="0.0.0.0", port=0)
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert httpx.get(f"{base}/api/state").status_code == 403
        assert httpx.get(f"{base}/api/state?token={server.token}").status_code == 200
    finally:
        server.stop()
