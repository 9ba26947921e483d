"""certify(): models that must certify (and are then sampled wide) and models that must not."""

from __future__ import annotations

import numpy as np
import pytest

from tests.adders import adder
from training.certify import certify, run_structured_pairs, verify
from training.gate import random_pairs, run_gate
from training.predictor import Predictor
from training.train import make_config, train


def sampled_exact(params: dict) -> None:
    """Served sums against exact ones at long widths, run-structured and uniform pairs."""
    served = Predictor(params)
    rng = np.random.default_rng(1)
    for width, count in ((64, 2000), (700, 100), (5000, 20), (9000, 6)):
        pairs = run_structured_pairs(rng, width, count) + random_pairs(rng, width, count // 4)
        got = served.add([p[0] for p in pairs], [p[1] for p in pairs], width)
        assert got == [a + b for a, b, _ in pairs]


def test_exact_adder_certifies_and_is_exact_when_sampled(exact_adder, exact_verdict) -> None:
    """The hand-built adder is proved, and sampling at long widths agrees."""
    assert exact_verdict.status == "certified", exact_verdict.reason
    assert exact_verdict.summary["cells"] > 0 and exact_verdict.summary["classes"] > 0
    sampled_exact(exact_adder)


def test_sixteen_units_certify() -> None:
    """Any hidden size: 16 units (13 idle) certify too."""
    params = adder(13)
    verdict = certify(params, time_limit=30.0)
    assert verdict.status == "certified", verdict.reason
    assert verify(params, verdict.certificate)["cells"] > 0
    sampled_exact(params)


def test_wrong_beyond_the_gate_is_not_certified(slow_model) -> None:
    """Exact at every width the gate checks, wrong beyond N > 4096: never certified."""
    params, flips = slow_model
    assert flips > 4096
    assert run_gate(Predictor(params), 4096)["passed"]
    a = (1 << (flips + 10)) - 1
    assert Predictor(params).add([a], [0], flips + 11)[0] != a  # really wrong beyond N
    assert Predictor(params).add([(1 << 4096) - 1], [0], 4097)[0] == (1 << 4096) - 1
    verdict = certify(params, time_limit=4.0)
    assert verdict.status != "certified"
    assert verdict.reason


def test_seed_0_gets_a_confirmed_counterexample(seed0_before_certification: dict) -> None:
    """Seed 0 of the trainer before certification passed its gate but adds some pairs wrongly."""
    params = seed0_before_certification
    assert Predictor(params).add([673], [137436856354], 38) != [673 + 137436856354]
    verdict = certify(params, time_limit=10.0)
    assert verdict.status == "counterexample"
    c = verdict.counterexample
    served = Predictor(params).add([c["a"]], [c["b"]], c["bits"])[0]
    assert served & ((1 << c["bits"]) - 1) == c["got"] != c["a"] + c["b"]


@pytest.mark.parametrize("make", [
    lambda: train(make_config({"seed": 3, "max_steps": 50, "early_stop": False},
                              bound_work=False)).params,
    lambda: {**adder(1), "w_o": adder(1)["w_o"] * np.array([[1.0, -1.0, 1.0, 1.0]])},
    lambda: {**adder(1), "b_h": adder(1)["b_h"] + np.array([0.0, 0.0, 30.0, 0.0])},
])
def test_wrong_models_are_not_certified(make) -> None:
    """A model after 50 steps and perturbed adders: a counterexample or unknown, never proved."""
    params = make()
    verdict = certify(params, time_limit=3.0)
    assert verdict.status in ("counterexample", "unknown")
    if verdict.status == "counterexample":
        c = verdict.counterexample
        assert Predictor(params).add([c["a"]], [c["b"]], c["bits"])[0] != c["a"] + c["b"]
