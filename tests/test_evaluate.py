"""Accuracy figures against a plain per-pair count."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training import rnn
from training.evaluate import all_pairs, evaluate, exhaustive_accuracy, random_pairs
from training.predictor import Predictor
from training.store import ModelStore
from training.train import TrainConfig, train


@pytest.fixture(scope="module")
def half_trained() -> rnn.Params:
    """A model stopped early, so that some but not all sums are right."""
    return train(TrainConfig(seed=1, max_steps=80, early_stop=False)).params


def reference_accuracy(params: rnn.Params, a: np.ndarray, b: np.ndarray, width: int) -> float:
    """Exact sums counted pair by pair from the training forward pass."""
    x = np.stack([(a.astype(np.int64)[None, :] >> np.arange(width)[:, None]) & 1,
                  (b.astype(np.int64)[None, :] >> np.arange(width)[:, None]) & 1], axis=-1)
    p = rnn.forward(params, x.astype(np.float64))["p"] > 0.5
    sums = [sum(int(p[t, i]) << t for t in range(width)) for i in range(len(a))]
    return sum(int(s) == int(x) + int(y) for s, x, y in zip(sums, a, b, strict=True)) / len(a)


def test_all_pairs_is_every_pair_below_128() -> None:
    a, b = all_pairs()
    assert len(a) == 16_384
    assert len(set(zip(a.tolist(), b.tolist(), strict=True))) == 16_384
    assert int(a.max()) == int(b.max()) == 127


def test_exhaustive_accuracy_equals_per_pair_count(half_trained: rnn.Params) -> None:
    expected = reference_accuracy(half_trained, *all_pairs(), 8)
    assert 0.0 < expected < 1.0
    assert exhaustive_accuracy(half_trained) == pytest.approx(expected, abs=0)


@pytest.mark.parametrize("width", [16, 64])
def test_long_width_accuracy_equals_per_pair_count(half_trained: rnn.Params, width: int) -> None:
    a, b = random_pairs(np.random.default_rng(width), width, 300)
    assert int(max(a.max(), b.max())) < 2 ** (width - 1)
    expected = reference_accuracy(half_trained, a, b, width)
    predictor = Predictor(half_trained)
    got = float(np.mean(np.array(predictor.add(a, b, width), dtype=np.uint64) == a + b))
    assert got == expected


def test_evaluate_reports_every_width(half_trained: rnn.Params) -> None:
    metrics = evaluate(half_trained, seed=0, count=200)
    assert set(metrics) == {"accuracy_8bit", "accuracy_16bit", "accuracy_32bit", "accuracy_64bit"}
    assert metrics["accuracy_8bit"] == exhaustive_accuracy(half_trained) < 1.0


def test_bundled_model_is_exact() -> None:
    """The committed default: all 16,384 pairs and 1,000 random 64-bit pairs, checked per pair."""
    model = ModelStore(Path(__file__).resolve().parent.parent / "models").load_current()
    assert reference_accuracy(model.params, *all_pairs(), 8) == 1.0
    a, b = random_pairs(np.random.default_rng(2026), 64, 1000)
    assert reference_accuracy(model.params, a, b, 64) == 1.0
