"""The certificate as data: classes' regions, cell splits and landing trees; npz (de)serialisation.

Read from untrusted bytes: no pickle; members must be stored (not compressed), of the expected
names, dtypes and shapes, and within size limits, all checked before their data is read. What
the data claims is not trusted: training.certify.check.verify re-proves it against the weights.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FORMAT = "rnnadd-certificate"
FORMAT_VERSION = 2
MAX_BYTES = 64 << 20  # whole file
MAX_HEADER = 1 << 16
MAX_NODES = 8_000_000  # flags (landing tree nodes) a certificate may hold
MAX_CELLS = 1_000_000
MAX_CLASSES = 1 << 14
MAX_HIDDEN = 256
WEIGHT_NAMES = ("b_h", "b_o", "w_h", "w_i", "w_o")


class CertificateError(ValueError):
    """The certificate cannot be read: not an npz of the expected layout, truncated or too big."""


class CertificateInvalid(CertificateError):
    """The certificate was read but does not prove the claim for these weights; .reason says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def weights_digest(params: dict[str, np.ndarray]) -> str:
    """sha256 over the arrays: names sorted, each name, shape and float64 little-endian values."""
    digest = hashlib.sha256(b"rnnadd-weights-v1\n")
    for name in sorted(params):
        array = np.ascontiguousarray(np.asarray(params[name], dtype="<f8"))
        shape = ",".join(str(n) for n in array.shape)
        digest.update(f"{name}:{shape}\n".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


@dataclass
class Certificate:
    """Everything verify() needs besides the weights.

    The classes are the leaves of a suffix trie, stored as its preorder flags (1 = split into
    four children); count = 2 + 3 x (number of splits). Class c's box is
    {v : |Q_c (v - m_c)| <= r_c} (Q = frames, m = centers, r = radii), its region the union of
    its kept cells. Cells: a binary split tree per class in preorder over all classes
    (split_axis -1 = a kept leaf, -2 = a dropped one, no part of the region; else the box is
    split at split_value on that axis, low part first). Trees: the start tree, then one per
    kept cell in order; flags hold, per tree in level order and without its root, 1 for a node
    that is expanded (its four children follow) and 0 for one that lands.
    """

    digest: str
    class_splits: np.ndarray  # [N] uint8: the class trie in preorder (training.certify.classes)
    centers: np.ndarray  # [C, H] float64
    frames: np.ndarray  # [C, H, H] float32 (exactly the float64 values used)
    radii: np.ndarray  # [C, H] float64
    split_axis: np.ndarray  # [S] int8: an axis, -1 (kept leaf) or -2 (dropped leaf)
    split_value: np.ndarray  # [S] float64
    tree_sizes: np.ndarray  # [T] int64
    flags: np.ndarray  # [F] uint8 (0 or 1), packed on disk
    info: dict[str, Any] = field(default_factory=dict)  # what the search measured (not trusted)

    @property
    def hidden_size(self) -> int:
        """Hidden units of the model it is for."""
        return int(self.centers.shape[1])

    def to_bytes(self) -> bytes:
        """npz bytes (stored, no pickle); the header is JSON in a uint8 member."""
        header = {"format": FORMAT, "format_version": FORMAT_VERSION, "digest": self.digest,
                  "hidden_size": self.hidden_size,
                  "flags": int(self.flags.size), "info": self.info}
        arrays = {
            "header": np.frombuffer(json.dumps(header, sort_keys=True).encode(), dtype=np.uint8),
            "class_splits": self.class_splits.astype("u1"),
            "centers": self.centers.astype("<f8"),
            "frames": self.frames.astype("<f4"),
            "radii": self.radii.astype("<f8"),
            "split_axis": self.split_axis.astype("i1"),
            "split_value": self.split_value.astype("<f8"),
            "tree_sizes": self.tree_sizes.astype("<i8"),
            "flags": np.packbits(self.flags.astype(np.uint8)),
        }
        buffer = io.BytesIO()
        np.savez(buffer, allow_pickle=False, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Certificate:
        """Parse untrusted bytes; CertificateError says what is wrong."""
        return _parse(bytes(data))


MEMBERS = {  # name: (dtype, number of dimensions)
    "header": ("|u1", 1), "class_splits": ("|u1", 1), "centers": ("<f8", 2),
    "frames": ("<f4", 3), "radii": ("<f8", 2),
    "split_axis": ("|i1", 1), "split_value": ("<f8", 1), "tree_sizes": ("<i8", 1),
    "flags": ("|u1", 1),
}


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> np.ndarray:
    """One .npy member: header checked against MEMBERS before its data is read."""
    dtype, ndim = MEMBERS[name]
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version not in ((1, 0), (2, 0)):
            raise CertificateError(f"member {name!r} has npy format {version}")
        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                else np.lib.format.read_array_header_2_0)
        shape, fortran, found = read(member)
        if found.str != np.dtype(dtype).str or len(shape) != ndim or fortran:
            raise CertificateError(f"member {name!r} is {found} of shape {shape}, "
                                   f"expected {np.dtype(dtype)} with {ndim} dimensions")
        size = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if size > info.file_size:
            raise CertificateError(f"member {name!r} is shorter than its header says")
        raw = member.read(size)
        if len(raw) != size:
            raise CertificateError(f"member {name!r} is truncated")
        if member.read(1):
            raise CertificateError(f"member {name!r} has bytes after its data")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


def _parse(data: bytes) -> Certificate:
    """The checks of from_bytes, in the order that reads least before refusing."""
    if len(data) > MAX_BYTES:
        raise CertificateError(f"certificate is {len(data)} bytes, more than {MAX_BYTES}")
    if not data.startswith(b"PK\x03\x04"):
        raise CertificateError("certificate is not an npz (zip) archive")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
            names = [i.filename.removesuffix(".npy") for i in infos]
            if sorted(names) != sorted(MEMBERS) or not all(
                    i.filename.endswith(".npy") for i in infos):
                raise CertificateError(f"certificate has members {sorted(names)}, "
                                       f"expected {sorted(MEMBERS)}")
            for info in infos:
                if info.compress_type != zipfile.ZIP_STORED:
                    raise CertificateError(f"member {info.filename!r} is compressed")
                if info.file_size > MAX_BYTES:
                    raise CertificateError(f"member {info.filename!r} is too large")
            arrays = {n: _read_member(archive, i, n) for n, i in zip(names, infos, strict=True)}
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise CertificateError(f"certificate is damaged or truncated ({exc})") from exc
    except ValueError as exc:
        if isinstance(exc, CertificateError):
            raise
        raise CertificateError(f"certificate has a bad array header ({exc})") from exc
    return _build(arrays)


def _build(arrays: dict[str, np.ndarray]) -> Certificate:
    """Check the header and the arrays' shapes against each other."""
    raw = arrays["header"]
    if raw.size > MAX_HEADER:
        raise CertificateError("certificate header is too large")
    try:
        header = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CertificateError(f"certificate header is not JSON ({exc})") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CertificateError("not an rnnadd certificate (header format)")
    if header.get("format_version") != FORMAT_VERSION:
        raise CertificateError(f"unknown certificate format_version "
                               f"{header.get('format_version')!r} "
                               f"(this code reads {FORMAT_VERSION})")
    digest, hidden, flags = (header.get(k) for k in ("digest", "hidden_size", "flags"))
    if not (isinstance(digest, str) and len(digest) == 64):
        raise CertificateError("certificate header has no weights digest")
    for key, value, top in (("hidden_size", hidden, MAX_HIDDEN), ("flags", flags, MAX_NODES)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= top:
            raise CertificateError(f"certificate header {key} is {value!r}, not 0..{top}")
    splits = arrays["class_splits"]
    inner = int(np.count_nonzero(splits))
    if splits.size > 4 * MAX_CLASSES or splits.size != 2 + 4 * inner or (splits > 1).any():
        raise CertificateError(f"member 'class_splits' is not a class trie ({splits.size} flags, "
                               f"{inner} splits)")
    count = 2 + 3 * inner
    expect = {"centers": (count, hidden), "frames": (count, hidden, hidden),
              "radii": (count, hidden)}
    for name, shape in expect.items():
        if arrays[name].shape != shape:
            raise CertificateError(f"member {name!r} has shape {arrays[name].shape}, "
                                   f"expected {shape}")
    if arrays["split_axis"].shape != arrays["split_value"].shape:
        raise CertificateError("split_axis and split_value differ in length")
    if arrays["split_axis"].size > 2 * MAX_CELLS:
        raise CertificateError("certificate has too many cells")
    if arrays["flags"].size != (flags + 7) // 8:
        raise CertificateError(f"member 'flags' holds {arrays['flags'].size} bytes, "
                               f"not the {(flags + 7) // 8} the header says")
    sizes = arrays["tree_sizes"]
    if sizes.size > MAX_CELLS + 1 or (sizes < 0).any() or int(sizes.sum()) != flags:
        raise CertificateError("tree_sizes do not add up to the flags")
    info = header.get("info", {})
    return Certificate(
        digest, splits, arrays["centers"], arrays["frames"], arrays["radii"],
        arrays["split_axis"], arrays["split_value"], sizes,
        np.unpackbits(arrays["flags"])[:flags], info if isinstance(info, dict) else {})
