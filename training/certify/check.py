"""The checker: re-proves a stored certificate against the weights, trusting none of its claims.

It recomputes the folded model, the digest, the inverse frames, every cell from the split
trees, and every abstract step along the stored trees; it checks the output sign at every
node and, where a node is flagged as landing, that its enclosure lies inside the region of
the class its history names. Why that proves every output of every input right: see
docs/certification.md (the induction over landing times).
"""

from __future__ import annotations

import time

import numpy as np

from training.certify.abstract import (
    LOGIT_MARGIN,
    Folded,
    Zonotopes,
    cell_zonotopes,
    contained,
    fold,
    inverse_frame,
    logit_bounds,
    start_zonotope,
    step,
)
from training.certify.certificate import Certificate, CertificateInvalid, weights_digest
from training.certify.classes import Classes, make_classes

MAX_DEPTH = 64  # no tree may be deeper: bounds the work a hostile certificate can ask for
GROUP_NODES = 16_384  # trees are walked in groups of about this many nodes


def cells_of(cert: Certificate) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The leaves of every class's split tree: class ids [K], low [K, H], high [K, H].

    The class box is [-r, r]; a split at value v on axis a, low < v < high, yields
    [low, v] and [v, high] on that axis, so the leaves cover the box by construction.
    """
    radii, axes, values = cert.radii, cert.split_axis.tolist(), cert.split_value.tolist()
    size = cert.hidden_size
    if not (np.isfinite(radii).all() and (radii >= 0).all()):
        raise CertificateInvalid("region radii must be finite and non-negative")
    owners, lows, highs = [], [], []
    i = 0
    for cls in range(radii.shape[0]):
        stack = [(-radii[cls], radii[cls].copy())]
        while stack:
            low, high = stack.pop()
            if i >= len(axes):
                raise CertificateInvalid("cell split trees end early")
            axis, value = axes[i], values[i]
            i += 1
            if axis == -1:
                owners.append(cls)
                lows.append(low)
                highs.append(high)
                continue
            if not (0 <= axis < size and low[axis] < value < high[axis]):
                raise CertificateInvalid(f"class {cls}: split {value!r} on axis {axis} is "
                                         "outside its cell")
            upper_low, lower_high = low.copy(), high.copy()
            upper_low[axis] = lower_high[axis] = value
            stack.append((upper_low, high))
            stack.append((low, lower_high))
    if i != len(axes):
        raise CertificateInvalid("cell split trees have entries left over")
    return np.array(owners, dtype=np.int64), np.array(lows), np.array(highs)


def expand(model: Folded, classes: Classes, zono: Zonotopes, state: np.ndarray
           ) -> tuple[Zonotopes, np.ndarray, np.ndarray, np.ndarray]:
    """Children of every node, four each in symbol order: enclosures, ids, wanted bits, margins.

    margin = the lowest logit proved on the wanted side (positive: the output is right).
    """
    x, g, e = zono
    symbols = np.tile(np.arange(4), len(x))
    parents = np.repeat(np.arange(len(x)), 4)
    child = step(model, (x[parents], g[parents], e[parents]), symbols)
    ids = classes.next[state[parents], symbols]
    want = classes.bit[state[parents], symbols]
    low, high = logit_bounds(model, child)
    return child, ids, want, np.where(want == 1, low, -high)


def check_trees(model: Folded, classes: Classes, regions: tuple,
                roots: tuple[Zonotopes, np.ndarray], cert: Certificate) -> dict:
    """Walk every stored tree; raise CertificateInvalid at the first step not proved."""
    q, m, r = regions
    (root_x, root_g, root_e), root_state = roots
    count = len(root_state)
    sizes = cert.tree_sizes
    if len(sizes) != count:
        raise CertificateInvalid(f"certificate has {len(sizes)} trees, expected {count} "
                                 "(the start tree and one per cell)")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    flags = cert.flags
    nodes, deepest, margin = 0, 0, np.inf
    tree = 0
    while tree < count:
        last = tree + 1
        while last < count and starts[last + 1] - starts[tree] <= GROUP_NODES:
            last += 1
        x, g, e = root_x[tree:last], root_g[tree:last], root_e[tree:last]
        state, owner = root_state[tree:last], np.arange(tree, last)
        cursor = starts[tree:last].copy()
        depth = 0
        while len(x):
            depth += 1
            if depth > MAX_DEPTH:
                raise CertificateInvalid(f"a tree is deeper than {MAX_DEPTH} steps")
            (x, g, e), state, _, margins = expand(model, classes, (x, g, e), state)
            owner = np.repeat(owner, 4)
            bad = margins <= LOGIT_MARGIN
            if bad.any():
                k = int(np.argmax(bad))
                raise CertificateInvalid(f"output sign not proved in tree {owner[k]} at depth "
                                         f"{depth} (class id {state[k]})")
            margin = min(margin, float(margins.min()))
            first = np.searchsorted(owner, owner)  # owner is sorted: index of its first node
            position = cursor[owner - tree] + np.arange(len(owner)) - first
            if (position >= starts[owner + 1]).any():
                raise CertificateInvalid("a tree has more nodes than its flags")
            flag = flags[position]
            cursor += np.bincount(owner - tree, minlength=last - tree)
            nodes += len(owner)
            land = flag == 0
            if land.any():
                where = state[land]
                if (where >= classes.count).any():
                    raise CertificateInvalid("a node lands before its history has a class")
                zl = (x[land], g[land], e[land])
                inside = contained(q[where], m[where], r[where], zl)
                if not inside.all():
                    k = int(np.flatnonzero(land)[np.argmin(inside)])
                    raise CertificateInvalid(f"a branch of tree {owner[k]} does not land in "
                                             f"the region of class {state[k]} at depth {depth}")
            keep = ~land
            x, g, e, state, owner = x[keep], g[keep], e[keep], state[keep], owner[keep]
            deepest = max(deepest, depth)
        if (cursor != starts[tree + 1 : last + 1]).any():
            raise CertificateInvalid("a tree has flags left over")
        tree = last
    return {"nodes": int(nodes), "depth": deepest, "min_margin": margin}


def regions_of(cert: Certificate) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Q, m, r) as float64 arrays, checked finite."""
    q = cert.frames.astype(np.float64)
    m, r = cert.centers, cert.radii
    if not (np.isfinite(q).all() and np.isfinite(m).all()):
        raise CertificateInvalid("region frames and centers must be finite")
    return q, m, r


