"""Classes of histories: (carry before the last k symbols, the last k symbols), and prefixes.

Symbol s = bit_a + 2 bit_b. Class id = carry * 4^k + window, the window's oldest symbol most
significant. A history's class after one more symbol is determined by its class, so the
abstract walk needs only the tables here; the output bit wanted at that step is
bit_a xor bit_b xor (the carry after the window). Histories shorter than k (the start's
transient) get ids from 2 * 4^k on: the empty history first, then by length and word; they
have no region, so nothing lands on them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_WINDOW = 7


def _adds(carry: int, symbol: int) -> tuple[int, int]:
    """(sum bit, carry out) of one full-adder step."""
    total = (symbol & 1) + (symbol >> 1) + carry
    return total & 1, total >> 1


@dataclass(frozen=True)
class Classes:
    """Transition and wanted-bit tables over class ids and prefix ids."""

    window: int
    next: np.ndarray  # [ids, 4] id after one more symbol
    bit: np.ndarray  # [ids, 4] the sum bit wanted at that step

    @property
    def count(self) -> int:
        """Number of classes (ids below this have a region)."""
        return 2 * 4**self.window

    @property
    def root(self) -> int:
        """The id of the empty history."""
        return self.count


def prefix_id(window: int, length: int, word: int) -> int:
    """Id of a history of `length` < window symbols (word: base 4, oldest most significant)."""
    return 2 * 4**window + (4**length - 1) // 3 + word


def make_classes(window: int) -> Classes:
    """The tables for windows of `window` symbols (1..MAX_WINDOW)."""
    if not 1 <= window <= MAX_WINDOW:
        raise ValueError(f"window must be 1..{MAX_WINDOW}, got {window}")
    span = 4**window
    count = 2 * span
    total = count + (span - 1) // 3
    nxt = np.empty((total, 4), dtype=np.int64)
    bit = np.empty((total, 4), dtype=np.int8)
    for cls in range(count):
        carry, word = divmod(cls, span)
        after = carry
        for j in reversed(range(window)):
            after = _adds(after, (word >> (2 * j)) & 3)[1]
        oldest = word >> (2 * (window - 1))
        carry_next = _adds(carry, oldest)[1]
        for s in range(4):
            bit[cls, s] = _adds(after, s)[0]
            nxt[cls, s] = carry_next * span + (word % (span // 4)) * 4 + s
    for length in range(window):
        for word in range(4**length):
            after = 0
            for j in reversed(range(length)):
                after = _adds(after, (word >> (2 * j)) & 3)[1]
            here = prefix_id(window, length, word)
            for s in range(4):
                bit[here, s] = _adds(after, s)[0]
                longer = word * 4 + s
                nxt[here, s] = (longer if length + 1 == window
                                else prefix_id(window, length + 1, longer))
    return Classes(window, nxt, bit)


def history_class(window: int, symbols: list[int]) -> int:
    """The id of a concrete history (for tests and counterexample hints), from its symbols."""
    if len(symbols) < window:
        word = 0
        for s in symbols:
            word = 4 * word + s
        return prefix_id(window, len(symbols), word)
    carry = 0
    for s in symbols[: len(symbols) - window]:
        carry = _adds(carry, s)[1]
    word = 0
    for s in symbols[len(symbols) - window :]:
        word = 4 * word + s
    return carry * 4**window + word
