"""`cnnkit studio [RUN_OR_MODEL ...]`: look inside models in the browser, for images you choose.

Starts a local web page (no internet needed) where you upload a photo or draw, see the top
classes, walk the layers (shapes, parameters, receptive fields, feature maps; click a map to see
the kernel and the input window behind one pixel), a convolution's filters and weight
histogram, Grad-CAM for any class, and a run's training curves, updated while `cnnkit train`
writes them; for localization, detection, Mask R-CNN and segmentation runs, their boxes and
masks drawn on your photo at its own size. RUN_OR_MODEL is ``fashion`` (the shipped
Fashion-MNIST model), a run folder, or a registered model name (freshly initialised: untrained).
Only what is named here (and the runs under --runs) is served; the page is reachable from this
machine only unless --host says so.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import UsageError
from .targets import add_target

HELP = "look inside models and runs in the browser (a local web page)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_target(p, "targets", many=True)
    p.add_argument("--runs", metavar="DIR", help="also serve every run folder directly under DIR")
    p.add_argument("--port", type=int, default=8765, help="TCP port (default 8765; 0: any free port)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only)",
    )


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be in 0..65535, got {args.port}")
    try:
        import uvicorn  # noqa: F401  (needed by serve; missing means the extra is missing)

        from ..studio import create_app, load_catalog
        from ..studio.app import LOCAL_HOSTS
        from ..studio.server import listen, serve
    except ImportError as exc:
        raise UsageError(
            f"cnnkit studio needs the studio extra ({exc.name} is missing): pip install 'cnnkit[studio]'"
        ) from None
    targets = args.targets or ([] if args.runs else ["fashion"])
    sock = listen(args.host, args.port)  # a port in use fails now, before the models load
    try:
        catalog = load_catalog(targets, args.runs)
    except BaseException:
        sock.close()
        raise
    for line in catalog.skipped:
        print(f"cnnkit studio: skipped {line}", file=sys.stderr)
    local = args.host in LOCAL_HOSTS
    if not local:
        print(
            f"cnnkit: warning: listening on {args.host}: anyone who can reach this machine can use the "
            "studio and its models; use the default --host 127.0.0.1 unless you mean that",
            file=sys.stderr,
        )
    app = create_app(catalog, allowed_hosts=LOCAL_HOSTS if local else None)
    host = f"[{args.host}]" if ":" in args.host else args.host
    names = ", ".join(entry.name for entry in catalog)
    url = f"http://{host}:{sock.getsockname()[1]}/"
    print(f"cnnkit studio: serving {names} at {url} (Ctrl+C stops)", flush=True)
    serve(app, sock)
    return 0
