"""Inference for a trained adder: many pairs, any width, the same function as rnn.forward.

With h = (1 + u) / 2 the recurrence h_t = sigmoid(w_h h_{t-1} + w_i x_t + b_h) becomes
    u_t = tanh(A u_{t-1} + c[k_t]),   A = w_h / 4,   c[k] = (w_h 1 / 2 + w_i x(k) + b_h) / 2
where k_t = bit_a + 2 bit_b is the input symbol, and bit t is set when o_t = (w_o / 2) u_t +
sum(w_o) / 2 + b_o > 0. Folding the constants means one matmul, one gather and one tanh a step,
and no sigmoid is needed to decide a bit. Pairs whose low bits agree reach the same hidden state,
so the first levels of that prefix tree are computed once per model and shared by every call.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from training.rnn import Params

SYMBOL_BITS = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=np.float64)  # x for k = a + 2 b
TABLE_BYTES = 8 * 2**20  # the deepest shared level's states: 4**levels x hidden float64s
MAX_TABLE_LEVELS = 8  # a 16-unit model's table covers 8-bit sums, the trained width, whole


def table_levels_for(hidden_size: int) -> int:
    """The most prefix-tree levels whose deepest states fit TABLE_BYTES (16 units: 8 levels)."""
    levels = 0
    while levels < MAX_TABLE_LEVELS and 4 ** (levels + 1) * hidden_size * 8 <= TABLE_BYTES:
        levels += 1
    return levels


def encode(values: Sequence[int] | np.ndarray, width: int) -> np.ndarray:
    """Low `width` bits of non-negative ints as uint8 [width, N], least significant first."""
    if width <= 64:
        try:
            array = np.asarray(values, dtype=np.uint64)  # refuses ints that do not fit
        except OverflowError:
            array = None
        if array is not None:
            shifts = np.arange(width, dtype=np.uint64)[:, None]
            return ((array[None, :] >> shifts) & np.uint64(1)).astype(np.uint8)
    values = list(values)
    nbytes = max(1, (width + 7) // 8)
    raw = b"".join(int(v).to_bytes(nbytes, "little") for v in values)
    octets = np.frombuffer(raw, dtype=np.uint8).reshape(len(values), nbytes)
    return np.ascontiguousarray(np.unpackbits(octets, axis=1, bitorder="little")[:, :width].T)


def decode(bits: np.ndarray) -> list[int]:
    """Inverse of encode: [T, N] bits (least significant first) to Python ints."""
    packed = np.packbits(np.asarray(bits, dtype=np.uint8).T, axis=1, bitorder="little")
    if bits.shape[0] <= 64:
        padded = np.zeros((packed.shape[0], 8), dtype=np.uint8)
        padded[:, : packed.shape[1]] = packed
        return padded.view("<u8")[:, 0].tolist()
    return [int.from_bytes(row.tobytes(), "little") for row in packed]


class Predictor:
    """One loaded model, folded for inference; thread-safe since calls only read it."""

    def __init__(self, params: Params, *, table_levels: int | None = None,
                 chunk: int = 2048) -> None:
        w_i, w_h, w_o = params["w_i"], params["w_h"], params["w_o"]
        size = int(w_h.shape[0])
        b_h = params.get("b_h", np.zeros(size))
        self.hidden_size = size
        self._chunk = chunk  # pairs per dense block
        self._block = 16_384  # pairs x steps per block: the block's states stay in cache
        self._recur = np.ascontiguousarray(w_h.T / 4.0)
        self._drive = (w_h.sum(axis=1) / 2.0 + SYMBOL_BITS @ w_i.T + b_h) / 2.0  # c[k]: [4, H]
        self._out_w = w_o[0] / 2.0
        self._out_b = float(w_o.sum() / 2.0 + params.get("b_o", np.zeros(1))[0])
        # Level t: the output bit after t + 1 steps for every run of low bits (index = prefix
        # key); only the deepest level's states are kept (the start state when there is no
        # level), the only ones a longer pass goes on from.
        levels = table_levels_for(size) if table_levels is None else table_levels
        states = np.full((1, size), -1.0)  # h_0 = 0
        self._level_bits: list[np.ndarray] = []
        for _ in range(levels):
            states = self._children(states)
            self._level_bits.append(self._bit(states))
        self._deepest = states
        self._level_lists = [bits.tolist() for bits in self._level_bits]  # for one-pair calls

    def _run(self, u: np.ndarray, symbol: np.ndarray) -> np.ndarray:
        """The one forward pass here: states [T, N, H] from u [N, H], symbols [T, N]."""
        states = self._drive[symbol]  # becomes the states in place: no buffer per step
        z = np.empty_like(u)
        for t in range(len(symbol)):
            np.matmul(u, self._recur, out=z)
            states[t] += z
            u = np.tanh(states[t], out=states[t])
        return states

    def _children(self, states: np.ndarray) -> np.ndarray:
        """Every state followed by each of the four symbols: row 4 s + k."""
        symbols = np.tile(np.arange(4), len(states))[None]
        return self._run(np.repeat(states, 4, axis=0), symbols)[0]

    def _logit(self, u: np.ndarray) -> np.ndarray:
        """o_t for states u; the bit is set where it is positive."""
        return u @ self._out_w + self._out_b

    def _bit(self, u: np.ndarray) -> np.ndarray:
        """Output bits of states u."""
        return self._logit(u) > 0.0

    def _bits(self, a_bits: np.ndarray, b_bits: np.ndarray) -> np.ndarray:
        """Predicted sum bits [T, N] (bool) for input bits [T, N]."""
        steps, n = a_bits.shape
        out = np.empty((steps, n), dtype=bool)
        if n == 0 or steps == 0:
            return out
        symbol = a_bits.astype(np.intp)
        symbol += 2 * b_bits
        # Walk the prefix tree while a level has fewer states than there are pairs; past the
        # shared levels it goes on from the deepest one's states.
        states, key, t = self._deepest, np.zeros(n, dtype=np.intp), 0
        depth = len(self._level_bits)
        while t < steps and (t < depth or 4 * len(states) <= n):
            if t < depth:
                set_bits = self._level_bits[t]
            else:
                states = self._children(states)
                set_bits = self._bit(states)
            key *= 4
            key += symbol[t]
            out[t] = set_bits[key]
            t += 1
        if t == steps:  # the shared levels covered every step
            return out
        # Then every pair on its own, in blocks of pairs and steps whose states fit in cache.
        for start in range(0, n, self._chunk):
            rows = slice(start, min(start + self._chunk, n))
            u = states[key[rows]]
            span = max(1, self._block // (rows.stop - start))
            for s in range(t, steps, span):
                block = self._run(u, symbol[s : s + span, rows])
                out[s : s + span, rows] = self._bit(block)
                u = block[-1]
        return out

    def add(
        self, a: Sequence[int] | np.ndarray, b: Sequence[int] | np.ndarray, bits: int
    ) -> list[int]:
        """Predicted sums of the pairs (a[i], b[i]) read over `bits` steps (inputs < 2**bits)."""
        if len(a) != len(b):
            raise ValueError(f"a has {len(a)} values but b has {len(b)}")
        if len(a) == 1:  # a single request: Python ints beat array set-up for the table part
            return [self._add_one(int(a[0]), int(b[0]), bits)]
        return decode(self._bits(encode(a, bits), encode(b, bits)))

    def _add_one(self, a: int, b: int, bits: int) -> int:
        """One pair: the shared table for its low bits, then the recurrence for the rest."""
        shared = min(bits, len(self._level_bits))
        key, total = 0, 0
        for t in range(shared):
            key = 4 * key + ((a >> t) & 1) + 2 * ((b >> t) & 1)
            total |= self._level_lists[t][key] << t
        if shared == bits:
            return total
        u = self._deepest[key : key + 1]  # with no shared level: the start state (key 0)
        rest = [((a >> t) & 1) + 2 * ((b >> t) & 1) for t in range(shared, bits)]
        out = self._bit(self._run(u, np.array(rest, dtype=np.intp)[:, None]))[:, 0]
        rest_sum = int.from_bytes(np.packbits(out, bitorder="little").tobytes(), "little")
        return total | rest_sum << shared

    def trace(self, a: int, b: int, bits: int) -> list[dict]:
        """Step by step, least significant bit first: inputs, true carry and sum, model state."""
        steps = []
        symbol = np.array([[((a >> t) & 1) + 2 * ((b >> t) & 1)] for t in range(bits)], np.intp)
        states = self._run(np.full((1, self.hidden_size), -1.0), symbol.reshape(bits, 1))[:, 0]
        logits = self._logit(states).tolist()
        carry = 0
        for t, logit in enumerate(logits):
            bit_a, bit_b = (a >> t) & 1, (b >> t) & 1
            steps.append(
                {
                    "a": bit_a,
                    "b": bit_b,
                    "carry": carry,
                    "target": (bit_a + bit_b + carry) & 1,
                    "probability": float(1.0 / (1.0 + np.exp(-logit))) if logit > -700 else 0.0,
                    "bit": int(logit > 0.0),
                    "hidden": ((1.0 + states[t]) / 2.0).tolist(),
                }
            )
            carry = (bit_a + bit_b + carry) >> 1
        return steps
