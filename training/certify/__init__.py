"""A sound certifier: proves a trained adder exact at every input width, or finds a wrong sum.

See docs/certification.md for what is proved and why the proof is sound.
"""

from training.certify.certificate import (
    Certificate,
    CertificateError,
    CertificateInvalid,
    weights_digest,
)
from training.certify.check import verify
from training.certify.falsify import run_structured_pairs
from training.certify.verdict import Verdict, certify

__all__ = ["Certificate", "CertificateError", "CertificateInvalid", "Verdict", "certify",
           "run_structured_pairs", "verify", "weights_digest"]
