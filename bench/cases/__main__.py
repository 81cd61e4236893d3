"""The plain reference loops in a fresh process (with bench/ on the path): ``python -m cases
--plain N`` for ``reference``, ``python -m cases --plain N --imagefolder ROOT`` for ``imagefolder``."""

from __future__ import annotations

import argparse
import json

import torch

from .imagefolder import plain_imagefolder
from .reference import plain_loop

parser = argparse.ArgumentParser()
parser.add_argument("--plain", type=int, required=True, help="threads")
parser.add_argument("--quick", action="store_true")
parser.add_argument("--tuned-malloc", action="store_true")
parser.add_argument("--imagefolder", metavar="ROOT", help="the plain torchvision ImageFolder script")
parser.add_argument("--epochs", type=int, default=1)
parser.add_argument("--init", help="initial ResNet-18 state dict (with --imagefolder)")
args = parser.parse_args()
torch.set_num_threads(args.plain)
if args.imagefolder:
    print(json.dumps(plain_imagefolder(args.imagefolder, args.epochs, args.init)))
else:
    print(json.dumps(plain_loop(args.quick, args.tuned_malloc)))
