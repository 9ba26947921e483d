"""Landing in a union of cells, against a direct check of sampled points of each box."""

from __future__ import annotations

import numpy as np
import pytest

from training.certify.cells import DROPPED, LEAF, in_union, parse_splits


def random_trees(rng: np.random.Generator, count: int, size: int, radii: np.ndarray
                 ) -> tuple[list[int], list[float]]:
    """Random split trees over the class boxes, some leaves dropped, in preorder."""
    axes: list[int] = []
    values: list[float] = []

    def grow(low: np.ndarray, high: np.ndarray, depth: int) -> None:
        if depth >= 4 or rng.random() < 0.3:
            axes.append(DROPPED if rng.random() < 0.3 else LEAF)
            values.append(0.0)
            return
        axis = int(rng.integers(0, size))
        value = float(rng.uniform(low[axis], high[axis]))
        axes.append(axis)
        values.append(value)
        lower_high, upper_low = high.copy(), low.copy()
        lower_high[axis] = upper_low[axis] = value
        grow(low, lower_high, depth + 1)
        grow(upper_low, high, depth + 1)

    for cls in range(count):
        grow(-radii[cls], radii[cls].copy(), 0)
    return axes, values


def kept_boxes(axes: list[int], values: list[float], radii: np.ndarray) -> list[list]:
    """Per class, the kept leaves' boxes, walked independently of parse_splits."""
    out: list[list] = []
    i = 0
    for cls in range(radii.shape[0]):
        boxes = []
        stack = [(-radii[cls], radii[cls].copy())]
        while stack:
            low, high = stack.pop()
            axis = axes[i]
            value = values[i]
            i += 1
            if axis == LEAF:
                boxes.append((low, high))
            elif axis >= 0:
                lower_high, upper_low = high.copy(), low.copy()
                lower_high[axis] = upper_low[axis] = value
                stack.append((upper_low, high))
                stack.append((low, lower_high))
        out.append(boxes)
    return out


@pytest.mark.parametrize("seed", range(4))
def test_in_union_is_never_wrong_and_not_useless(seed: int) -> None:
    """Boxes said to land: every corner and random point is in a kept leaf; some do land,
    some that lie wholly in kept leaves, and some that touch a dropped one are refused."""
    rng = np.random.default_rng(seed)
    count, size = 5, 3
    radii = rng.uniform(0.5, 1.0, (count, size))
    axes, values = random_trees(rng, count, size, radii)
    table, owners, _, _ = parse_splits(np.array(axes), np.array(values), radii)
    boxes = kept_boxes(axes, values, radii)
    assert len(owners) == sum(len(b) for b in boxes)
    n = 2000
    cls = rng.integers(0, count, n)
    center = rng.uniform(-1.1, 1.1, (n, size)) * radii[cls]
    half = rng.uniform(0, 0.3, (n, size)) * radii[cls]
    low, high = center - half, center + half
    said = in_union(table, radii, cls, low, high)
    assert 0 < said.sum() < n
    refused_inside = 0
    for k in range(n):
        corners = np.array([[low[k, j] if (c >> j) & 1 else high[k, j] for j in range(size)]
                            for c in range(2**size)])
        points = np.concatenate([corners, rng.uniform(low[k], high[k], (30, size))])
        inside = [any(np.all((p >= b[0]) & (p <= b[1])) for b in boxes[cls[k]])
                  for p in points]
        if said[k]:
            assert all(inside)
        elif all(inside):
            refused_inside += 1  # possible only where pieces meet at a cut, rare
    assert refused_inside < n // 20


def test_bad_split_entries_are_refused() -> None:
    """Splits outside their cell, or trees that end early or run over: ValueError."""
    radii = np.ones((1, 2))
    for axes, values, message in (([0, LEAF, LEAF], [2.0, 0, 0], "outside"),
                                  ([0, LEAF], [0.0, 0], "end early"),
                                  ([LEAF, LEAF], [0, 0], "left over"),
                                  ([5, LEAF, LEAF], [0.0, 0, 0], "outside")):
        with pytest.raises(ValueError, match=message):
            parse_splits(np.array(axes), np.array(values), radii)
