"""The plain reference loop in a fresh process, for ``reference``: ``python -m cases --plain N``
(with bench/ on the path)."""

from __future__ import annotations

import argparse
import json

import torch

from .reference import plain_loop

parser = argparse.ArgumentParser()
parser.add_argument("--plain", type=int, required=True, help="threads")
parser.add_argument("--quick", action="store_true")
parser.add_argument("--tuned-malloc", action="store_true")
args = parser.parse_args()
torch.set_num_threads(args.plain)
print(json.dumps(plain_loop(args.quick, args.tuned_malloc)))
