"""Sound enclosures of the served recurrence: zonotopes, the tanh relaxation and one step.

A batch of N zonotopes is (x [N, H], g [N, H, P], e [N, H]): the set of points
x + g eps + d with |eps_j| <= 1 and |d_i| <= e_i. Every function here returns a set that
contains the exact real image of its input set, whatever the rounding of the float64 operations
that compute it: each computed quantity carries a rigorous bound on its rounding error (Higham's
gamma_n = n u / (1 - n u) for any sum of n products, in any order, FMA or BLAS), which is added
to the error radius e. See docs/certification.md for the argument as a whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.predictor import SYMBOL_BITS

UNIT = 2.0**-53  # unit roundoff of float64
TINY = 1e-300  # covers underflow: every bound below adds it once per operation chain
# Accuracy assumed of numpy's tanh (absolute; |tanh| <= 1): libm and SIMD tanh are within a few
# ulp (2.2e-16 each); tests/test_certify_abstract.py measures it against mpmath.
TANH_ERROR = 1e-12
# Room for the served pass per step (any summation order, any tanh within TANH_ERROR): the
# certifier proves the claim for every sequence of states that stays this close to the exact
# recurrence, and Folded checks that the served pass's own bound is below it.
STATE_ALLOWANCE = 1e-10
LOGIT_MARGIN = 1e-9  # |logit| proved above this, beyond the served output's rounding bound


def gamma(n: int) -> float:
    """A generous upper bound on Higham's gamma_{n+2}, doubled: covers the bound's own rounding."""
    return 4.0 * (n + 2) * UNIT


def up(value: np.ndarray | float, ops: int = 2) -> np.ndarray | float:
    """An upper bound on the exact value of a non-negative quantity computed in `ops` steps."""
    return value * (1.0 + gamma(ops)) + TINY


@dataclass(frozen=True)
class Folded:
    """The served model's constants, folded exactly as Predictor folds them, with error bounds.

    u_t = tanh(A u_{t-1} + c[k]), logit = w . u + b. A = w_h / 4 and w = w_o / 2 are exact
    (division by a power of two); c and b are sums whose rounding is bounded in c_error and
    b_error (the served pass may compute them in another order: both differ from the exact
    value by at most that, so from each other by twice that).
    """

    a: np.ndarray  # [H, H]
    abs_a: np.ndarray
    a_t: np.ndarray  # A^T, contiguous, for x @ A^T
    c: np.ndarray  # [4, H]
    c_error: np.ndarray  # [4, H]
    w: np.ndarray  # [H]
    b: float
    logit_error: float  # served logit minus exact logit, bound, for any |u| <= 1
    allowance: float  # per-step state perturbation covered (STATE_ALLOWANCE)
    served_error: float  # the served pass's own per-step bound (must stay below allowance)

    @property
    def size(self) -> int:
        """Hidden units."""
        return int(self.a.shape[0])


def fold(params: dict[str, np.ndarray]) -> Folded:
    """The served constants of params and the bounds on their rounding."""
    w_i, w_h, w_o = (np.asarray(params[k], dtype=np.float64) for k in ("w_i", "w_h", "w_o"))
    size = w_h.shape[0]
    b_h = np.asarray(params.get("b_h", np.zeros(size)), dtype=np.float64)
    b_o = np.asarray(params.get("b_o", np.zeros(1)), dtype=np.float64)
    a = w_h / 4.0
    if not np.array_equal(a * 4.0, w_h):
        raise ValueError("w_h has values too small to divide by 4 exactly (subnormal)")
    c = (w_h.sum(axis=1) / 2.0 + SYMBOL_BITS @ w_i.T + b_h) / 2.0
    c_terms = (np.abs(w_h).sum(axis=1) / 2.0 + SYMBOL_BITS @ np.abs(w_i).T + np.abs(b_h)) / 2.0
    c_error = up(gamma(size + 4) * c_terms)
    w = w_o[0] / 2.0
    b = float(w_o.sum() / 2.0 + b_o[0])
    b_error = up(gamma(size + 2) * (np.abs(w_o).sum() / 2.0 + abs(float(b_o[0]))))
    # served logit = fl(u . w + b_served): its rounding over |u| <= 1, and b_served vs exact
    logit_error = float(up(gamma(size + 1) * (np.abs(w).sum() + abs(b) + b_error) + 2 * b_error))
    # served z = fl(fl(A u) + c_served): matmul and add, plus c_served vs c; tanh is 1-Lipschitz
    row = np.abs(a).sum(axis=1)
    served = up(gamma(size + 1) * (row + np.abs(c).max(axis=0) + c_error.max(axis=0)))
    served_error = float(np.max(served + 2 * c_error.max(axis=0)) + TANH_ERROR)
    return Folded(a, np.abs(a), np.ascontiguousarray(a.T), c, c_error, w, b, logit_error,
                  STATE_ALLOWANCE, served_error)


def tanh_relaxation(
    low: np.ndarray, high: np.ndarray, point: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slope s, offset m, radius q with tanh(z) in s z + [m - q, m + q] for all z in [low, high].

    Why it is sound: s is at most tanh'(point) (computed, minus its error bound), so the
    residual r(z) = tanh(z) - s z has r' = tanh' - s, which is positive for |z| < t* and
    negative beyond, where t* >= |point| solves tanh'(t*) = s (tanh' is even and falls with
    |z|). So r's extremes over [low, high] are at the ends or at +-t*, and r is odd. For t* in
    [low, high]: r(t*) - r(T) = integral of (tanh' - s) from T = |point| to t*, whose integrand
    is at most tanh'(T) - s <= eta, and t* <= high; so r(t*) <= r(T) + (high - T) eta, and
    likewise r(-t*) >= -r(T) - (-low - T) eta. Every value of tanh carries TANH_ERROR.
    """
    th = np.tanh(point)
    slope = np.maximum(1.0 - th * th - 3.0 * TANH_ERROR, 0.0)
    eta = 6.0 * TANH_ERROR
    def residual(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """r(z) and a bound on its error."""
        sz = slope * z
        return np.tanh(z) - sz, TANH_ERROR + 4.0 * UNIT * (1.0 + np.abs(sz)) + TINY

    r_low, err_low = residual(low)
    r_high, err_high = residual(high)
    top = np.maximum(r_low + err_low, r_high + err_high)
    bottom = np.minimum(r_low - err_low, r_high - err_high)
    t = np.abs(point)
    r_t, err_t = residual(t)
    base = r_t + err_t  # >= r(T)
    peak = base + up(np.maximum(high - t, 0.0) * eta)
    trough = -base - up(np.maximum(-low - t, 0.0) * eta)
    top = np.where(high >= t, np.maximum(top, peak), top)
    bottom = np.where(-low >= t, np.minimum(bottom, trough), bottom)
    # the sums above round: widen by far more than their error (4 ops on values below |top|)
    widen = 8.0 * UNIT * (np.abs(top) + np.abs(bottom)) + TINY
    top, bottom = top + widen, bottom - widen
    mid = 0.5 * (top + bottom)
    radius = up(0.5 * (top - bottom)) + 2.0 * UNIT * np.abs(mid) + TINY
    return slope, mid, radius


Zonotopes = tuple[np.ndarray, np.ndarray, np.ndarray]  # x [N, H], g [N, H, P], e [N, H]


def step(model: Folded, zono: Zonotopes, symbols: np.ndarray) -> Zonotopes:
    """An enclosure of tanh(A v + c[k]) + [-allowance, allowance] for every v in zonotope n.

    Linear part: A x + c and A g are computed, and the error radius grows by |A| e plus the
    rounding bound of both (gamma_n |A| |x| row by row; |A| times the row sums of |g| for the
    generators, since each entry's error is at most gamma_H (|A| |g|)_ij). Then each unit's
    pre-activation lies in [low, high] (center +- its radius, rounded outward), tanh is
    relaxed per unit (tanh_relaxation), and the slope scales the center, generators and error.
    """
    x, g, e = zono
    size = model.size
    c = model.c[symbols]
    zx = x @ model.a_t + c
    zg = np.matmul(model.a, g)
    abs_g = np.abs(g).sum(axis=2)
    linear_err = gamma(size + 1) * ((np.abs(x) + abs_g) @ model.abs_a.T + np.abs(c))
    ze = up(e @ model.abs_a.T + linear_err, size + 2) + model.c_error[symbols]
    spread = up(np.abs(zg).sum(axis=2) + ze, g.shape[2] + 2)
    low = zx - spread
    high = zx + spread
    low = low - 2.0 * UNIT * np.abs(low) - TINY  # each one rounding step: push outward
    high = high + 2.0 * UNIT * np.abs(high) + TINY
    slope, mid, radius = tanh_relaxation(low, high, np.clip(zx, low, high))
    nx = slope * zx + mid
    ng = slope[:, :, None] * zg
    scaled = np.abs(slope * zx) + np.abs(mid)  # nx = fl(fl(slope zx) + mid): two roundings
    rounding = 4.0 * UNIT * (scaled + np.abs(ng).sum(axis=2) + slope * ze) + TINY
    ne = up(slope * ze + radius, 3) + rounding + model.allowance
    return nx, ng, ne


def logit_bounds(model: Folded, zono: Zonotopes) -> tuple[np.ndarray, np.ndarray]:
    """Bounds on the served logit over each zonotope: exact image plus both roundings."""
    x, g, e = zono
    size = model.size
    center = x @ model.w + model.b
    wg = np.einsum("i,nip->np", model.w, g)
    abs_w = np.abs(model.w)
    err = gamma(size + 1) * (np.abs(x) @ abs_w + abs(model.b) + np.abs(g).sum(axis=2) @ abs_w)
    spread = up(np.abs(wg).sum(axis=1) + e @ abs_w + err, g.shape[2] + size + 2)
    spread = spread + model.logit_error
    low, high = center - spread, center + spread
    return low - 2.0 * UNIT * np.abs(low) - TINY, high + 2.0 * UNIT * np.abs(high) + TINY


def output_ok(model: Folded, zono: Zonotopes, bits: np.ndarray) -> np.ndarray:
    """Where the served bit is the wanted bit for every state of the zonotope."""
    low, high = logit_bounds(model, zono)
    return np.where(bits.astype(bool), low > LOGIT_MARGIN, high < -LOGIT_MARGIN)


def frame_extent(q: np.ndarray, m: np.ndarray, zono: Zonotopes) -> np.ndarray:
    """Upper bounds on |Q (v - m)| per row over each zonotope; q [N, H, H], m [N, H].

    y = Q (x - m) + Q g eps + Q d; its rounding: x - m (one op), then sums of H products.
    """
    x, g, e = zono
    size = x.shape[1]
    diff = x - m
    abs_q = np.abs(q)
    yc = np.einsum("nij,nj->ni", q, diff)
    yg = np.matmul(q, g)
    abs_g = np.abs(g).sum(axis=2)
    err = gamma(size + 2) * np.einsum("nij,nj->ni", abs_q, np.abs(x) + np.abs(m) + abs_g)
    ye = np.einsum("nij,nj->ni", abs_q, e)
    return up(np.abs(yc) + np.abs(yg).sum(axis=2) + ye + err, g.shape[2] + size + 4)


def contained(q: np.ndarray, m: np.ndarray, r: np.ndarray, zono: Zonotopes) -> np.ndarray:
    """Where zonotope n lies inside the region {v : |Q_n (v - m_n)| <= r_n} (all rows)."""
    return np.all(frame_extent(q, m, zono) <= r, axis=1)


def inverse_frame(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """R close to Q^-1 and rho with |(Q^-1 - R) y|_inf <= rho |y|_inf, per frame.

    With E = I - Q R: Q^-1 - R = R (I - E)^-1 E, so its inf-norm is at most
    |R| |E| / (1 - |E|). |E| is bounded from the computed I - Q R plus its rounding.
    Frames whose bound fails (|E| >= 1/2) get rho = inf: their cells cover nothing.
    """
    r = np.linalg.inv(q)
    size = q.shape[-1]
    e = np.eye(size) - np.matmul(q, r)
    e_bound = up(np.abs(e).sum(axis=-1).max(axis=-1)
                 + gamma(size + 1) * np.matmul(np.abs(q), np.abs(r)).sum(axis=-1).max(axis=-1)
                 + UNIT, size + 2)
    r_norm = up(np.abs(r).sum(axis=-1).max(axis=-1), size + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.where(e_bound < 0.5, up(r_norm * e_bound / (1.0 - e_bound), 4), np.inf)
    return r, rho


def cell_zonotopes(
    m: np.ndarray, r_inv: np.ndarray, rho: np.ndarray, low: np.ndarray, high: np.ndarray
) -> Zonotopes:
    """Zonotopes holding {v : Q (v - m) in [low, high]} (boxes in frame coordinates).

    v = m + Q^-1 y with y = mid + diag(half) eps; Q^-1 y = R y + (Q^-1 - R) y, whose size is at
    most rho |y|_inf (inverse_frame). half is rounded up so that mid +- half covers [low, high].
    """
    size = m.shape[1]
    mid = 0.5 * (low + high)
    half = up(0.5 * (high - low)) + 2.0 * UNIT * np.abs(mid) + TINY
    x = m + np.einsum("nij,nj->ni", r_inv, mid)
    g = r_inv * half[:, None, :]
    abs_r = np.abs(r_inv)
    y_max = np.maximum(np.abs(low), np.abs(high)).max(axis=1)
    err = gamma(size + 2) * (np.abs(m) + np.einsum("nij,nj->ni", abs_r, np.abs(mid)))
    err = err + 2.0 * UNIT * np.abs(g).sum(axis=2)
    e = up(err + (rho * y_max)[:, None], 3)
    return x, g, e


def start_zonotope(size: int, generators: int) -> Zonotopes:
    """The exact start state u_0 = -1 (h_0 = 0), as a zonotope of one point."""
    return np.full((1, size), -1.0), np.zeros((1, size, generators)), np.zeros((1, size))
