"""The positional argument that names what a command reads, spelt one way in every command."""

from __future__ import annotations

import argparse

METAVAR = "RUN_OR_MODEL"
WHAT = "a run folder, 'fashion' (the shipped model) or a registered model name"


def add_target(
    p: argparse.ArgumentParser, dest: str = "target", *, also: str = "", many: bool = False
) -> None:
    """Add the RUN_OR_MODEL positional as ``dest``: one, or with ``many`` any number (default
    fashion); ``also`` names what else this command takes."""
    what = f"{WHAT}, or {also}" if also else WHAT
    if many:
        p.add_argument(dest, metavar=METAVAR, nargs="*", help=f"{what}; any number (default: fashion)")
    else:
        p.add_argument(dest, metavar=METAVAR, help=what)
