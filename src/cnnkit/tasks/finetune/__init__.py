"""Transfer learning the course's way: a new head on a frozen pretrained base, then all layers.

- :mod:`cnnkit.models.surgery`: loading backbone weights, finding the head, freezing, rate groups;
- :mod:`.fit`: the two-phase fit (:func:`finetune`), both phases through the engine;
- :mod:`cnnkit.runs.pretrained` and :mod:`cnnkit.runs.finetune`: a model from a run folder or
  weights file with a new head, and the config and run folder of ``cnnkit finetune``.
"""

from .fit import FinetuneResult, finetune

__all__ = ["FinetuneResult", "finetune"]
