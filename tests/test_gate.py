"""The promotion gate: passes exact adders, catches models that err at any served width."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pytest

from training.gate import run_gate, stress_pairs, stress_widths
from training.predictor import Predictor
from training.train import TrainConfig, train


class Adder:
    """A stand-in predictor: exact, except for a chosen bit from a chosen width on."""

    def __init__(self, wrong_bit: int | None = None) -> None:
        self.wrong_bit = wrong_bit

    def add(self, a: Sequence[int], b: Sequence[int], bits: int) -> list[int]:
        mask = (1 << bits) - 1
        out = [(int(x) + int(y)) & mask for x, y in zip(a, b, strict=True)]
        if self.wrong_bit is not None and bits > self.wrong_bit:
            out = [v ^ (1 << self.wrong_bit) for v in out]
        return out


def test_an_exact_adder_passes_every_check() -> None:
    gate = run_gate(Adder(), 4096)  # type: ignore[arg-type]
    assert gate["passed"] and gate["failed"] is None and gate["max_bits"] == 4096
    names = [c["name"] for c in gate["checks"]]
    assert names == ["exhaustive_8bit", "carry_chains", "random_64bit", "random_256bit",
                     "random_1024bit", "random_4096bit"]
    pairs = {c["name"]: c["pairs"] for c in gate["checks"]}
    assert pairs["exhaustive_8bit"] == 16_384 and pairs["random_64bit"] >= 10_000
    assert all(pairs[f"random_{w}bit"] >= 100 for w in (256, 1024, 4096))


def test_a_model_wrong_only_at_long_widths_fails_the_gate() -> None:
    gate = run_gate(Adder(wrong_bit=1500), 4096)  # type: ignore[arg-type]
    assert not gate["passed"] and gate["failed"] == "carry_chains"
    chains = gate["checks"][1]
    assert chains["errors"] > 0 and chains["example"]["bits"] > 1500
    example = chains["example"]
    assert int(example["got"]) != int(example["a"]) + int(example["b"])
    assert gate["checks"][0]["passed"] and gate["checks"][2]["passed"]
    assert run_gate(Adder(wrong_bit=1500), 1024)["passed"]  # type: ignore[arg-type]


def test_stress_widths_cover_every_served_width_class() -> None:
    widths = stress_widths(4096)
    assert set(range(9, 81)) <= set(widths)
    for k in range(7, 12):
        assert {2**k - 1, 2**k, 2**k + 1} <= set(widths)
    assert {4095, 4096} <= set(widths) and max(widths) == 4096
    assert max(stress_widths(1000)) == 1000


def test_stress_pairs_fit_the_width_and_include_the_full_carry_chain() -> None:
    for width in (9, 64, 129):
        pairs = stress_pairs(width)
        assert all(a + b < 2**width and a < 2 ** (width - 1) for a, b, _ in pairs)
        assert (2 ** (width - 1) - 1, 1, width) in pairs
        assert (2 ** (width - 1) - 1, 2 ** (width - 1) - 1, width) in pairs


@pytest.fixture(scope="module")
def trained() -> Predictor:
    return Predictor(train(TrainConfig(seed=1)).params)


def test_a_default_model_passes_quickly(trained: Predictor) -> None:
    started = time.process_time()  # CPU time: other work on a shared machine does not count
    gate = run_gate(trained, 4096)
    assert gate["passed"], gate["failed"]
    assert time.process_time() - started < 2.0


def test_a_barely_trained_model_fails_with_an_example() -> None:
    gate = run_gate(Predictor(train(TrainConfig(seed=1, max_steps=20)).params), 4096)
    assert not gate["passed"] and gate["failed"] == "exhaustive_8bit"
    example = gate["checks"][0]["example"]
    assert int(example["got"]) != int(example["a"]) + int(example["b"]) and example["bits"] == 8


def test_max_bits_out_of_range_is_refused(trained: Predictor) -> None:
    with pytest.raises(ValueError):
        run_gate(trained, 4)
