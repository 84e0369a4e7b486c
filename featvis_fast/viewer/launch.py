"""`featvis serve`: build a viewer session from images or feature files, start the server, print the URL."""
from __future__ import annotations

import os
import webbrowser
from collections.abc import Sequence

import torch

from ..images import load_image
from ..models import load_model
from .feature_files import load_feature_file
from .server import ViewerServer
from .session import ViewerSession


def build_session(images: Sequence[str] = (), features: Sequence[str] = (), model: str = "efficientnet-lite0",
                  layers: Sequence[str] | None = None, device: str = "cpu", dtype: torch.dtype = torch.float16,
                  backend: str | None = None, input_size: int = 1024) -> ViewerSession:
    """A session with the model (only when images are given) and every image / feature file loaded.

    images: paths or sample names; features: .npy / .npz (H, W, C) or IFeaLiD .zip files.
    Raises ValueError naming the bad argument (unknown layer, unreadable file, ...).
    """
    if not images and not features:
        raise ValueError("give at least one IMAGE (path or sample name) or --features FILE")
    net, preprocess = load_model(model, device=device) if images else (None, None)
    session = ViewerSession(net, preprocess, list(layers) if layers else None, device=device, dtype=dtype,
                            backend=backend, input_size=input_size)
    for item in images:
        session.add_image(load_image(item), os.path.splitext(os.path.basename(str(item)))[0])
    for path in features:
        loaded = load_feature_file(path)
        session.add_features(loaded.features, loaded.name, loaded.overlay)
    session.warm_up()
    return session


def serve(session: ViewerSession, host: str = "127.0.0.1", port: int = 8765, open_browser: bool = True,
          token: str | None = None) -> None:
    """Run the viewer until Ctrl-C. The printed URL carries the per-run token."""
    server = ViewerServer(session, host=host, port=port, token=token)
    url = server.start()
    shown = url.replace("0.0.0.0", "127.0.0.1").replace("[::]", "[::1]")
    print(f"featvis viewer: {shown}\n(the token in the URL is required for every request; Ctrl-C stops)", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {host}: anyone who can reach this port and has the token can use the viewer",
              flush=True)
    if open_browser:
        try:
            webbrowser.open(shown)
        except webbrowser.Error:
            pass
    try:
        server.thread.join()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
