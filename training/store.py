"""Versioned model store on disk: atomic writes, validated and bounded reads, a promotion gate.

Error messages name files relative to the model directory (e.g. `<version>/weights.npz`), since
they reach API clients; ModelError.path keeps the full path for logs.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from training.config import FIELDS, ConfigError, check_value
from training.files import atomic_write, fsync_dir, write_new
from training.gate import run_gate
from training.ids import is_version, new_version_id
from training.predictor import Predictor

Params = dict[str, np.ndarray]

FORMAT_VERSION = 1
WEIGHTS, RECORD, CURRENT, LAST_GOOD = "weights.npz", "model.json", "CURRENT", "LAST_GOOD"
ACTIVATION_LOCK = ".activate.lock"  # serializes activations: compare-and-set on CURRENT
MAX_RECORD_BYTES = 4 << 20  # model.json holds the training history: generous, but bounded
REMEMBERED_FAILURES = 64
STORE_FIELDS = ("format_version", "version", "created_at", "sha256")
CALLER_FIELDS = (
    "hyperparameters",
    "seed",
    "steps",
    "training_seconds",
    "metrics",
    "history",
    "parent",
)
REQUIRED_ARRAYS, BIAS_ARRAYS = frozenset({"w_i", "w_h", "w_o"}), frozenset({"b_h", "b_o"})
EXTRA_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


class ModelError(Exception):
    """A stored model is missing or invalid; the message names the file (relative) and problem."""

    def __init__(self, path: str | Path, problem: str, root: str | Path | None = None) -> None:
        self.path = Path(path)
        self.problem = problem
        shown = self.path.name
        if root is not None:
            with contextlib.suppress(ValueError):
                shown = self.path.relative_to(root).as_posix()
        super().__init__(problem if shown in ("", ".") else f"{shown}: {problem}")


class VersionNotFound(ModelError):
    """No stored version has this id (or the id is not a valid version id)."""


class NotPromotable(ModelError):
    """A version may not go live unless forced; .promotion says what was established about it."""

    def __init__(self, path: str | Path, promotion: Promotion, problem: str,
                 root: str | Path | None = None) -> None:
        self.promotion = promotion
        super().__init__(path, problem, root)


class GateFailed(NotPromotable):
    """A version fails the promotion gate; .gate is the result and .check the failing check."""

    def __init__(self, path: str | Path, promotion: Promotion,
                 root: str | Path | None = None) -> None:
        self.gate = promotion.gate
        self.check = str(promotion.gate.get("failed"))
        super().__init__(path, promotion, f"fails the promotion gate at check {self.check!r}", root)


class CurrentChanged(ModelError):
    """CURRENT no longer names the version the caller started from (compare-and-set lost)."""

    def __init__(self, path: str | Path, expected: str | None, found: str | None,
                 root: str | Path | None = None) -> None:
        self.expected, self.found = expected, found
        super().__init__(path, f"names {found!r}, not {expected!r} as expected: another "
                         "activation or rollback came first", root)


@dataclass(frozen=True)
class Promotion:
    """What activation established about a version from its weights, not from its record."""

    version: str
    gate: dict

    @property
    def passed(self) -> bool:
        """May go live without force."""
        return self.gate["passed"] is True


ANY_CURRENT: Any = object()  # activate() without a compare-and-set on CURRENT


@dataclass(frozen=True)
class Model:
    """A loaded, validated model version."""

    version: str
    params: Params
    record: dict

    @property
    def bits(self) -> int:
        """Width the model was trained on."""
        return self.record["hyperparameters"]["bits"]


def _positive_int(value: object) -> bool:
    """JSON ints only: bools are ints in Python but not here."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _record_problem(record: object, version: str) -> str | None:
    """Check model.json's content; return what is wrong, or None."""
    if not isinstance(record, dict):
        return "is not a JSON object"
    fmt = record.get("format_version")
    if not _positive_int(fmt) or fmt != FORMAT_VERSION:
        return f"unknown format_version {fmt!r} (this code reads {FORMAT_VERSION})"
    missing = [key for key in STORE_FIELDS + CALLER_FIELDS if key not in record]
    if missing:
        return f"missing keys {missing}"
    if record["version"] != version:
        return f"version is {record['version']!r} but the directory is {version!r}"
    sha = record["sha256"]
    if not (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)):
        return f"sha256 {sha!r} is not a hex SHA-256 digest"
    hyper = record["hyperparameters"]
    if not isinstance(hyper, dict):
        return "hyperparameters must be an object"
    for key in ("hidden_size", "bits"):
        if not _positive_int(hyper.get(key)):
            return f"hyperparameters.{key} must be a positive integer"
    for key, value in hyper.items():  # the training bounds; keys of older trainers are ignored
        if key in FIELDS and not (key == "preset" and value is None):  # older records: None
            try:
                check_value(key, value)
            except ConfigError as exc:
                return f"hyperparameters.{exc}"
    gate = record.get("gate")
    if gate is not None and not (
        isinstance(gate, dict) and isinstance(gate.get("passed"), bool)
        and _positive_int(gate.get("max_bits"))
    ):
        return "gate must be an object with passed (bool) and max_bits (int)"
    return None


