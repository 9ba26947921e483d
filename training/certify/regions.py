"""Proposing each class's region from sampled states: a box in the class's principal-axis frame.

Nothing here needs to be sound: a region that is too small makes a branch fail to land, never
makes a wrong model pass. Samples are states of concrete input words (random, periodic and
run-structured), then points of each box pushed one step through every symbol for a few rounds.
"""

from __future__ import annotations

import numpy as np

from training.certify.abstract import Folded
from training.certify.classes import Classes

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


def sample_states(model: Folded, classes: Classes, words: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """States [M, H] and class ids [M] along the words, from the start state, once classed."""
    u = np.full((words.shape[1], model.size), -1.0)
    ids = np.full(words.shape[1], classes.root)
    states, owners = [], []
    for symbols in words:
        u = np.tanh(u @ model.a_t + model.c[symbols])
        ids = classes.next[ids, symbols]
        if ids[0] < classes.count:
            states.append(u)
            owners.append(ids)
    return np.concatenate(states), np.concatenate(owners)


def fit(states: np.ndarray, ids: np.ndarray, count: int) -> Regions:
    """Per class: principal axes (rows of Q, stored as float32) and the samples' bounding box."""
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


def push(model: Folded, classes: Classes, regions: Regions, rng: np.random.Generator,
         points: int = 24, rounds: int = 3) -> Regions:
    """Grow each box to hold the images of points of the boxes that lead to it."""
    q, m, r = (a.copy() for a in regions)
    count, size = m.shape
    for _ in range(rounds):
        signs = rng.choice([-1.0, 1.0], size=(count, points, size))
        signs[:, points // 2 :] *= rng.uniform(0.0, 1.0, size=(count, points - points // 2, size))
        y = signs * r[:, None, :]
        x = m[:, None, :] + np.einsum("cpj,cji->cpi", y, q)  # frames are near orthonormal
        for s in range(4):
            image = np.tanh(x @ model.a_t + model.c[s])
            target = classes.next[:count, s]
            extent = np.abs(np.einsum("cij,cpj->cpi", q[target], image - m[target][:, None]))
            np.maximum.at(r, target, extent.max(axis=1))
    return q, m, r


def propose(model: Folded, classes: Classes, rng: np.random.Generator, *, words: int = 1500,
            length: int = 48, grow: float = 0.25, pad: float = 1e-3,
            rounds: int = 0) -> Regions:
    """Regions for every class: sampled, pushed, then grown by a factor and a pad."""
    states, ids = sample_states(model, classes, sample_words(rng, words, length))
    q, m, r = fit(states, ids, classes.count)
    if rounds:
        q, m, r = push(model, classes, (q, m, r), rng, rounds=rounds)
    return q, m, r * (1.0 + grow) + pad