def verify(params: dict[str, np.ndarray], cert: Certificate) -> dict:
    """Re-prove cert for params; a summary, or CertificateInvalid naming the first failure."""
    started = time.perf_counter()
    if weights_digest(params) != cert.digest:
        raise CertificateInvalid("the certificate is for other weights (digest differs)")
    try:
        model = fold(params)
    except (KeyError, ValueError) as exc:
        raise CertificateInvalid(f"weights cannot be folded ({exc})") from exc
    if model.size != cert.hidden_size:
        raise CertificateInvalid(f"certificate is for {cert.hidden_size} hidden units, "
                                 f"the weights have {model.size}")
    if not model.served_error < model.allowance:
        raise CertificateInvalid(f"the served pass's rounding bound {model.served_error:.3g} "
                                 f"exceeds the allowance {model.allowance:.3g}")
    classes = make_classes(cert.window)
    q, m, r = regions_of(cert)
    owners, lows, highs = cells_of(cert)
    r_inv, rho = inverse_frame(q)
    cells = cell_zonotopes(m[owners], r_inv[owners], rho[owners], lows, highs)
    if not all(np.isfinite(part).all() for part in cells):
        raise CertificateInvalid("a cell's enclosure is not finite (frame not invertible?)")
    start = start_zonotope(model.size, model.size)
    roots = tuple(np.concatenate([a, b]) for a, b in zip(start, cells, strict=True))
    states = np.concatenate([[classes.root], owners])
    walked = check_trees(model, classes, (q, m, r), (roots, states), cert)
    return {"method": f"zonotope, window {cert.window}", "classes": classes.count,
            "cells": len(owners), **walked, "allowance": model.allowance,
            "seconds": round(time.perf_counter() - started, 4)}
