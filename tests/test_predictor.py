"""Predictor against a plain per-pair loop of the training forward pass, at any width."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from training import rnn
from training.predictor import TABLE_BYTES, Predictor, decode, encode, table_levels_for


def random_params(hidden: int, seed: int, biases: bool) -> rnn.Params:
    """Random weights and biases, large enough that outputs vary."""
    rng = np.random.default_rng(seed)
    params = {k: v * 3 for k, v in rnn.init_params(hidden, rng, biases).items()}
    if biases:
        params["b_h"] = rng.uniform(-1, 1, hidden)
        params["b_o"] = rng.uniform(-1, 1, 1)
    return params


def per_pair_sums(params: rnn.Params, a: list[int], b: list[int], width: int) -> list[int]:
    """One pair at a time through rnn.forward, bits read LSB first by hand."""
    sums = []
    for x_a, x_b in zip(a, b, strict=True):
        x = np.array([[[(x_a >> t) & 1, (x_b >> t) & 1]] for t in range(width)], dtype=float)
        p = rnn.forward(params, x)["p"][:, 0]
        sums.append(sum(int(p[t] > 0.5) << t for t in range(width)))
    return sums


@pytest.mark.parametrize("biases", [False, True])
@pytest.mark.parametrize(("n", "width"), [(1, 8), (1, 3), (2, 8), (300, 8), (5000, 8), (40, 70),
                                          (3, 200)])
def test_add_equals_the_training_forward_pass(n: int, width: int, biases: bool) -> None:
    params = random_params(16, seed=n + width, biases=biases)
    rng = random.Random(n * width)
    a = [rng.getrandbits(width - 1) for _ in range(n)]
    b = [rng.getrandbits(width - 1) for _ in range(n)]
    expected = per_pair_sums(params, a[:300], b[:300], width)
    got = Predictor(params).add(a, b, width)
    assert got[:300] == expected
    assert len(got) == n


@pytest.mark.parametrize("levels", [0, 3, 6, 8, None])
def test_one_pair_and_many_pairs_agree(levels: int | None) -> None:
    params = random_params(8, seed=levels or 9, biases=True)
    predictor = Predictor(params, table_levels=levels)
    rng = random.Random(levels)
    for width in (1, 2, 5, 6, 7, 8, 20, 70):
        a = [rng.getrandbits(width) for _ in range(30)]
        b = [rng.getrandbits(width) for _ in range(30)]
        assert [predictor.add([x], [y], width)[0] for x, y in zip(a, b, strict=True)] == \
            predictor.add(a, b, width)


@pytest.mark.parametrize(("hidden", "levels"), [(1, 8), (16, 8), (32, 7), (64, 7), (128, 6),
                                               (256, 6), (2**21, 0)])
def test_the_shared_table_is_as_deep_as_its_memory_budget_allows(hidden: int,
                                                                  levels: int) -> None:
    assert table_levels_for(hidden) == levels
    assert levels == 0 or 4**levels * hidden * 8 <= TABLE_BYTES  # the deepest states fit
    assert levels == 8 or 4 ** (levels + 1) * hidden * 8 > TABLE_BYTES  # one more would not


def test_the_default_table_covers_the_trained_width_and_agrees_past_it() -> None:
    params = random_params(16, seed=4, biases=True)
    rng = random.Random(4)
    for width in (7, 8, 9, 12):
        a = [rng.getrandbits(width - 1) for _ in range(40)]
        b = [rng.getrandbits(width - 1) for _ in range(40)]
        expected = per_pair_sums(params, a, b, width)
        assert [Predictor(params).add([x], [y], width)[0] for x, y in zip(a, b, strict=True)] \
            == expected
        assert Predictor(params).add(a, b, width) == expected


def test_add_takes_numpy_arrays_and_huge_ints() -> None:
    params = random_params(4, seed=1, biases=False)
    predictor = Predictor(params)
    a, b = [0, 1, 2**70 + 5, 2**99], [0, 2**80, 3, 2**99 - 1]
    assert predictor.add(a, b, 101) == per_pair_sums(params, a, b, 101)
    arrays = predictor.add(np.array([5, 7], np.uint64), np.array([1, 2], np.uint64), 8)
    assert arrays == predictor.add([5, 7], [1, 2], 8)
    assert predictor.add([], [], 8) == []
    with pytest.raises(ValueError):
        predictor.add([1, 2], [3], 8)


def test_trace_follows_the_forward_pass_and_the_true_sum() -> None:
    params = random_params(5, seed=4, biases=True)
    a, b, width = 0b1011, 0b0110, 6
    steps = Predictor(params).trace(a, b, width)
    x = np.array([[[(a >> t) & 1, (b >> t) & 1]] for t in range(width)], dtype=float)
    cache = rnn.forward(params, x)
    assert [s["a"] for s in steps] == [1, 1, 0, 1, 0, 0]
    assert [s["b"] for s in steps] == [0, 1, 1, 0, 0, 0]
    assert [s["carry"] for s in steps] == [0, 0, 1, 1, 1, 0]
    assert [s["target"] for s in steps] == [((a + b) >> t) & 1 for t in range(width)]
    for t, step in enumerate(steps):
        assert step["probability"] == pytest.approx(cache["p"][t, 0], abs=1e-12)
        assert step["bit"] == int(cache["p"][t, 0] > 0.5)
        np.testing.assert_allclose(step["hidden"], cache["h"][t + 1, 0], atol=1e-12)
    assert sum(s["bit"] << t for t, s in enumerate(steps)) == \
        Predictor(params).add([a], [b], width)[0]


def test_hidden_size() -> None:
    assert Predictor(random_params(7, seed=0, biases=False)).hidden_size == 7


@given(st.lists(st.integers(min_value=0, max_value=2**300), max_size=20))
def test_encode_decode_round_trip(values: list[int]) -> None:
    width = max([1, *(v.bit_length() for v in values)])
    bits = encode(values, width)
    assert bits.shape == (width, len(values))
    assert decode(bits) == values
    for i, v in enumerate(values):  # least significant bit first
        assert [int(bit) for bit in bits[:, i]] == [(v >> t) & 1 for t in range(width)]


@pytest.mark.parametrize("value", [0, 1, 2, 255, 2**63, 2**64 - 1, 2**64, 3**200])
def test_encode_decode_edges(value: int) -> None:
    width = max(1, value.bit_length()) + 3
    assert decode(encode([value], width)) == [value]
    if value < 2**64:
        array = encode(np.array([value], dtype=np.uint64), width)
        np.testing.assert_array_equal(array, encode([value], width))
