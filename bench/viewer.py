"""Hover-to-painted-frame latency of the similarity viewer, in a real browser and from a socket client.

A viewer server runs in-process on a synthetic (C, h, w) feature map (random, fixed seed) with a
photo under it. Two clients, side by side in one run:

  browser  headless Chromium (Playwright): real mouse moves over the view at ~60 Hz; the page
           records performance.now() from each pointermove to the frame answering it being drawn
           (window.featvis.latencies); the server's share is the frame's server_ms.
  socket   a Python WebSocket client, one hover in flight: round trip and server_ms per frame
           (runs where no browser is, e.g. on the GPU machine).

Backends: ours (the default kernel backend for the device) vs `torch` (the plain PyTorch
reference path), and the naive server a script would write (F.cosine_similarity per hover, then
a LUT) through the socket client, so the ratios are measured in the same run.

    python bench/viewer.py [--device cpu|cuda] [--shape C,h,w] [--clients browser socket] [--moves N]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import environment, write_results  # noqa: E402

import featvis_fast as fv  # noqa: E402
from featvis_fast import _backend  # noqa: E402
from featvis_fast.viewer.protocol import decode_binary  # noqa: E402
from featvis_fast.viewer.server import ViewerServer  # noqa: E402
from featvis_fast.viewer.session import FEATURES_LAYER, ViewerSession  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


class NaiveSession(ViewerSession):
    """The per-hover script baseline: F.cosine_similarity on the raw map, min-max, LUT (no cache)."""

    def frame(self, req):
        t0 = time.perf_counter()
        feats = self.features(req.image, req.layer)
        row, col = self._cell(req, feats)
        sim = torch.nn.functional.cosine_similarity(feats, feats[:, row:row + 1, col:col + 1], dim=0)
        lo, hi = torch.aminmax(sim)
        idx = ((sim - lo) * (255.0 / (hi - lo).clamp_min(1e-12)) + 0.5).clamp_(0, 255).long()
        if req.encoding == "index8":
            rgba_bytes = idx.to(torch.uint8).cpu().numpy().tobytes()
        else:
            rgba_bytes = fv.colormap(req.colormap, feats.device)[idx].cpu().numpy().tobytes()
        vector = feats[:, row, col].cpu().numpy().astype("<f4")
        header = {"type": "frame", "seq": req.seq, "panel": req.panel, "cell": [row, col],
                  "height": int(feats.shape[1]), "width": int(feats.shape[2]), "channels": int(feats.shape[0]),
                  "lo": float(lo), "hi": float(hi), "server_ms": (time.perf_counter() - t0) * 1e3,
                  "map_bytes": len(rgba_bytes), "encoding": req.encoding, "colormap": req.colormap,
                  "vector_bytes": vector.nbytes, "image": req.image,
                  "layer": req.layer, "metric": req.metric, "channel": None}
        return header, rgba_bytes, vector.tobytes()


DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "int8": torch.int8}


def make_session(shape, device: str, backend: str | None, naive: bool = False,
                 dtype: torch.dtype = torch.float16) -> ViewerSession:
    C, h, w = shape
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(C, h, w, generator=gen)
    scale = max(1, min(4, 1024 // max(h, w)))
    photo = fv.sample_image("astronaut").resize((w * scale, h * scale))
    session = (NaiveSession if naive else ViewerSession)(device=device, backend=backend, dtype=dtype)
    session.add_features(feats, "synthetic", photo)
    session.warm_up()
    return session


def path_points(width: int, height: int, n: int) -> list[tuple[float, float]]:
    """A Lissajous path over the image: every move lands on a different cell."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return [(float((0.5 + 0.45 * np.sin(3 * a)) * width), float((0.5 + 0.45 * np.sin(2 * a + 0.5)) * height))
            for a in t]


def percentiles(values: list[float]) -> dict:
    arr = np.asarray(values, dtype=np.float64)
    return {"n": int(arr.size), "p50": float(np.percentile(arr, 50)), "p95": float(np.percentile(arr, 95)),
            "mean": float(arr.mean())}


def socket_client(server: ViewerServer, session: ViewerSession, moves: int, encoding: str = "index8") -> dict:
    """One hover in flight, asking for index8 frames as the page does."""
    from websockets.sync.client import connect

    image = session.images["synthetic"].image
    rtt, server_ms = [], []
    with connect(f"ws://127.0.0.1:{server.port}/ws?token={server.token}", max_size=None) as ws:
        for k, (x, y) in enumerate(path_points(image.width, image.height, moves + 10)):
            t0 = time.perf_counter()
            ws.send(json.dumps({"type": "hover", "seq": k, "image": "synthetic", "layer": FEATURES_LAYER,
                                "x": x, "y": y, "encoding": encoding}))
            header, _ = decode_binary(ws.recv())
            if k >= 10:  # warm-up: caches built, kernels loaded
                rtt.append((time.perf_counter() - t0) * 1e3)
                server_ms.append(header["server_ms"])
    return {"latency_ms": percentiles(rtt), "server_ms": percentiles(server_ms)}


PAGE_POINTER = """async ([points, hz]) => {
    const canvas = document.querySelector('[data-testid="view-0"]');
    for (const [x, y] of points) {
        canvas.dispatchEvent(new PointerEvent('pointermove', {clientX: x, clientY: y, bubbles: true,
                                                              pointerType: 'mouse', isPrimary: true}));
        await new Promise(r => setTimeout(r, 1000 / hz));
    }
}"""


