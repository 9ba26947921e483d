"""The checker and the certificate format: what must re-verify and what must not."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from tests.adders import adder
from training.certify import (
    Certificate,
    CertificateError,
    CertificateInvalid,
    verify,
    weights_digest,
)


@pytest.fixture
def cert(exact_verdict) -> Certificate:
    """A fresh copy of the exact adder's certificate (tests edit it)."""
    assert exact_verdict.status == "certified", exact_verdict.reason
    return Certificate.from_bytes(exact_verdict.certificate.to_bytes())


def test_round_trip_verifies(exact_adder: dict, cert: Certificate) -> None:
    """Bytes out, bytes in, re-proved against the weights."""
    summary = verify(exact_adder, cert)
    assert summary["nodes"] > 0 and summary["min_margin"] > 1.0


def test_digest_is_canonical() -> None:
    """Independent of dict order and dtype spelling; one ulp of one weight changes it."""
    params = adder(1)
    shuffled = {k: params[k].astype(">f8") for k in reversed(list(params))}
    assert weights_digest(params) == weights_digest(shuffled)
    nudged = {k: v.copy() for k, v in params.items()}
    nudged["w_h"][0, 0] = np.nextafter(nudged["w_h"][0, 0], 1.0)
    assert weights_digest(params) != weights_digest(nudged)


def test_other_weights_are_refused(cert: Certificate, slow_model) -> None:
    """A certificate is for its weights only."""
    with pytest.raises(CertificateInvalid, match="other weights"):
        verify(slow_model[0], cert)


def test_digest_swap_is_caught_by_the_proof(cert: Certificate, slow_model) -> None:
    """Even with the digest forged, the checker re-proves and fails on the wrong model."""
    params = slow_model[0]
    cert.digest = weights_digest(params)
    with pytest.raises(CertificateInvalid):
        verify(params, cert)


@pytest.mark.parametrize("radius", [0.0, 1e-11])
def test_shrunk_region_fails_the_landing_check(exact_adder: dict, cert: Certificate,
                                               radius: float) -> None:
    """Regions smaller than the per-step allowance (1e-10) cannot hold the images.

    Exact images of this saturated adder land within 1e-15 of the sampled centers, so only the
    allowance keeps 1e-11 from passing: skipping the containment check or the allowance
    would let these verify.
    """
    cert.radii = np.full_like(cert.radii, radius)
    with pytest.raises(CertificateInvalid, match="does not land"):
        verify(exact_adder, cert)


def test_edited_flags_are_refused(exact_adder: dict, cert: Certificate) -> None:
    """Landing flags turned into expansions leave the trees inconsistent."""
    cert.flags = np.ones_like(cert.flags)
    with pytest.raises(CertificateInvalid):
        verify(exact_adder, cert)


def test_a_region_moved_away_is_refused(exact_adder: dict, cert: Certificate) -> None:
    """Move one class's region: branches landing there no longer do."""
    cert.centers[5] += 0.5
    with pytest.raises(CertificateInvalid):
        verify(exact_adder, cert)


def test_bad_splits_are_refused(exact_adder: dict, cert: Certificate) -> None:
    """A split tree that ends early cannot be parsed into cells."""
    cert.split_axis = cert.split_axis[:-1]
    cert.split_value = cert.split_value[:-1]
    with pytest.raises(CertificateInvalid):
        verify(exact_adder, cert)


def test_truncated_and_flipped_bytes(exact_adder: dict, cert: Certificate) -> None:
    """Damaged files: a clear CertificateError, or a certificate that does not verify."""
    data = cert.to_bytes()
    for cut in (10, len(data) // 2, len(data) - 5):
        with pytest.raises(CertificateError):
            Certificate.from_bytes(data[:cut])
    rng = np.random.default_rng(0)
    spans = []  # where each member's bytes are (zip metadata such as timestamps aside)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            start = info.header_offset + 30 + int.from_bytes(
                data[info.header_offset + 26 : info.header_offset + 28], "little") + int.from_bytes(
                data[info.header_offset + 28 : info.header_offset + 30], "little")
            spans.append((start, start + info.compress_size))
    for k in range(40):
        start, stop = spans[k % len(spans)]
        where = int(rng.integers(start, stop))
        damaged = bytearray(data)
        damaged[where] ^= 0x10
        with pytest.raises(CertificateError):  # CertificateInvalid is one too
            verify(exact_adder, Certificate.from_bytes(bytes(damaged)))


def rewrite(data: bytes, change) -> bytes:
    """The npz with its members passed through change(name, bytes) -> {name: bytes}."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            for name, raw in change(info.filename, src.read(info)).items():
                dst.writestr(name, raw)
    return out.getvalue()


def npy(array: np.ndarray) -> bytes:
    """One .npy member's bytes (pickle allowed only to build the hostile case)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


@pytest.mark.parametrize("change, message", [
    (lambda n, r: {n: r, "extra.npy": r} if n == "flags.npy" else {n: r}, "members"),
    (lambda n, r: {} if n == "radii.npy" else {n: r}, "members"),
    (lambda n, r: {n: npy(np.array([{"x": 1}], dtype=object))} if n == "flags.npy"
     else {n: r}, "flags"),
    (lambda n, r: {n: npy(np.zeros(3))} if n == "header.npy" else {n: r}, "header"),
    (lambda n, r: {n: npy(np.frombuffer(b"{}", np.uint8))} if n == "header.npy"
     else {n: r}, "format"),
    (lambda n, r: {n: npy(np.zeros((2, 2)))} if n == "centers.npy" else {n: r}, "centers"),
])
def test_unexpected_members_are_refused(cert: Certificate, change, message: str) -> None:
    """Extra, missing, pickled, mistyped or misshapen members: refused before use."""
    with pytest.raises(CertificateError, match=message):
        Certificate.from_bytes(rewrite(cert.to_bytes(), change))


def test_compressed_and_oversized_are_refused(cert: Certificate) -> None:
    """Compressed members (possible bombs) and huge files are refused unread."""
    data = cert.to_bytes()
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(
            out, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    with pytest.raises(CertificateError, match="compressed"):
        Certificate.from_bytes(out.getvalue())
    with pytest.raises(CertificateError, match="bytes, more than"):
        Certificate.from_bytes(data + b"\0" * (64 << 20))
    with pytest.raises(CertificateError, match="not an npz"):
        Certificate.from_bytes(b"not a zip")


@pytest.mark.parametrize("which", [0, -1])
def test_a_kept_cell_cannot_be_dropped(exact_adder: dict, cert: Certificate, which: int) -> None:
    """A kept cell marked dropped: its region shrinks and its tree is left over: refused."""
    cert.split_axis[int(np.flatnonzero(cert.split_axis == -1)[which])] = -2
    with pytest.raises(CertificateInvalid):
        verify(exact_adder, cert)
