"""Versioned model store on disk: atomic writes, fully validated reads."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import secrets
import shutil
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

Params = dict[str, np.ndarray]

FORMAT_VERSION = 1
VERSION_PATTERN = re.compile(r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}")
WEIGHTS, RECORD, CURRENT = "weights.npz", "model.json", "CURRENT"
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
    """A stored model is missing or invalid; the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        super().__init__(f"{path}: {problem}")


class VersionNotFound(ModelError):
    """No stored version has this id (or the id is not a valid version id)."""


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


def is_version(value: object) -> bool:
    """Tell version ids from anything else, so user input never becomes an arbitrary path."""
    return isinstance(value, str) and VERSION_PATTERN.fullmatch(value) is not None


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
    for key in ("hidden_size", "bits"):
        if not (isinstance(hyper, dict) and _positive_int(hyper.get(key))):
            return f"hyperparameters.{key} must be a positive integer"
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


def _read_npz(path: Path, data: bytes) -> Params:
    """Parse npz bytes without ever unpickling."""
    if not data.startswith(b"PK\x03\x04"):
        raise ModelError(path, "is not an npz (zip) archive")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            names = list(npz.files)
            if problem := _names_problem(set(names)):
                raise ModelError(path, problem)
            arrays = {}
            for name in names:
                try:
                    arrays[name] = npz[name]
                except ValueError as exc:  # object arrays need pickle, which is refused
                    problem = f"array {name!r} cannot be loaded safely: {exc}"
                    raise ModelError(path, problem) from exc
            return arrays
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ModelError(path, f"is not a readable npz archive ({exc})") from exc


def _json_default(value: object) -> Any:
    """Let callers put numpy scalars and arrays into the record."""
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _write_file(path: Path, data: bytes) -> None:
    """Write a new file and force it to disk before anyone can rename it into view."""
    with open(path, "xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    """Make renames and new entries in a directory durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ModelStore:
    """One directory per version under root, plus a CURRENT file naming the active one."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.current_file = self.root / CURRENT

    def current(self) -> str | None:
        """Version named in CURRENT (unvalidated), or None when there is no CURRENT."""
        try:
            return self.current_file.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelError(self.current_file, f"cannot be read ({exc})") from exc

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
            raise VersionNotFound(self.root, f"{version!r} is not a valid version id")
        path = self.root / version
        if not path.is_dir():
            raise VersionNotFound(path, "no such version")
        return path

    def _read(self, path: Path) -> bytes:
        """Read a file, turning I/O failures into a ModelError that names it."""
        try:
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise ModelError(path, "is missing") from exc
        except OSError as exc:
            raise ModelError(path, f"cannot be read ({exc})") from exc

    def record(self, version: str) -> dict:
        """Validated model.json of a version (weights are not read)."""
        path = self._version_dir(version) / RECORD
        try:
            record = json.loads(self._read(path))
        except (ValueError, RecursionError) as exc:
            raise ModelError(path, f"is not valid JSON ({exc})") from exc
        if problem := _record_problem(record, version):
            raise ModelError(path, problem)
        return record

    def load(self, version: str) -> Model:
        """Load a version and verify checksum, array names, dtype, shapes and finiteness."""
        record = self.record(version)
        path = self.root / version / WEIGHTS
        data = self._read(path)
        digest = hashlib.sha256(data).hexdigest()
        if digest != record["sha256"]:
            raise ModelError(path, f"sha256 is {digest}, but {RECORD} says {record['sha256']}")
        params = _read_npz(path, data)
        if problem := _params_problem(params, record["hyperparameters"]["hidden_size"]):
            raise ModelError(path, problem)
        return Model(version=version, params=params, record=record)

    def load_current(self) -> Model:
        """Load the active version; a missing or dangling CURRENT is a ModelError on CURRENT."""
        version = self.current()
        if version is None:
            raise ModelError(self.current_file, "is missing (no active version)")
        try:
            return self.load(version)
        except VersionNotFound as exc:
            raise ModelError(self.current_file, f"names {version!r}, not a stored version") from exc

    def save(
        self,
        params: Mapping[str, np.ndarray],
        record_fields: Mapping[str, Any],
        *,
        activate: bool = False,
        extra_files: Mapping[str, bytes] | None = None,
    ) -> str:
        """Write a new version atomically (temp dir, fsync, rename) and return its id."""
        extra_files = dict(extra_files or {})
        for name in extra_files:
            if not EXTRA_NAME.fullmatch(name) or name in (WEIGHTS, RECORD):
                raise ValueError(f"extra file name {name!r} is not allowed")
        now = datetime.now(UTC)
        version = f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
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
        buffer = io.BytesIO()
        np.savez(buffer, **params)
        weights = buffer.getvalue()
        record["sha256"] = hashlib.sha256(weights).hexdigest()
        text = json.dumps(record, indent=2, allow_nan=False, default=_json_default) + "\n"

        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-{secrets.token_hex(8)}"
        tmp.mkdir()
        try:
            _write_file(tmp / WEIGHTS, weights)
            _write_file(tmp / RECORD, text.encode())
            for name, data in extra_files.items():
                _write_file(tmp / name, data)
            _fsync_dir(tmp)
            os.rename(tmp, self.root / version)  # fails if the id exists: never overwrites
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(self.root)
        if activate:
            self.activate(version)
        return version

    def activate(self, version: str) -> None:
        """Validate a version fully, then atomically point CURRENT at it."""
        self.load(version)
        tmp = self.root / f".tmp-{CURRENT}-{secrets.token_hex(8)}"
        try:
            _write_file(tmp, f"{version}\n".encode())
            os.replace(tmp, self.current_file)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(self.root)
