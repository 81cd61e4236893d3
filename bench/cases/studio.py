"""cnnkit studio: the answer time of one look inside, over real HTTP on 127.0.0.1, and page weight.

One look = upload a 28 × 28 Fashion-MNIST test image and get its top-5 (POST .../inputs), then
all feature maps of one layer (GET .../layers/N/maps): what the page does when an image is
chosen with a layer open. Target: under 100 ms on 2 cores for the shipped model.
"""

from __future__ import annotations

import http.client
import io
import json
import socket

import torch
from PIL import Image

from measure import load, timed

from ._common import Context, _with_threads


class _Client:
    """Keep-alive HTTP with TCP_NODELAY, as browsers talk (a client without it waits ~40 ms for
    delayed ACKs on every request after the first: httpx's measured 48 ms where curl took 2)."""

    def __init__(self, base: str) -> None:
        host, port = base.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port))
        self.conn.connect()
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def request(self, method: str, path: str, body: bytes | None = None) -> bytes:
        self.conn.request(method, path, body=body)
        response = self.conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"{method} {path}: HTTP {response.status} {data[:200]!r}")
        return data


def studio(ctx: Context) -> list[dict]:
    """Upload + top-5 + every map of one layer for a 28 × 28 input (shipped model), and page bytes."""
    try:
        from cnnkit.studio import create_app, load_catalog
        from cnnkit.studio.server import serve_in_thread
    except ImportError as exc:
        return [{"case": "studio", "skipped": f"the studio extra is not installed ({exc.name})"}]
    buffer = io.BytesIO()
    Image.fromarray(ctx.test.images[0, 0].numpy()).save(buffer, format="PNG")
    png = buffer.getvalue()
    catalog = load_catalog(["fashion"])
    model_id = next(iter(catalog)).id
    base, stop = serve_in_thread(create_app(catalog))
    rows = []
    repeats = 10 if ctx.quick else 50
    try:
        client = _Client(base)
        with _with_threads(ctx.perf.num_threads or 2):
            page_bytes = sum(
                len(client.request("GET", p)) for p in ("/", "/static/app.js", "/static/app.css")
            )
            for layer, name in ((0, "conv1, 32 maps 28x28"), (2, "conv2, 64 maps 14x14")):

                def look(layer: int = layer) -> None:
                    answer = json.loads(client.request("POST", f"/api/models/{model_id}/inputs", png))
                    client.request(
                        "GET", f"/api/models/{model_id}/inputs/{answer['input_id']}/layers/{layer}/maps"
                    )

                before = load()
                t = timed(look, repeats=repeats, warmup=3)
                times = sorted(t["seconds"])
                rows.append(
                    {
                        "case": f"studio[{name}]",
                        "ms_best": round(1000 * t["best"], 1),
                        "ms_median": round(1000 * t["median"], 1),
                        "ms_p90": round(1000 * times[int(0.9 * (len(times) - 1))], 1),
                        "repeats": repeats,
                        "page_bytes": page_bytes,
                        "threads": torch.get_num_threads(),
                        "load": [before, *t["load"]],
                        "note": "upload + top-5 + all maps of one layer, HTTP on 127.0.0.1, shipped model",
                    }
                )
    finally:
        stop()
    return rows