def _names_problem(names: set[str]) -> str | None:
    """Exactly w_i, w_h, w_o, plus both biases or neither."""
    if extra := sorted(names - REQUIRED_ARRAYS - BIAS_ARRAYS):
        return f"unexpected arrays {extra}"
    if missing := sorted(REQUIRED_ARRAYS - names):
        return f"missing arrays {missing}"
    if len(names & BIAS_ARRAYS) == 1:
        return f"has {sorted(names & BIAS_ARRAYS)} without its pair (b_h and b_o go together)"
    return None


def _params_problem(params: Mapping[str, object], hidden: int) -> str | None:
    """Check array names, dtype, shapes and values; return what is wrong, or None."""
    names = set(params)
    if problem := _names_problem(names):
        return problem
    shapes = {
        "w_i": (hidden, 2),
        "w_h": (hidden, hidden),
        "w_o": (1, hidden),
        "b_h": (hidden,),
        "b_o": (1,),
    }
    for name, shape in shapes.items():
        if name not in names:
            continue
        array = params[name]
        if not isinstance(array, np.ndarray):
            return f"array {name!r} is a {type(array).__name__}, expected a numpy array"
        if array.dtype != np.float64:
            return f"array {name!r} has dtype {array.dtype}, expected float64"
        if array.shape != shape:
            return f"array {name!r} has shape {array.shape}, expected {shape}"
        if not np.isfinite(array).all():
            return f"array {name!r} has non-finite values (NaN or inf)"
    return None


def _expected_shapes(hidden: int) -> dict[str, tuple[int, ...]]:
    """The shape of every array of a model with `hidden` units."""
    return {"w_i": (hidden, 2), "w_h": (hidden, hidden), "w_o": (1, hidden), "b_h": (hidden,),
            "b_o": (1,)}


def _read_npz(data: bytes, hidden: int) -> Params:
    """Parse npz bytes without unpickling, checking each array's header before its data.

    An npz is a zip of .npy files, and a zip member may inflate to any size: the header says
    the shape and dtype, so anything but the expected float64 arrays is refused unread.
    """
    if not data.startswith(b"PK\x03\x04"):
        raise ValueError("is not an npz (zip) archive")
    shapes = _expected_shapes(hidden)
    arrays: Params = {}
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = [n.removesuffix(".npy") for n in archive.namelist()]
        if len(set(names)) != len(names) or not all(n.endswith(".npy") for n in archive.namelist()):
            raise ValueError(f"has unexpected members {archive.namelist()}")
        if problem := _names_problem(set(names)):
            raise ValueError(problem)
        for name in names:
            with archive.open(f"{name}.npy") as member:
                version = np.lib.format.read_magic(member)
                if version not in ((1, 0), (2, 0)):
                    raise ValueError(f"array {name!r} has npy format {version}")
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read_header(member)
                if dtype != np.dtype("<f8") or shape != shapes[name]:
                    raise ValueError(f"array {name!r} has shape {shape} and dtype {dtype}, "
                                     f"expected {shapes[name]} float64")
                raw = member.read(8 * int(np.prod(shape)))
                if len(raw) != 8 * int(np.prod(shape)):
                    raise ValueError(f"array {name!r} is truncated")
                order = "F" if fortran else "C"
                arrays[name] = np.frombuffer(raw, dtype="<f8").reshape(shape, order=order).copy()
    return arrays


