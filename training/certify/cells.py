"""Cells: each class's box cut by a binary split tree whose leaves are kept or dropped.

A class's region is the union of its kept leaves (a dropped leaf is a part of the box no
sampled state came near, such as the gap between two clusters). Landing means lying inside
that union; `in_union` decides it for boxes in frame coordinates by descending the split tree,
cutting the box at every split it straddles, so the answer depends only on the union: splitting
a kept leaf into two kept halves never changes which nodes land.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEAF, DROPPED = -1, -2  # split_axis values of a kept and of a dropped leaf


@dataclass(frozen=True)
class Table:
    """The split trees of all classes as flat arrays, and where each class's tree starts."""

    axis: np.ndarray  # [S] split axis, LEAF or DROPPED
    value: np.ndarray  # [S] split value (inner nodes)
    low_child: np.ndarray  # [S] index of the part below the value (inner nodes)
    high_child: np.ndarray  # [S]
    roots: np.ndarray  # [C]


def parse_splits(axes: np.ndarray, values: np.ndarray, radii: np.ndarray
                 ) -> tuple[Table, np.ndarray, np.ndarray, np.ndarray]:
    """The table, and the kept leaves in preorder: class ids [K], low [K, H], high [K, H].

    The class box is [-r, r]; a split at value v on axis a, low < v < high, yields [low, v] and
    [v, high] on that axis, so the leaves cover the box by construction. ValueError if the
    entries are not split trees of these boxes.
    """
    size = radii.shape[1]
    axis_list, value_list = np.asarray(axes).tolist(), np.asarray(values).tolist()
    low_child = np.full(len(axis_list), -1, dtype=np.int64)
    high_child = np.full(len(axis_list), -1, dtype=np.int64)
    roots = np.empty(radii.shape[0], dtype=np.int64)
    owners, lows, highs = [], [], []
    i = 0
    for cls in range(radii.shape[0]):
        roots[cls] = i
        stack: list[tuple[np.ndarray, np.ndarray, int, int]] = [
            (-radii[cls], radii[cls].copy(), -1, 0)]
        while stack:
            low, high, parent, side = stack.pop()
            if i >= len(axis_list):
                raise ValueError("cell split trees end early")
            if parent >= 0:
                (low_child if side == 0 else high_child)[parent] = i
            axis, value = axis_list[i], value_list[i]
            here = i
            i += 1
            if axis in (LEAF, DROPPED):
                if axis == LEAF:
                    owners.append(cls)
                    lows.append(low)
                    highs.append(high)
                continue
            if not (0 <= axis < size and low[axis] < value < high[axis]):
                raise ValueError(f"class {cls}: split {value!r} on axis {axis} is outside its "
                                 "cell")
            upper_low, lower_high = low.copy(), high.copy()
            upper_low[axis] = lower_high[axis] = value
            stack.append((upper_low, high, here, 1))
            stack.append((low, lower_high, here, 0))
    if i != len(axis_list):
        raise ValueError("cell split trees have entries left over")
    table = Table(np.asarray(axes, dtype=np.int64), np.asarray(values, dtype=np.float64),
                  low_child, high_child, roots)
    empty = np.zeros((0, size))
    return (table, np.array(owners, dtype=np.int64), np.array(lows) if lows else empty,
            np.array(highs) if highs else empty)


def in_union(table: Table, radii: np.ndarray, owners: np.ndarray, low: np.ndarray,
             high: np.ndarray) -> np.ndarray:
    """Where the box [low, high] (frame coordinates) lies in the union of its class's kept leaves.

    First inside the class box [-r, r]; then down the split tree: a box below (above) a split
    value goes to that part, one that straddles it is cut there and both pieces must land.
    """
    ok = np.all((low >= -radii[owners]) & (high <= radii[owners]), axis=1)
    item = np.flatnonzero(ok)
    node = table.roots[owners[item]]
    low, high = low[item], high[item]
    while len(item):
        axis = table.axis[node]
        dropped = axis == DROPPED
        ok[item[dropped]] = False
        inner = axis >= 0
        item, node, low, high, axis = item[inner], node[inner], low[inner], high[inner], axis[inner]
        rows = np.arange(len(item))
        value = table.value[node]
        below = low[rows, axis] < value
        above = high[rows, axis] > value
        go_low, go_high = below, above  # a box exactly at the value goes to one side
        both = go_low & go_high
        low_part, high_part = high[go_low].copy(), low[go_high].copy()
        low_part[both[go_low], axis[go_low][both[go_low]]] = value[go_low][both[go_low]]
        high_part[both[go_high], axis[go_high][both[go_high]]] = value[go_high][both[go_high]]
        # a box of zero width exactly at the value: the low part holds it
        flat = ~go_low & ~go_high
        item = np.concatenate([item[go_low], item[go_high], item[flat]])
        node = np.concatenate([table.low_child[node[go_low]], table.high_child[node[go_high]],
                               table.low_child[node[flat]]])
        new_low = np.concatenate([low[go_low], high_part, low[flat]])
        high = np.concatenate([low_part, high[go_high], high[flat]])
        low = new_low
        item_ok = ok[item]
        item, node, low, high = item[item_ok], node[item_ok], low[item_ok], high[item_ok]
    return ok
