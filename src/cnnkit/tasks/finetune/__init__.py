"""Transfer learning the course's way: a new head on a frozen pretrained base, then all layers.

- :mod:`cnnkit.models.surgery`: loading backbone weights, finding the head, freezing, rate groups;
- :mod:`.pretrained`: a registered model with pretrained weights and a new head;
- :mod:`.fit`: the two-phase fit (:func:`finetune`);
- :mod:`.run`: the config and run folder of ``cnnkit finetune``.
"""

from ...models.surgery import frozen_base, head_parameter_names, load_backbone_weights, param_groups
from .fit import FinetuneResult, finetune
from .pretrained import pretrained_model
from .run import FinetuneConfig, finetune_run, finetune_test_data

__all__ = [
    "FinetuneConfig",
    "FinetuneResult",
    "finetune",
    "finetune_run",
    "finetune_test_data",
    "frozen_base",
    "head_parameter_names",
    "load_backbone_weights",
    "param_groups",
    "pretrained_model",
]
