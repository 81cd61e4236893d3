"""Classification: the course's task (one class per image) on the engine."""

from .task import ClassifyTask, ClassifyTrainer

__all__ = ["ClassifyTask", "ClassifyTrainer"]
