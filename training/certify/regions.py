"""Proposing each class's region from sampled states: a box in the class's principal-axis frame.

Nothing here needs to be sound: a region that is too small makes a branch fail to land, never
makes a wrong model pass. Samples are states of concrete input words (random, periodic and
run-structured). A class whose states spread wider than a tolerance is split by one more
symbol of history (the class trie, training/certify/classes.py) while the trie stays small.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from training.certify.abstract import Folded
from training.certify.classes import Classes, closed, make_classes, refine, uniform

Regions = tuple[np.ndarray, np.ndarray, np.ndarray]  # Q [C, H, H], m [C, H], r [C, H]


def sample_words(rng: np.random.Generator, count: int, length: int) -> np.ndarray:
    """Symbols [length, count]: a third uniform, a third periodic, a third periodic with runs."""
    words = rng.integers(0, 4, size=(length, count))
    third = count // 3
    for j in range(third, count):
        period = int(rng.integers(1, 9))
        motif = rng.integers(0, 4, size=period)
        words[:, j] = np.resize(motif, length)
        if j >= 2 * third:
            for _ in range(int(rng.integers(1, 4))):
                run = int(rng.integers(1, max(2, length // 2)))
                start = int(rng.integers(0, length))
                words[start : start + run, j] = rng.integers(0, 4)
    return words


def walk(model: Folded, words: np.ndarray) -> np.ndarray:
    """The served states [T, N, H] along words [T, N], from the start state."""
    u = np.full((words.shape[1], model.size), -1.0)
    states = np.empty((*words.shape, model.size))
    for t, symbols in enumerate(words):
        u = states[t] = np.tanh(u @ model.a_t + model.c[symbols])
    return states


def classify(classes: Classes, words: np.ndarray) -> np.ndarray:
    """Class ids [T, N] of the histories along words (ids from classes.count: not classed yet)."""
    ids = np.empty(words.shape, dtype=np.int64)
    state = np.full(words.shape[1], classes.root)
    for t, symbols in enumerate(words):
        state = ids[t] = classes.next[state, symbols]
    return ids


@dataclass(frozen=True)
class Samples:
    """States along the words and images of some of them under every symbol, with where each
    came from, so their class ids can be recomputed for any classes."""

    words: np.ndarray  # [T, N] symbols
    states: np.ndarray  # [M, H]: the walk of the words, flattened, then the images
    source: np.ndarray  # [M - T N]: which walked state each image is of
    symbol: np.ndarray  # [M - T N]: under which symbol


def draw_samples(model: Folded, rng: np.random.Generator, words: int = 1000, length: int = 96,
                 images: int = 30_000) -> Samples:
    """States of sampled words, plus images of `images` of them under each symbol."""
    symbols = sample_words(rng, words, length)
    # the start's transient: every prefix of up to 5 symbols begins some word
    every = np.arange(min(4**5, words))
    symbols[:5, : len(every)] = (every[None, :] >> (2 * np.arange(5)[:, None])) & 3
    walked = walk(model, symbols).reshape(-1, model.size)
    source = rng.choice(len(walked), size=min(images, len(walked)), replace=False)
    imaged = [np.tanh(walked[source] @ model.a_t + model.c[s]) for s in range(4)]
    return Samples(symbols, np.concatenate([walked, *imaged]), np.tile(source, 4),
                   np.repeat(np.arange(4), len(source)))


def sample_ids(classes: Classes, samples: Samples) -> np.ndarray:
    """Class ids of every sample (ids from classes.count: not classed yet)."""
    walked = classify(classes, samples.words).ravel()
    return np.concatenate([walked, classes.next[walked[samples.source], samples.symbol]])


def spreads(states: np.ndarray, ids: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class: the widest half-width of its samples' box (raw axes) and how many it has."""
    keep = ids < count
    states, ids = states[keep], ids[keep]
    order = np.argsort(ids, kind="stable")
    ids, states = ids[order], states[order]
    present, starts = np.unique(ids, return_index=True)
    width = np.zeros(count)
    if len(present):
        top = np.maximum.reduceat(states, starts, axis=0)
        bottom = np.minimum.reduceat(states, starts, axis=0)
        width[present] = 0.5 * (top - bottom).max(axis=1)
    return width, np.bincount(ids, minlength=count)


def fit(states: np.ndarray, ids: np.ndarray, count: int) -> Regions:
    """Per class: principal axes (rows of Q, stored as float32) and the samples' bounding box."""
    keep = ids < count
    states, ids = states[keep], ids[keep]
    size = states.shape[1]
    q = np.empty((count, size, size))
    m = np.empty((count, size))
    r = np.empty((count, size))
    order = np.argsort(ids, kind="stable")
    bounds = np.searchsorted(ids[order], np.arange(count + 1))
    for cls in range(count):
        points = states[order[bounds[cls] : bounds[cls + 1]]]
        if len(points) == 0:
            points = states[:1]
        mean = points.mean(axis=0)
        centred = points - mean
        axes = np.linalg.eigh(centred.T @ centred)[1][:, ::-1].T  # rows: widest axis first
        frame = axes.astype(np.float32).astype(np.float64)
        y = (points - mean) @ frame.T
        middle = 0.5 * (y.max(axis=0) + y.min(axis=0))
        m[cls] = mean + middle @ frame
        q[cls] = frame
        r[cls] = np.abs((points - m[cls]) @ frame.T).max(axis=0)
    return q, m, r


def propose(states: np.ndarray, ids: np.ndarray, count: int, *, grow: float = 0.25,
            pad: float = 1e-3) -> Regions:
    """Regions for every class from its sampled states, grown by a factor and a pad."""
    q, m, r = fit(states, ids, count)
    return q, m, r * (1.0 + grow) + pad


def refined_classes(samples: Samples, base: int, spread: float, max_classes: int,
                    deadline: float, rounds: int = 6) -> Classes:
    """Classes by the last `base` symbols, split where sampled states spread more than `spread`.

    A class is split (one symbol deeper) when its samples spread wider than `spread` and it has
    samples enough to tell; the trie is closed after every round, and a round that would exceed
    max_classes is not taken.
    """
    classes = make_classes(uniform(base))
    for _ in range(rounds):
        if time.perf_counter() > deadline:
            break
        width, count = spreads(samples.states, sample_ids(classes, samples), classes.count)
        wide = (width > spread) & (count >= 16)
        if not wide.any():
            break
        keys = sorted(classes.trie.leaves, key=classes.trie.leaves.__getitem__)
        chosen = {keys[c] for c in np.flatnonzero(wide)}
        finer = closed(refine(classes.trie, chosen.__contains__))
        if len(finer.leaves) > max_classes or len(finer.leaves) == classes.count:
            break
        classes = make_classes(finer)
    return classes