def _json_default(value: object) -> Any:
    """Let callers put numpy scalars and arrays into the record."""
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _signature(*paths: Path) -> tuple:
    """What changes when a file is replaced or rewritten: a failed load is retried only then."""
    sig = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            sig.append(None)
        else:
            sig.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(sig)


class ModelStore:
    """One directory per version under root, plus CURRENT (the active one) and LAST_GOOD."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.current_file = self.root / CURRENT
        self.last_good_file = self.root / LAST_GOOD
        self._failed: dict[tuple, ModelError] = {}  # (version, file signature) -> the error

    def _error(self, path: Path, problem: str, kind: type[ModelError] = ModelError) -> ModelError:
        """An error naming path relative to the model directory."""
        return kind(path, problem, self.root)

    def _read_id_file(self, path: Path) -> str | None:
        """The version named in CURRENT or LAST_GOOD, or None when the file does not exist."""
        try:
            return path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise self._error(path, f"cannot be read ({exc})") from exc

    def current(self) -> str | None:
        """Version named in CURRENT (unvalidated), or None when there is no CURRENT."""
        return self._read_id_file(self.current_file)

    def last_good(self) -> str | None:
        """The last version that went live having passed the gate, for falling back to."""
        version = self._read_id_file(self.last_good_file)
        return version if is_version(version) else None

    def versions(self) -> list[dict]:
        """Records oldest first; an unreadable version is listed as {"version", "error"}."""
        if not self.root.is_dir():
            return []
        found = []
        for version in sorted(p.name for p in self.root.iterdir() if is_version(p.name)):
            try:
                found.append(self.record(version))
            except VersionNotFound:
                continue  # not a directory, or removed while listing
            except ModelError as exc:
                found.append({"version": version, "error": str(exc)})
        # ids order by second; created_at (microseconds) orders versions saved in the same one
        return sorted(found, key=lambda r: (r["version"][:16], str(r.get("created_at", ""))))

    def _version_dir(self, version: str) -> Path:
        """Map an id to its directory, refusing anything that is not a stored version id."""
        if not is_version(version):
            raise self._error(self.root, f"{version!r} is not a valid version id", VersionNotFound)
        path = self.root / version
        if not path.is_dir():
            raise self._error(path, "no such version", VersionNotFound)
        return path

    def _read(self, path: Path, limit: int) -> bytes:
        """Read a file of at most `limit` bytes, turning I/O failures into a ModelError."""
        try:
            with open(path, "rb") as handle:
                data = handle.read(limit + 1)
        except FileNotFoundError as exc:
            raise self._error(path, "is missing") from exc
        except OSError as exc:
            raise self._error(path, f"cannot be read ({exc.strerror or exc})") from exc
        if len(data) > limit:
            raise self._error(path, f"is larger than {limit:,} bytes")
        return data

    def record(self, version: str) -> dict:
        """Validated model.json of a version (weights are not read)."""
        path = self._version_dir(version) / RECORD
        try:
            record = json.loads(self._read(path, MAX_RECORD_BYTES))
        except (ValueError, RecursionError) as exc:
            raise self._error(path, f"is not valid JSON ({exc})") from exc
        if problem := _record_problem(record, version):
            raise self._error(path, problem)
        return record

    def load(self, version: str) -> Model:
        """Load a version, verifying checksum, arrays and bounds; failures are remembered."""
        directory = self._version_dir(version)
        key = (version, _signature(directory / RECORD, directory / WEIGHTS))
        if (known := self._failed.get(key)) is not None:
            raise known
        try:
            return self._load(version)
        except VersionNotFound:
            raise
        except ModelError as exc:
            if len(self._failed) >= REMEMBERED_FAILURES:
                self._failed.pop(next(iter(self._failed)))
            self._failed[key] = exc
            raise

    def _load(self, version: str) -> Model:
        """The uncached load."""
        record = self.record(version)
        hidden = record["hyperparameters"]["hidden_size"]
        path = self.root / version / WEIGHTS
        # a stored npz is the raw arrays plus a few hundred bytes of zip and npy headers
        data = self._read(path, 8 * sum(map(np.prod, _expected_shapes(hidden).values())) + 4096)
        digest = hashlib.sha256(data).hexdigest()
        if digest != record["sha256"]:
            raise self._error(path, f"sha256 is {digest}, but {RECORD} says {record['sha256']}")
        try:
            params = _read_npz(data, hidden)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, NotImplementedError) as exc:
            raise self._error(path, f"is not a valid model archive: {exc}") from exc
        if problem := _params_problem(params, hidden):
            raise self._error(path, problem)
        return Model(version=version, params=params, record=record)

    def load_current(self) -> Model:
        """Load the active version; a missing or dangling CURRENT is a ModelError on CURRENT."""
        version = self.current()
        if version is None:
            raise self._error(self.current_file, "is missing (no active version)")
        try:
            return self.load(version)
        except VersionNotFound as exc:
            problem = f"names {version!r}, not a stored version"
            raise self._error(self.current_file, problem) from exc

    def promotion(self, version: str, max_bits: int) -> Promotion:
        """Load a version and run the gate on its weights now: what a record says is not trusted."""
        model = self.load(version)
        return Promotion(version, run_gate(Predictor(model.params), max_bits))

    def save(
        self,
        params: Mapping[str, np.ndarray],
        record_fields: Mapping[str, Any],
        *,
        activate: bool = False,
        extra_files: Mapping[str, bytes] | None = None,
        max_bits: int = 4096,
    ) -> str:
        """Write a new version atomically (temp dir, fsync, rename) with its gate result.

        The gate runs here at max_bits unless record_fields carries a result ("gate").
        With activate, the version goes live only if it passes (else GateFailed, still saved).
        """
        extra_files = dict(extra_files or {})
        for name in extra_files:
            if not EXTRA_NAME.fullmatch(name) or name in (WEIGHTS, RECORD):
                raise ValueError(f"extra file name {name!r} is not allowed")
        now = datetime.now(UTC)
        version = new_version_id(now)
        record = {
            **record_fields,
            "format_version": FORMAT_VERSION,
            "version": version,
            "created_at": f"{now:%Y-%m-%dT%H:%M:%S.%fZ}",  # orders versions within a second
            "sha256": "0" * 64,  # placeholder until the weights are serialized
        }
        if problem := _record_problem(record, version):
            raise ValueError(f"record_fields: {problem}")
        if problem := _params_problem(params, record["hyperparameters"]["hidden_size"]):
            raise ValueError(f"params: {problem}")
        if record.get("gate") is None:
            record["gate"] = run_gate(Predictor(dict(params)), max_bits)
        buffer = io.BytesIO()
        np.savez(buffer, **params)
        weights = buffer.getvalue()
        record["sha256"] = hashlib.sha256(weights).hexdigest()
        text = json.dumps(record, indent=2, allow_nan=False, default=_json_default) + "\n"

        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-{secrets.token_hex(8)}"
        tmp.mkdir()
        try:
            write_new(tmp / WEIGHTS, weights)
            write_new(tmp / RECORD, text.encode())
            for name, data in extra_files.items():
                write_new(tmp / name, data)
            fsync_dir(tmp)
            os.rename(tmp, self.root / version)  # fails if the id exists: never overwrites
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fsync_dir(self.root)
        if activate:
            self.activate(version, max_bits=max_bits)
        return version

    def activate(self, version: str, *, force: bool = False, max_bits: int = 4096,
                 expect_current: str | None = ANY_CURRENT) -> Promotion:
        """Establish that a version may go live, then point CURRENT at it atomically.

        A version that is not promotable goes live only with force, and never becomes LAST_GOOD.
        With expect_current, CURRENT must still name that version (None: no CURRENT) when it is
        replaced, else CurrentChanged: a job started from one version never undoes a rollback.
        """
        promotion = self.promotion(version, max_bits)
        if not promotion.passed and not force:
            raise GateFailed(self.root / version / RECORD, promotion, self.root)
        with self._activation_lock():
            if expect_current is not ANY_CURRENT:
                found = self.current()
                if found != expect_current:
                    raise CurrentChanged(self.current_file, expect_current, found, self.root)
            atomic_write(self.current_file, f"{version}\n".encode())
            if promotion.passed:
                atomic_write(self.last_good_file, f"{version}\n".encode())
        return promotion

    @contextlib.contextmanager
    def _activation_lock(self) -> Iterator[None]:
        """An exclusive flock across processes and replicas, held while CURRENT is replaced."""
        fd = os.open(self.root / ACTIVATION_LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
