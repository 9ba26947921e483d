"""The promotion gate: passes exact adders, catches models that err at any served width."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pytest

from training.gate import checks, run_gate, stress_pairs, stress_widths
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
                     "random_1024bit", "random_4096bit", "run_structured_64bit",
                     "run_structured_512bit", "run_structured_4096bit"]
    pairs = {c["name"]: c["pairs"] for c in gate["checks"]}
    assert pairs["exhaustive_8bit"] == 16_384 and pairs["random_64bit"] >= 10_000
    assert all(pairs[f"random_{w}bit"] >= 100 for w in (256, 1024, 4096))
    assert pairs["run_structured_64bit"] >= 8_000 and pairs["run_structured_4096bit"] >= 20


class SlowDrift(Adder):
    """Exact, except where a repeats 001 for 24 bits over zeros of b (within the low 64 bits).

    Inputs like these move a model's states slowly; uniform pairs and carry chains never hold
    such a stretch, run-structured pairs often do.
    """

    SPAN = 24

    def add(self, a: Sequence[int], b: Sequence[int], bits: int) -> list[int]:
        out = super().add(a, b, bits)
        mask = (1 << self.SPAN) - 1
        motif = int("001" * (self.SPAN // 3), 2)
        shapes = {motif, (motif << 1) & mask, (motif << 2) & mask}
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            x, y = int(x), int(y)
            for shift in range(min(bits, 64) - self.SPAN):
                if (y >> shift) & mask == 0 and (x >> shift) & mask in shapes:
                    out[i] ^= 1 << (shift + self.SPAN)
                    break
        return out


def test_a_model_wrong_only_on_slowly_drifting_inputs_fails_the_run_structured_check() -> None:
    gate = run_gate(SlowDrift(), 4096)  # type: ignore[arg-type]
    results = {c["name"]: c for c in gate["checks"]}
    assert not gate["passed"] and gate["failed"] == "run_structured_64bit"
    assert all(results[name]["passed"] for name in ("exhaustive_8bit", "carry_chains",
                                                    "random_64bit", "random_256bit"))
    example = results["run_structured_64bit"]["example"]
    assert int(example["got"]) != int(example["a"]) + int(example["b"])
    assert results["run_structured_64bit"]["errors"] >= 5


def test_the_run_structured_pairs_fit_the_width() -> None:
    for name, pairs in checks(4096):
        if name.startswith("run_structured"):
            width = int(name.removeprefix("run_structured_").removesuffix("bit"))
            assert all(w == width and a < 2 ** (w - 1) and b < 2 ** (w - 1) for a, b, w in pairs)
    assert [n for n, _ in checks(100)][-1] == "run_structured_64bit"  # widths above max_bits go


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
    return Predictor(train(TrainConfig(seed=1, certify=False)).params)


def test_a_default_model_passes_quickly(trained: Predictor) -> None:
    started = time.process_time()  # CPU time: other work on a shared machine does not count
    gate = run_gate(trained, 4096)
    assert gate["passed"], gate["failed"]
    assert time.process_time() - started < 2.0


def test_a_barely_trained_model_fails_with_an_example() -> None:
    gate = run_gate(Predictor(train(TrainConfig(seed=1, max_steps=20, certify=False)).params),
                    4096)
    assert not gate["passed"] and gate["failed"] == "exhaustive_8bit"
    example = gate["checks"][0]["example"]
    assert int(example["got"]) != int(example["a"]) + int(example["b"]) and example["bits"] == 8


def test_max_bits_out_of_range_is_refused(trained: Predictor) -> None:
    with pytest.raises(ValueError):
        run_gate(trained, 4)
