"""``python -m cnnkit ...``: the ``cnnkit`` command (what ``torchrun -m cnnkit`` starts in each worker)."""

import sys

from .cli.__main__ import process_main

if __name__ == "__main__":
    sys.exit(process_main())
