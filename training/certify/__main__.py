"""python -m training.certify PATH: prove a stored model exact at every width, or say why not.

PATH is a version folder (weights.npz, maybe certificate.npz) or a weights .npz file. A folder
with a certificate has it re-verified (--search forces a new search instead). Exit 0: certified
(or the stored certificate verifies); 1: a counterexample, unknown, or a bad stored certificate;
2: the input cannot be read.
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path

import numpy as np

from training.certify.certificate import Certificate, CertificateError, CertificateInvalid
from training.certify.check import verify
from training.certify.verdict import certify, check_params

CERTIFICATE = "certificate.npz"
WEIGHTS = "weights.npz"


def load_weights(path: Path) -> dict[str, np.ndarray]:
    """Arrays of a weights npz (no pickle), checked as an adder's; ValueError if not."""
    try:
        with np.load(path, allow_pickle=False) as data:
            params = {name: np.array(data[name]) for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"{path}: cannot be read as an npz ({exc})") from exc
    try:
        check_params(params)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    return params


def main(argv: list[str] | None = None) -> int:
    """Run the CLI (exit codes in the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m training.certify", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", type=Path, help="a version folder or a weights .npz")
    parser.add_argument("--time-limit", type=float, default=30.0, help="seconds (default 30)")
    parser.add_argument("--search", action="store_true",
                        help="search anew even if the folder holds a certificate")
    args = parser.parse_args(argv)
    folder = args.path.is_dir()
    weights = args.path / WEIGHTS if folder else args.path
    try:
        params = load_weights(weights)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stored = args.path / CERTIFICATE if folder else None
    if stored is not None and stored.exists() and not args.search:
        try:
            summary = verify(params, Certificate.from_bytes(stored.read_bytes()))
        except CertificateInvalid as exc:
            print(f"stored certificate INVALID: {exc.reason}")
            return 1
        except (CertificateError, OSError) as exc:
            print(f"stored certificate UNREADABLE: {exc}")
            return 1
        print(f"stored certificate verified: {summary['cells']} cells, {summary['nodes']} "
              f"nodes, min margin {summary['min_margin']:.3g}, in {summary['seconds']:.3f} s")
        return 0
    if not args.time_limit > 0:
        print("error: --time-limit must be positive", file=sys.stderr)
        return 2
    verdict = certify(params, time_limit=args.time_limit)
    if verdict.status == "certified":
        s = verdict.summary
        print(f"certified: exact at every width ({s['method']}, {s['cells']} cells, "
              f"{s['nodes']} nodes, min margin {s['min_margin']:.3g}, {verdict.seconds:.2f} s; "
              f"re-check {s['check_seconds']:.3f} s, certificate {s['bytes']} bytes)")
        return 0
    if verdict.status == "counterexample":
        c = verdict.counterexample or {}
        print(f"counterexample: {c['a']} + {c['b']} at {c['bits']} bits is served as {c['got']}"
              f" (exact: {c['a'] + c['b']})")
        return 1
    print(f"unknown after {verdict.seconds:.1f} s: {verdict.reason}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
