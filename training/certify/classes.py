"""Classes of histories: a suffix trie of (carry before the last d symbols, the last d symbols).

Symbol s = bit_a + 2 bit_b. A trie node (c, w) stands for the histories whose last len(w)
symbols are w (oldest first) and whose carry before them is c. The two roots are (0, ()) and
(1, ()): the carry after the history. Splitting a node refines it by one more symbol of
history: its children are (c', (s,) + w) for every symbol s and carry c' with
carry_out(c', s) = c, exactly four. The leaves are the classes; every history of length at least
the trie's depth falls in exactly one (the first leaf met walking its suffixes), so class
membership is a function of the history.

The abstract walk needs the class after one more symbol to be determined by the class and the
symbol: for leaf (c, w) and symbol s the history (c, w + (s,)) must meet a leaf within
len(w) + 1 symbols. A trie with that property is closed; `closed` refines leaves until it is,
and `make_classes` refuses a trie that is not. The sum bit wanted at each step is
bit_a xor bit_b xor (the carry after the class's history), a function of the class too.

Histories from the start shorter than their class's depth (the start's transient) get ids
from `count` on (the empty history is `root`); they have no region, so nothing lands on them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

MAX_DEPTH = 10  # no class looks further back than this many symbols
MAX_CLASSES = 1 << 14
Key = tuple[int, tuple[int, ...]]  # (carry before the word, the word, oldest symbol first)


def _adds(carry: int, symbol: int) -> tuple[int, int]:
    """(sum bit, carry out) of one full-adder step."""
    total = (symbol & 1) + (symbol >> 1) + carry
    return total & 1, total >> 1


def children(key: Key) -> list[Key]:
    """The four refinements of a node by one older symbol, in a fixed order (symbol, carry)."""
    carry, word = key
    return [(c, (s, *word)) for s in range(4) for c in (0, 1) if _adds(c, s)[1] == carry]


def carry_after(key: Key) -> int:
    """The carry after the node's histories."""
    carry, word = key
    for s in word:
        carry = _adds(carry, s)[1]
    return carry


@dataclass(frozen=True)
class Trie:
    """The trie's nodes: leaves (classes, numbered in preorder) and inner nodes."""

    leaves: dict[Key, int]
    inner: set[Key]

    def lookup(self, carry: int, word: tuple[int, ...]) -> int | None:
        """The class of the histories (carry, word), or None if word is too short to tell."""
        before = [carry]
        for s in word:
            before.append(_adds(before[-1], s)[1])
        for depth in range(len(word) + 1):
            key = (before[len(word) - depth], word[len(word) - depth :])
            if key in self.leaves:
                return self.leaves[key]
            if key not in self.inner:
                raise ValueError(f"history {key} is in no trie node")
        return None

    def splits(self) -> np.ndarray:
        """The trie in preorder: 1 for an inner node (its four children follow), 0 for a leaf."""
        out: list[int] = []
        stack: list[Key] = [(1, ()), (0, ())]
        while stack:
            key = stack.pop()
            inner = key in self.inner
            out.append(int(inner))
            if inner:
                stack.extend(reversed(children(key)))
        return np.array(out, dtype=np.uint8)


def parse(splits: np.ndarray) -> Trie:
    """The trie from its preorder flags; ValueError if they are not a trie within the limits."""
    flags = np.asarray(splits).tolist()
    leaves: dict[Key, int] = {}
    inner: set[Key] = set()
    stack: list[Key] = [(1, ()), (0, ())]
    i = 0
    while stack:
        key = stack.pop()
        if i >= len(flags):
            raise ValueError("class trie ends early")
        flag = flags[i]
        i += 1
        if flag == 1:
            if len(key[1]) >= MAX_DEPTH:
                raise ValueError(f"class trie deeper than {MAX_DEPTH} symbols")
            inner.add(key)
            stack.extend(reversed(children(key)))
        elif flag == 0:
            leaves[key] = len(leaves)
            if len(leaves) > MAX_CLASSES:
                raise ValueError(f"class trie has more than {MAX_CLASSES} classes")
        else:
            raise ValueError(f"class trie flag {flag!r} is neither 0 nor 1")
    if i != len(flags):
        raise ValueError("class trie has entries left over")
    return Trie(leaves, inner)


