"""`featvis serve`: building the session from images / feature files, and the serve loop."""
import numpy as np
import pytest

from featvis_fast.cli import main
from featvis_fast.viewer import launch
from featvis_fast.viewer.protocol import ProtocolError


def test_feature_files_make_a_model_free_session(tmp_path):
    path = tmp_path / "maps.npy"
    np.save(path, np.random.default_rng(0).standard_normal((9, 14, 5)).astype(np.float32))  # (H, W, C)
    session = launch.build_session(features=[str(path)])
    state = session.state()
    assert session.model is None and state["can_upload"] is False
    assert [(i["width"], i["height"], i["layers"]) for i in state["images"]] == [(14, 9, ["features"])]
    assert tuple(session.features(state["images"][0]["id"], "features").shape) == (5, 9, 14)


def test_images_and_layers_are_checked():
    with pytest.raises(ValueError, match="give at least one IMAGE"):
        launch.build_session()
    with pytest.raises(ProtocolError, match="unknown layer '_blocks.99'"):
        launch.build_session(images=["chelsea"], layers=["_blocks.99"])
    with pytest.raises(ValueError, match="neither an image file nor a sample name"):
        launch.build_session(images=["no-such.png"])


def test_the_cli_reports_bad_arguments(capsys, tmp_path):
    assert main(["serve", "--no-browser"]) == 2
    assert "give at least one IMAGE" in capsys.readouterr().err
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"not an array")
    assert main(["serve", "--features", str(bad), "--no-browser"]) == 2
    assert "featvis: error:" in capsys.readouterr().err


def test_serve_prints_the_tokened_url_and_stops_cleanly_on_ctrl_c(monkeypatch, capsys):
    events = []

    class FakeThread:
        def join(self):
            events.append("join")
            raise KeyboardInterrupt

    class FakeServer:
        def __init__(self, session, host, port, token):
            events.append(("init", host, port))
            self.thread = FakeThread()

        def start(self):
            return "http://0.0.0.0:8765/?token=abc"

        def stop(self):
            events.append("stop")

    opened = []
    monkeypatch.setattr(launch, "ViewerServer", FakeServer)
    monkeypatch.setattr(launch.webbrowser, "open", opened.append)
    launch.serve(session=None, host="0.0.0.0", port=8765, open_browser=True)
    out = capsys.readouterr().out
    assert "http://127.0.0.1:8765/?token=abc" in out and "warning: listening on 0.0.0.0" in out
    assert opened == ["http://127.0.0.1:8765/?token=abc"]
    assert events == [("init", "0.0.0.0", 8765), "join", "stop"]
