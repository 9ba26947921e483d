"""`--preset original` follows the original program exactly: same draws, same updates."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from training import train as train_module
from training.store import ModelStore


def original_program(seed: int, epochs: int) -> dict[str, np.ndarray]:
    """The seed program's training loop, per sample, as written there (printing left out)."""
    np.random.seed(seed)

    def sigmoid(x: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-x))

    def sigmoid_output_to_derivative(output: np.ndarray) -> np.ndarray:
        return output * (1 - output)

    binary_dim = 8
    largest_number = pow(2, binary_dim)
    binary = np.unpackbits(np.array([range(largest_number)], dtype=np.uint8).T, axis=1)
    int2binary = {i: binary[i] for i in range(largest_number)}
    alpha, input_dim, hidden_dim, output_dim = 0.1, 2, 16, 1
    w_i = 2 * np.random.random((hidden_dim, input_dim)) - 1
    w_o = 2 * np.random.random((output_dim, hidden_dim)) - 1
    w_h = 2 * np.random.random((hidden_dim, hidden_dim)) - 1
    w_i_update, w_o_update, w_h_update = np.zeros_like(w_i), np.zeros_like(w_o), np.zeros_like(w_h)
    for _ in range(epochs):
        a_int = np.random.randint(largest_number // 2)
        a = int2binary[a_int]
        b_int = np.random.randint(largest_number // 2)
        b = int2binary[b_int]
        label = int2binary[a_int + b_int]
        layer_2_deltas, layer_1_values = [], [np.zeros((hidden_dim, 1))]
        for i in range(binary_dim):
            x = np.array([[a[binary_dim - i - 1], b[binary_dim - i - 1]]]).T
            y = np.array([[label[binary_dim - i - 1]]]).T
            layer_1 = sigmoid(np.dot(w_h, layer_1_values[-1]) + np.dot(w_i, x))
            layer_1_values.append(copy.deepcopy(layer_1))
            layer_2 = sigmoid(np.dot(w_o, layer_1))
            layer_2_deltas.append(-(y - layer_2) * sigmoid_output_to_derivative(layer_2))
        future_layer_1_delta = np.zeros((hidden_dim, 1))
        for i in range(binary_dim):
            x = np.array([[a[i], b[i]]]).T
            prev_layer_1 = layer_1_values[-i - 2]
            layer_1 = layer_1_values[-i - 1]
            layer_delta2 = layer_2_deltas[-i - 1]
            layer_delta1 = np.multiply(
                np.add(np.dot(w_h.T, future_layer_1_delta), np.dot(w_o.T, layer_delta2)),
                sigmoid_output_to_derivative(layer_1),
            )
            w_i_update += np.dot(layer_delta1, x.T)
            w_h_update += np.dot(layer_delta1, prev_layer_1.T)
            w_o_update += np.dot(layer_delta2, layer_1.T)
            future_layer_1_delta = layer_delta1
        w_i -= alpha * w_i_update
        w_h -= alpha * w_h_update
        w_o -= alpha * w_o_update
        w_i_update *= 0
        w_o_update *= 0
        w_h_update *= 0
    return {"w_i": w_i, "w_h": w_h, "w_o": w_o}


def test_original_preset_ends_with_the_original_programs_weights(tmp_path: Path) -> None:
    argv = ["--preset", "original", "--seed", "0", "--max-steps", "10000", "--no-early-stop",
            "--no-activate", "--model-dir", str(tmp_path), "--quiet"]
    assert train_module.main(argv) == 0
    store = ModelStore(tmp_path)
    (record,) = store.versions()
    assert record["steps"] == 10_000 and store.current() is None
    params = store.load(record["version"]).params
    expected = original_program(0, 10_000)
    for name, value in expected.items():
        assert np.max(np.abs(params[name] - value)) < 1e-9, name


def test_original_preset_matches_from_the_first_update() -> None:
    result = train_module.train(train_module.make_config(
        {"preset": "original", "seed": 3, "max_steps": 1, "early_stop": False}))
    expected = original_program(3, 1)
    for name, value in expected.items():
        np.testing.assert_allclose(result.params[name], value, rtol=0, atol=1e-12)