def uniform(depth: int) -> Trie:
    """Every history classed by its last `depth` symbols (2 x 4^depth classes)."""
    inner: set[Key] = set()
    level: list[Key] = [(0, ()), (1, ())]
    for _ in range(depth):
        inner.update(level)
        level = [child for key in level for child in children(key)]
    return _numbered(inner)


def _numbered(inner: set[Key]) -> Trie:
    """The trie with these inner nodes, leaves numbered in preorder."""
    return parse(Trie({}, inner).splits())


def refine(trie: Trie, split: Callable[[Key], bool]) -> Trie:
    """The trie with the leaves split for which split(key) says so (within MAX_DEPTH)."""
    inner = set(trie.inner)
    inner.update(k for k in trie.leaves if len(k[1]) < MAX_DEPTH and split(k))
    return _numbered(inner)


def closed(trie: Trie) -> Trie:
    """Refine leaves whose successor class is not determined until none is left."""
    while True:
        loose = [key for key in trie.leaves
                 if any(trie.lookup(key[0], (*key[1], s)) is None for s in range(4))]
        if not loose:
            return trie
        inner = set(trie.inner) | set(loose)
        trie = _numbered(inner)


@dataclass(frozen=True)
class Classes:
    """Transition and wanted-bit tables over class ids and prefix ids."""

    trie: Trie
    next: np.ndarray  # [ids, 4] id after one more symbol
    bit: np.ndarray  # [ids, 4] the sum bit wanted at that step
    depth: np.ndarray  # [count] symbols each class looks back

    @property
    def count(self) -> int:
        """Number of classes (ids below this have a region)."""
        return len(self.trie.leaves)

    @property
    def root(self) -> int:
        """The id of the empty history."""
        return self.count

    @property
    def window(self) -> int:
        """The deepest class's depth."""
        return int(self.depth.max())


def make_classes(trie: Trie) -> Classes:
    """The tables of a closed trie; ValueError if some successor class is not determined."""
    count = len(trie.leaves)
    keys = sorted(trie.leaves, key=trie.leaves.__getitem__)
    nxt = [[0] * 4 for _ in range(count)]
    bit = [[0] * 4 for _ in range(count)]
    for cls, key in enumerate(keys):
        after = carry_after(key)
        for s in range(4):
            target = trie.lookup(key[0], (*key[1], s))
            if target is None:
                raise ValueError(f"class trie is not closed: class {key} then symbol {s}")
            nxt[cls][s], bit[cls][s] = target, _adds(after, s)[0]
    # the start's transient: histories with carry 0 before them, too short to be classed yet
    prefixes: dict[tuple[int, ...], int] = {(): count}
    order: list[tuple[int, ...]] = [()]
    for word in order:  # grows while it is walked: breadth first
        row_next, row_bit = [0] * 4, [0] * 4
        after = carry_after((0, word))
        for s in range(4):
            longer = (*word, s)
            target = trie.lookup(0, longer)
            if target is None:
                if longer not in prefixes:
                    prefixes[longer] = count + len(order)
                    order.append(longer)
                target = prefixes[longer]
            row_next[s], row_bit[s] = target, _adds(after, s)[0]
        nxt.append(row_next)
        bit.append(row_bit)
    depth = np.array([len(k[1]) for k in keys], dtype=np.int64)
    return Classes(trie, np.array(nxt, dtype=np.int64), np.array(bit, dtype=np.int8), depth)


def history_class(classes: Classes, symbols: list[int]) -> int:
    """The id of a concrete history from the start (for tests and hints), from its symbols."""
    state = classes.root
    for s in symbols:
        state = int(classes.next[state, s])
    return state
