"""certify(): weights in, one of three verdicts out, each one checked before it is told.

"certified" only after check.verify re-proves the certificate the search built; "counterexample"
only for a pair whose served sum (Predictor.add) is wrong; anything else is "unknown", with the
part of the proof that failed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from training.certify.abstract import fold
from training.certify.certificate import Certificate, CertificateInvalid, weights_digest
from training.certify.check import verify
from training.certify.classes import Classes
from training.certify.falsify import find_counterexample
from training.certify.regions import draw_samples, propose, refined_classes, sample_ids
from training.certify.search import Outcome, search
from training.predictor import Predictor

# Attempts in turn: (symbols every class looks back, spread above which a class is split one
# symbol deeper). Few classes are fastest; finer classes prove what coarse ones cannot.
ATTEMPTS = ((2, 0.05), (3, 0.02))
MAX_CLASSES = 2048  # keeps certificates to a few MB
FALSIFY_SHARE = 0.3  # of the time left after the quick falsifier, kept for a longer one
STATUSES = ("certified", "counterexample", "unknown")


@dataclass
class Verdict:
    """What certify() concluded; certificate is set only when certified."""

    status: str
    certificate: Certificate | None = None
    counterexample: dict | None = None
    reason: str = ""
    seconds: float = 0.0
    summary: dict = field(default_factory=dict)


def check_params(params: dict[str, np.ndarray]) -> None:
    """Shapes and values an adder must have; ValueError naming what is wrong."""
    for name in ("w_i", "w_h", "w_o"):
        if name not in params:
            raise ValueError(f"weights have no array {name!r}")
    size = np.asarray(params["w_h"]).shape[0]
    shapes = {"w_i": (size, 2), "w_h": (size, size), "w_o": (1, size), "b_h": (size,),
              "b_o": (1,)}
    for name, array in params.items():
        if name not in shapes:
            raise ValueError(f"weights have an unexpected array {name!r}")
        array = np.asarray(array)
        if array.shape != shapes[name] or not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"array {name!r} has shape {array.shape} and dtype {array.dtype}, "
                             f"expected {shapes[name]} float")
        if not np.isfinite(array).all():
            raise ValueError(f"array {name!r} has non-finite values")


def build(digest: str, classes: Classes, regions: tuple, outcome: Outcome,
          info: dict) -> Certificate:
    """The certificate of a successful search."""
    q, m, r = regions
    axes: list[int] = []
    values: list[float] = []
    leaves = []
    for root in outcome.roots:
        root.preorder(axes, values)
        leaves.extend(root.leaves())
    trees = [outcome.start_flags] + [leaf.flags for leaf in leaves]
    return Certificate(
        digest, classes.trie.splits(), m.copy(), q.astype(np.float32), r.copy(),
        np.array(axes, dtype=np.int8), np.array(values, dtype=np.float64),
        np.array([len(t) for t in trees], dtype=np.int64),
        np.concatenate(trees).astype(np.uint8), info)


def certify(params: dict[str, np.ndarray], time_limit: float = 30.0, *, seed: int = 0
            ) -> Verdict:
    """Prove the served adder exact at every width, find a wrong sum, or say what failed."""
    started = time.perf_counter()
    deadline = started + time_limit
    check_params(params)
    params = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    predictor = Predictor(params)
    rng = np.random.default_rng(seed)

    def done(status: str, **kwargs: object) -> Verdict:
        seconds = round(time.perf_counter() - started, 4)
        verdict = Verdict(status, seconds=seconds, **kwargs)  # type: ignore[arg-type]
        verdict.summary = {**verdict.summary, "seconds": seconds}
        return verdict

    quick = min(deadline, started + max(0.3, 0.05 * time_limit))
    if found := find_counterexample(predictor, rng, quick):
        return done("counterexample", counterexample=found,
                    reason=f"{found['a']} + {found['b']} at {found['bits']} bits is served "
                           f"as {found['got']}")
    model = fold(params)
    if not model.served_error < model.allowance:
        return done("unknown", reason=f"the served pass's rounding bound "
                    f"{model.served_error:.3g} exceeds the allowance {model.allowance:.3g}")
    reasons = []
    # the last part of the budget is the falsifier's: models that resist proof are often wrong
    proofs_end = time.perf_counter() + (1.0 - FALSIFY_SHARE) * (deadline - time.perf_counter())
    samples = draw_samples(model, np.random.default_rng([seed, 1]))  # not after the clock
    for i, (base, spread) in enumerate(ATTEMPTS):
        share = (proofs_end - time.perf_counter()) / (len(ATTEMPTS) - i)
        name = f"classes {base}+ deep"
        if share <= 0:
            reasons.append(f"{name}: no time left")
            continue
        ends = time.perf_counter() + share
        classes = refined_classes(samples, base, spread, MAX_CLASSES, ends)
        ids = sample_ids(classes, samples)
        regions = propose(samples.states, ids, classes.count)
        outcome = search(model, classes, regions, (samples.states, ids), ends)
        name = f"{classes.count} classes {base}-{classes.window} deep"
        if outcome.reason:
            top = sorted(outcome.failures.items(), key=lambda kv: -kv[1])[:3]
            detail = "; ".join(f"{n} cells: {why}" for why, n in top)
            reasons.append(f"{name}: {outcome.reason}" + (f" ({detail})" if top else ""))
            continue
        info = {"search_seconds": round(time.perf_counter() - started, 4)}
        cert = build(weights_digest(params), classes, regions, outcome, info)
        try:
            summary = verify(params, cert)
        except CertificateInvalid as exc:  # the search and the checker disagree: not proved
            reasons.append(f"{name}: the checker refused the search's certificate "
                           f"({exc.reason})")
            continue
        return done("certified", certificate=cert, summary={
            **summary, "check_seconds": summary["seconds"], "bytes": len(cert.to_bytes())})
    if time.perf_counter() < deadline and (
            found := find_counterexample(predictor, rng, deadline)):
        return done("counterexample", counterexample=found,
                    reason=f"{found['a']} + {found['b']} at {found['bits']} bits is served "
                           f"as {found['got']}")
    return done("unknown", reason="; ".join(reasons) or "time limit reached")