def browser_client(server: ViewerServer, session: ViewerSession, moves: int, hz: float = 60.0,
                   pointer: str = "playwright") -> dict:
    from playwright.sync_api import sync_playwright

    image = session.images["synthetic"].image
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(server.url)
        page.wait_for_function("window.featvis && window.featvis.ready", timeout=120_000)
        box = page.locator('[data-testid="view-0"]').bounding_box()
        page.evaluate("window.featvis.latencies.length = 0")
        # move inside the part of the view the image covers (the page fits the image into the view)
        fit = min(box["width"] / image.width, box["height"] / image.height)
        x0 = box["x"] + (box["width"] - image.width * fit) / 2
        y0 = box["y"] + (box["height"] - image.height * fit) / 2
        points = [(x0 + x * fit, y0 + y * fit) for x, y in path_points(image.width, image.height, moves)]
        if pointer == "playwright":  # CDP input events, one Playwright round trip each
            start = time.perf_counter()
            for k, (x, y) in enumerate(points):
                page.mouse.move(x, y)
                time.sleep(max(0.0, start + (k + 1) / hz - time.perf_counter()))
        else:  # PointerEvents dispatched inside the page at hz: no driver traffic competing for the CPU
            page.evaluate(PAGE_POINTER, [points, hz])
        page.wait_for_timeout(500)
        lat = page.evaluate("window.featvis.latencies.slice()")
        browser.close()
    lat = lat[5:]  # warm-up
    return {"latency_ms": percentiles([r["ms"] for r in lat]), "server_ms": percentiles([r["server_ms"] for r in lat]),
            "queued_ms": percentiles([r["queued_ms"] for r in lat]), "rtt_ms": percentiles([r["rtt_ms"] for r in lat]),
            "paint_ms": percentiles([r["paint_ms"] for r in lat]),
            "server_queued_ms": percentiles([r["server_queued_ms"] for r in lat]), "frames": len(lat), "moves": moves}


def run_case(shape, device, backend, client, moves, naive=False, dtype=torch.float16) -> dict:
    """client: socket | browser (Playwright mouse moves) | browser-page (pointer events from inside the page)."""
    session = make_session(shape, device, backend, naive, dtype)
    server = ViewerServer(session, port=0)
    server.start()
    try:
        session.similarity("synthetic", FEATURES_LAYER, "cosine")  # build the cache before timing
        if client.startswith("browser"):
            result = browser_client(server, session, moves,
                                    pointer="page" if client == "browser-page" else "playwright")
        else:
            result = socket_client(server, session, moves)
    finally:
        server.stop()
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--shape", default=None, help="C,h,w (default 1024,128,128 on CPU, 2048,512,512 on CUDA)")
    p.add_argument("--clients", nargs="+", default=None, choices=["browser", "browser-page", "socket"])
    p.add_argument("--moves", type=int, default=300)
    p.add_argument("--dtype", default="float16", choices=list(DTYPES), help="the viewer's feature cache storage")
    p.add_argument("--threads", type=int, default=None, help="torch threads of the server (default: torch's)")
    p.add_argument("--no-baselines", action="store_true", help="skip the torch and naive socket rows")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    shape = tuple(int(v) for v in
                  (args.shape or ("2048,512,512" if args.device == "cuda" else "1024,128,128")).split(","))
    clients = args.clients or (["browser", "browser-page", "socket"] if os.path.exists(CHROMIUM) else ["socket"])
    ours = _backend.resolve_backend(None, torch.device(args.device))
    if args.threads:
        torch.set_num_threads(args.threads)
    env = environment(args.device)
    rows = []
    cases = [(c, ours, False) for c in clients]
    if not args.no_baselines:
        cases += [("socket", "torch", False), ("socket", "naive", True)]
    for client, backend, naive in cases:
        res = run_case(shape, args.device, None if backend == "naive" else backend, client,
                       args.moves, naive, DTYPES[args.dtype])
        row = {"client": client, "backend": backend, "shape": list(shape), "dtype": args.dtype,
               "threads": torch.get_num_threads(), **res}
        rows.append(row)
        print(f"{client:12s} {backend:8s} hover->painted p50 {res['latency_ms']['p50']:7.2f} ms  "
              f"p95 {res['latency_ms']['p95']:7.2f} ms  server p50 {res['server_ms']['p50']:7.2f} ms "
              f"p95 {res['server_ms']['p95']:7.2f} ms", flush=True)
        if client.startswith("browser"):
            print("         split p50/p95: " + ", ".join(f"{k} {res[k]['p50']:.2f}/{res[k]['p95']:.2f}"
                                                        for k in ("queued_ms", "rtt_ms", "server_queued_ms",
                                                                  "paint_ms")), flush=True)
    base = {r["backend"]: r["latency_ms"]["p95"] for r in rows if r["client"] == "socket"}
    lines = [f"# Viewer latency, {env['device']}, {env['date']}", "",
             f"Feature map {shape}, torch {env['torch']}. Latency: pointermove (browser) or send (socket) to the "
             "frame drawn / received; server: the frame's compute time.", "",
             "| client | backend | p50 ms | p95 ms | server p50 ms | server p95 ms | p95 vs naive |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = base.get("naive", float("nan")) / r["latency_ms"]["p95"] if r["client"] == "socket" else float("nan")
        lines.append(f"| {r['client']} | {r['backend']} | {r['latency_ms']['p50']:.2f} | {r['latency_ms']['p95']:.2f}"
                     f" | {r['server_ms']['p50']:.2f} | {r['server_ms']['p95']:.2f} | "
                     f"{'' if ratio != ratio else f'{ratio:.1f}x'} |")
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    if not args.no_write:
        for path in write_results("viewer", args.device, env, rows, markdown):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
