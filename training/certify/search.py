"""The search: landing trees from every cell and from the start state, splitting cells that fail.

A tree grows greedily: a node whose enclosure lies in its class's region lands; any other is
expanded, up to max_depth steps. A cell whose tree does not land (or whose output sign is not
proved) is split in two along its widest axis and both halves are tried again. The search only
proposes: the certificate it builds is re-proved by check.verify before anyone is told.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from training.certify.abstract import (
    LOGIT_MARGIN,
    Folded,
    cell_zonotopes,
    frame_bounds,
    inverse_frame,
    start_zonotope,
)
from training.certify.cells import DROPPED, LEAF, Table, in_union, parse_splits
from training.certify.check import expand
from training.certify.classes import Classes
from training.certify.regions import Regions

CHUNK = 4096  # nodes expanded between looks at the clock


@dataclass
class Cell:
    """A box [low, high] in its class's frame; a leaf, or split at value on axis into two."""

    owner: int
    low: np.ndarray
    high: np.ndarray
    axis: int = -1
    value: float = 0.0
    parts: tuple[Cell, Cell] | None = None
    flags: np.ndarray | None = None  # the landing tree, once found
    kept: bool = True  # a dropped leaf is no part of the region and needs no tree

    def split(self) -> tuple[Cell, Cell]:
        """Halve along the widest axis."""
        axis = int(np.argmax(self.high - self.low))
        value = float(0.5 * (self.low[axis] + self.high[axis]))
        if not self.low[axis] < value < self.high[axis]:
            raise ValueError("cell too small to split")
        lower_high, upper_low = self.high.copy(), self.low.copy()
        lower_high[axis] = upper_low[axis] = value
        self.axis, self.value = axis, value
        self.parts = (Cell(self.owner, self.low, lower_high),
                      Cell(self.owner, upper_low, self.high))
        return self.parts

    def leaves(self) -> list[Cell]:
        """Kept leaves in preorder (the order the checker derives)."""
        if self.parts is None:
            return [self] if self.kept else []
        return self.parts[0].leaves() + self.parts[1].leaves()

    def preorder(self, axes: list[int], values: list[float]) -> None:
        """Append this tree's split entries in preorder."""
        axes.append(self.axis if self.parts is not None else LEAF if self.kept else DROPPED)
        values.append(self.value)
        if self.parts is not None:
            self.parts[0].preorder(axes, values)
            self.parts[1].preorder(axes, values)


@dataclass
class Outcome:
    """What a search found: per tree its flags or why it failed."""

    start_flags: np.ndarray | None
    roots: list[Cell]
    failures: dict[str, int] = field(default_factory=dict)
    failed_cells: list[Cell] = field(default_factory=list)
    nodes: int = 0
    reason: str = ""


def presplit(regions: Regions, states: np.ndarray, ids: np.ndarray, *, widest: float = 0.05,
             most: int = 16, margin: float = 0.25) -> list[Cell]:
    """Each class's box cut along its widest axis while wider than `widest` (up to `most`
    leaves); a leaf no sample comes near (within `margin` of its size) is dropped, and so is
    the whole box of a class without samples (nothing lands there)."""
    q, m, r = regions
    order = np.argsort(ids, kind="stable")
    bounds = np.searchsorted(ids[order], np.arange(len(m) + 1))
    roots = []
    for cls in range(len(m)):
        root = Cell(cls, -r[cls], r[cls].copy())
        roots.append(root)
        root.kept = bool(bounds[cls + 1] > bounds[cls])  # no sample: an empty region
        if r[cls].max() <= widest or not root.kept:
            continue
        y = (states[order[bounds[cls] : bounds[cls + 1]]] - m[cls]) @ q[cls].T
        queue, leaves = [(root, y)], 1
        while queue:
            cell, inside = queue.pop(0)
            if (cell.high - cell.low).max() <= 2 * widest or leaves >= most:
                continue
            leaves += 1
            for part in cell.split():
                pad = margin * (part.high - part.low) + 1e-3
                near = np.all((inside >= part.low - pad) & (inside <= part.high + pad), axis=1)
                part.kept = bool(near.any())
                if part.kept:
                    queue.append((part, inside[near]))
    return roots


def table_of(roots: list[Cell], radii: np.ndarray) -> Table:
    """The landing table of these split trees."""
    axes: list[int] = []
    values: list[float] = []
    for root in roots:
        root.preorder(axes, values)
    return parse_splits(np.array(axes), np.array(values), radii)[0]


