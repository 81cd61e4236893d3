"""Confusion matrices and the most confident mistakes, against scikit-learn and brute force."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import confusion_matrix

from cnnkit.viz import (
    confusion_counts,
    most_confident_errors,
    plot_confusion_matrix,
    plot_mistakes,
    predict_proba,
)


def test_confusion_figure_shows_counts_and_row_rates_with_class_names(tiny_run):
    probs = predict_proba(tiny_run.model, tiny_run.test.images)
    predicted = probs.argmax(1)
    reference = confusion_matrix(tiny_run.test.labels.numpy(), predicted.numpy(), labels=range(10))
    counts = confusion_counts(tiny_run.test.labels, predicted, 10)
    np.testing.assert_array_equal(counts, reference)
    # metrics.json of the run holds the same matrix (computed by the Trainer).
    np.testing.assert_array_equal(np.array(tiny_run.metrics["confusion_matrix"]), reference)
    fig = plot_confusion_matrix(reference, tiny_run.test.class_names)
    left, right = [ax for ax in fig.axes if ax.images]
    np.testing.assert_array_equal(left.images[0].get_array(), reference)
    rates = np.asarray(right.images[0].get_array())
    np.testing.assert_allclose(rates, reference / reference.sum(axis=1, keepdims=True))
    np.testing.assert_allclose(rates.sum(axis=1), 1.0)
    for ax in (left, right):
        assert [t.get_text() for t in ax.get_xticklabels()] == tiny_run.test.class_names
        assert [t.get_text() for t in ax.get_yticklabels()] == tiny_run.test.class_names
        assert ax.get_xlabel() == "predicted" and ax.get_ylabel() == "true"
    assert f"{np.trace(reference)} of 200 right" in fig._suptitle.get_text()


def test_most_confident_mistakes_match_brute_force_and_are_drawn_labelled(tiny_run):
    probs = predict_proba(tiny_run.model, tiny_run.test.images)
    labels = tiny_run.test.labels
    mistakes = most_confident_errors(probs, labels, k=12)
    p = probs.numpy()
    wrong = [i for i in range(len(labels)) if p[i].argmax() != int(labels[i])]
    expected = sorted(wrong, key=lambda i: -p[i].max())[:12]
    assert [m.index for m in mistakes] == expected
    assert all(m.predicted != m.true for m in mistakes)
    assert [m.confidence for m in mistakes] == sorted((m.confidence for m in mistakes), reverse=True)
    names = tiny_run.test.class_names
    fig = plot_mistakes(tiny_run.test.images, mistakes, names)
    axes = [ax for ax in fig.axes if ax.images]
    assert len(axes) == 12
    for ax, m in zip(axes, mistakes):
        assert ax.get_title().startswith(f"true: {names[m.true]}\npred: {names[m.predicted]} (")
        np.testing.assert_allclose(ax.images[0].get_array(), tiny_run.test.images[m.index, 0].numpy() / 255.0)


def test_no_mistakes_gives_a_figure_that_says_so():
    probs = torch.eye(3)
    assert most_confident_errors(probs, torch.arange(3)) == []
    fig = plot_mistakes(torch.zeros(3, 1, 4, 4, dtype=torch.uint8), [])
    assert "no misclassified images" in fig.texts[0].get_text()
