"""The class trie against exact addition: every history walks to the class its suffix names."""

from __future__ import annotations

import numpy as np
import pytest

from training.certify import Certificate, CertificateInvalid, verify
from training.certify.classes import (
    Trie,
    children,
    closed,
    make_classes,
    parse,
    refine,
    uniform,
)


def carries(word: list[int]) -> list[int]:
    """Carry before each symbol and after the last, by exact addition from carry 0."""
    out = [0]
    for s in word:
        out.append(((s & 1) + (s >> 1) + out[-1]) >> 1)
    return out


def random_trie(rng: np.random.Generator) -> Trie:
    """A closed trie: uniform to depth 1 or 2, then leaves split at random for a few rounds."""
    trie = uniform(int(rng.integers(1, 3)))
    for _ in range(3):
        trie = refine(trie, lambda key: rng.random() < 0.3)
    return closed(trie)


@pytest.mark.parametrize("seed", range(6))
def test_walk_lands_in_the_class_of_the_suffix(seed: int) -> None:
    """For random words, the table walk's class has the word's last symbols and carry before
    them, and every wanted bit is the exact sum bit."""
    rng = np.random.default_rng(seed)
    classes = make_classes(random_trie(rng))
    keys = sorted(classes.trie.leaves, key=classes.trie.leaves.__getitem__)
    classed = 0
    for _ in range(200):
        word = rng.integers(0, 4, int(rng.integers(1, 40))).tolist()
        carry = carries(word)
        state = classes.root
        for t, s in enumerate(word):
            assert classes.bit[state, s] == ((s & 1) ^ (s >> 1) ^ carry[t])
            state = int(classes.next[state, s])
            if state < classes.count:
                classed += 1
                before, suffix = keys[state]
                depth = len(suffix)
                assert depth <= t + 1
                assert list(suffix) == word[t + 1 - depth : t + 1]
                assert before == carry[t + 1 - depth]
    assert classed > 1000


def test_splits_round_trip_and_count() -> None:
    """Preorder flags parse back to the same trie; 2 + 3 x splits leaves."""
    trie = random_trie(np.random.default_rng(9))
    again = parse(trie.splits())
    assert again == trie
    assert len(trie.leaves) == 2 + 3 * int(trie.splits().sum())
    assert all(len(children(key)) == 4 for key in trie.inner)


def open_trie() -> Trie:
    """A trie that is not closed: class (0, [0]) then symbol 1 needs 3 symbols to be classed."""
    trie = uniform(1)
    for deep in ((0, (1,)), (0, (0, 1))):
        trie = refine(trie, lambda key, deep=deep: key == deep)
    return trie


def test_open_tries_are_refused() -> None:
    """A class whose successor is not determined: make_classes refuses, closed() fixes it."""
    trie = open_trie()
    with pytest.raises(ValueError, match="not closed"):
        make_classes(trie)
    assert len(closed(trie).leaves) > len(trie.leaves)
    make_classes(closed(trie))


@pytest.mark.parametrize("flags, message", [
    ([1, 0], "ends early"), ([0, 0, 0], "left over"), ([2, 0], "neither"),
    ([1] * 40, "deeper"),
])
def test_bad_trie_flags(flags: list[int], message: str) -> None:
    """Flags that are no trie: a clear error."""
    with pytest.raises(ValueError, match=message):
        parse(np.array(flags, dtype=np.uint8))


def test_a_certificate_with_an_open_trie_is_refused(exact_adder: dict, exact_verdict) -> None:
    """verify rebuilds the classes from the stored trie and refuses one that is not closed."""
    trie = open_trie()
    count, size = len(trie.leaves), exact_verdict.certificate.hidden_size
    good = exact_verdict.certificate
    cert = Certificate(good.digest, trie.splits(), np.zeros((count, size)),
                       np.tile(np.eye(size, dtype=np.float32), (count, 1, 1)),
                       np.ones((count, size)), np.full(count, -1, np.int8), np.zeros(count),
                       np.zeros(count + 1, np.int64), np.zeros(0, np.uint8))
    cert = Certificate.from_bytes(cert.to_bytes())
    with pytest.raises(CertificateInvalid, match="not closed"):
        verify(exact_adder, cert)
