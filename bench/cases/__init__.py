"""The benchmark cases, one module per case or small family, and their registry.

Each case takes the shared :class:`Context` and returns its result rows (dicts). Every row
carries: images, seconds (best of the timed repeats), img/s, s/epoch where it is a training or
validation epoch, GFLOP per image, achieved GFLOP/s, fraction of the measured FP32 peak, the
load average while it ran, and the settings used.
"""

from __future__ import annotations

from ._common import Context, _ratios
from .allreduce import allreduce
from .compiled import compiled
from .contention import contention
from .course import course_infer, course_train
from .export import export_infer
from .imagefolder import imagefolder
from .keras_course import keras_course
from .recipes import best_recipe, recipe_5min, time_to_accuracy
from .reference import reference
from .studio import studio
from .threads import profile, threads
from .zoo import resnet18_train, resnet50_infer

__all__ = ["CASES", "DEFAULT_CASES", "Context", "_ratios"]


CASES = {
    "reference": reference,
    "course_train": course_train,
    "course_infer": course_infer,
    "resnet18_train": resnet18_train,
    "resnet50_infer": resnet50_infer,
    "time_to_accuracy": time_to_accuracy,
    "compile": compiled,
    "export_infer": export_infer,
    "keras_course": keras_course,
    "threads": threads,
    "profile": profile,
    "best_recipe": best_recipe,
    "recipe_5min": recipe_5min,
    "allreduce": allreduce,
    "studio": studio,
    "imagefolder": imagefolder,
    "contention": contention,
}
DEFAULT_CASES = [
    "threads",
    "profile",
    "reference",
    "course_train",
    "course_infer",
    "resnet18_train",
    "resnet50_infer",
    "time_to_accuracy",
]