def grow_trees(model: Folded, classes: Classes, regions: Regions, table: Table, roots: tuple,
               states: np.ndarray, max_depth: int, max_nodes: int,
               deadline: float = float("inf")) -> tuple[list, list[str | None]]:
    """Greedy landing trees from the given roots; per tree its flags, or None and why not."""
    q, m, r = regions
    count = len(states)
    x, g, e = roots
    owner = np.arange(count)
    alive = np.ones(count, dtype=bool)
    why: list[str | None] = [None] * count
    sizes = np.zeros(count, dtype=np.int64)
    recorded_owner, recorded_flag = [], []
    state = states
    depth = 0
    while len(x):
        depth += 1
        pending = np.bincount(owner, minlength=count)
        for t in np.flatnonzero(alive & (sizes + 4 * pending > max_nodes)):
            alive[t], why[t] = False, f"tree exceeded {max_nodes} nodes"
        keep = alive[owner]
        x, g, e, state, owner = x[keep], g[keep], e[keep], state[keep], owner[keep]
        parts = []
        for first in range(0, len(x), CHUNK):  # bounded work between looks at the clock
            if time.perf_counter() > deadline:
                break
            chunk = slice(first, first + CHUNK)
            parts.append(expand(model, classes, (x[chunk], g[chunk], e[chunk]), state[chunk]))
        if len(parts) * CHUNK < len(x):
            for t in np.flatnonzero(alive):
                alive[t], why[t] = False, "time limit reached"
            break
        if not parts:
            break
        x, g, e = (np.concatenate([p[0][i] for p in parts]) for i in range(3))
        state = np.concatenate([p[1] for p in parts])
        margins = np.concatenate([p[3] for p in parts])
        owner = np.repeat(owner, 4)
        bad = margins <= LOGIT_MARGIN
        for t in np.unique(owner[bad]):
            alive[t], why[t] = False, f"output sign not proved (depth {depth})"
        land = np.zeros(len(owner), dtype=bool)
        classed = state < classes.count
        if classed.any():
            idx = np.flatnonzero(classed)
            where = state[idx]
            low, high = frame_bounds(q[where], m[where], (x[idx], g[idx], e[idx]))
            land[idx] = in_union(table, r, where, low, high)
        sizes += np.bincount(owner, minlength=count)
        stuck = ~land & (depth >= max_depth)
        for t in np.unique(owner[stuck]):
            if alive[t]:
                alive[t], why[t] = False, f"branches never landed within {max_depth} steps"
        for t in np.flatnonzero(alive & (sizes > max_nodes)):
            alive[t], why[t] = False, f"tree exceeded {max_nodes} nodes"
        recorded_owner.append(owner)
        recorded_flag.append(~land)
        keep = ~land & alive[owner]
        x, g, e, state, owner = x[keep], g[keep], e[keep], state[keep], owner[keep]
    if not recorded_owner:
        return [np.zeros(0, np.uint8) if alive[t] else None for t in range(count)], why
    owners = np.concatenate(recorded_owner)
    flags = np.concatenate(recorded_flag).astype(np.uint8)
    order = np.argsort(owners, kind="stable")  # per tree, level order is kept
    owners, flags = owners[order], flags[order]
    bounds = np.searchsorted(owners, np.arange(count + 1))
    return [flags[bounds[t] : bounds[t + 1]] if alive[t] else None for t in range(count)], why


def search(model: Folded, classes: Classes, regions: Regions, samples: tuple, deadline: float,
           *, max_depth: int = 12, max_nodes: int = 4096, max_cells: int = 40_000,
           group: int = 64) -> Outcome:
    """Find landing trees for the start state and every kept cell, splitting cells that fail.

    samples (states, class ids) decide which parts of the boxes are dropped (presplit).
    """
    q, m, r = regions
    r_inv, rho = inverse_frame(q)
    roots = presplit(regions, *samples)
    table = table_of(roots, r)  # later splits keep both halves: the union stays the same
    start = start_zonotope(model.size, model.size)
    flags, why = grow_trees(model, classes, regions, table, start, np.array([classes.root]),
                            max_depth + classes.window, max_nodes * 16, deadline)
    outcome = Outcome(flags[0], roots)
    if flags[0] is None:
        outcome.reason = f"from the start state: {why[0]}"
        return outcome
    pending = [leaf for root in roots for leaf in root.leaves()]
    cells = len(pending)
    while pending:
        if time.perf_counter() > deadline:
            outcome.reason = f"time limit reached with {len(pending)} cells unproved"
            outcome.failed_cells = pending
            return outcome
        batch, pending = pending[:group], pending[group:]
        owners = np.array([c.owner for c in batch])
        low = np.array([c.low for c in batch])
        high = np.array([c.high for c in batch])
        zono = cell_zonotopes(m[owners], r_inv[owners], rho[owners], low, high)
        found, why = grow_trees(model, classes, regions, table, zono, owners, max_depth,
                                max_nodes, deadline)
        for cell, tree, reason in zip(batch, found, why, strict=True):
            if reason == "time limit reached":
                pending.append(cell)
                continue
            if tree is not None:
                cell.flags = tree
                outcome.nodes += len(tree)
                continue
            outcome.failures[reason] = outcome.failures.get(reason, 0) + 1
            if cells + 1 > max_cells:
                outcome.reason = (f"more than {max_cells} cells needed "
                                  f"({reason}, class {cell.owner})")
                outcome.failed_cells = [cell, *pending]
                return outcome
            try:
                pending.extend(cell.split())
            except ValueError:
                outcome.reason = f"a cell of class {cell.owner} cannot be split further ({reason})"
                outcome.failed_cells = [cell, *pending]
                return outcome
            cells += 1
    return outcome
