"""Versioned model store on disk: atomic writes, validated and bounded reads, a promotion gate.

Error messages name files relative to the model directory (e.g. `<version>/weights.npz`), since
they reach API clients; ModelError.path keeps the full path for logs.

Reads never block: only regular files are opened (a FIFO or a device is an error at once).
A reader holds a shared flock on the version's directory while it reads; pruning renames a
version away (`.trash-*`, atomic: new readers see no such version) and deletes it only once no
reader holds that lock. Versions never change once written, so listings come from a cache of
their records (without the training history), checked against the directory's inode.
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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from training.config import FIELDS, ConfigError, check_value
from training.files import (
    TMP_PREFIX,
    NotRegularFile,
    atomic_write,
    fsync_dir,
    read_regular,
    remove_stale,
    write_new,
)
from training.gate import run_gate
from training.ids import is_version, new_version_id
from training.predictor import Predictor

Params = dict[str, np.ndarray]

FORMAT_VERSION = 1
WEIGHTS, RECORD, CURRENT, LAST_GOOD = "weights.npz", "model.json", "CURRENT", "LAST_GOOD"
ACTIVATION_LOCK = ".activate.lock"  # serializes activations and pruning: compare-and-set
PINNED = "pinned"  # a file of this name in a version's directory keeps it from being pruned
TRASH_PREFIX = ".trash-"  # a pruned version, renamed away, until no reader holds it
MAX_RECORD_BYTES = 4 << 20  # model.json holds the training history: generous, but bounded
MAX_ID_FILE_BYTES = 4096  # CURRENT and LAST_GOOD hold one version id
SUMMARY_OMITS = frozenset({"history"})  # what listings leave out of a record (the bulk of it)
GATE_SUMMARY_KEYS = ("passed", "max_bits", "failed", "seconds")
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


def summary(record: dict) -> dict:
    """A record as listings show it: no training history, the gate without its checks."""
    item = {k: v for k, v in record.items() if k not in SUMMARY_OMITS}
    gate = record.get("gate")
    if isinstance(gate, dict):
        item["gate"] = {k: gate[k] for k in GATE_SUMMARY_KEYS if k in gate}
    return item


class ModelStore:
    """One directory per version under root, plus CURRENT (the active one) and LAST_GOOD.

    history: after every save, keep only the newest `history` versions (plus CURRENT,
    LAST_GOOD and pinned ones); None keeps everything.
    """

    def __init__(self, root: str | Path, history: int | None = None) -> None:
        if history is not None and (type(history) is not int or history < 1):
            raise ValueError(f"history must be a positive integer or None, got {history!r}")
        self.root = Path(root)
        self.history = history
        self.current_file = self.root / CURRENT
        self.last_good_file = self.root / LAST_GOOD
        self._failed: dict[tuple, ModelError] = {}  # (version, file signature) -> the error
        self._summaries: dict[str, tuple[int, dict]] = {}  # version -> (dir inode, summary)

    def _error(self, path: Path, problem: str, kind: type[ModelError] = ModelError) -> ModelError:
        """An error naming path relative to the model directory."""
        return kind(path, problem, self.root)

    def _read_id_file(self, path: Path) -> str | None:
        """The version named in CURRENT or LAST_GOOD, or None when the file does not exist."""
        try:
            data = read_regular(path, MAX_ID_FILE_BYTES)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._error(path, f"cannot be read ({exc.strerror or exc})") from exc
        if len(data) > MAX_ID_FILE_BYTES:
            raise self._error(path, f"is larger than {MAX_ID_FILE_BYTES:,} bytes")
        try:
            return data.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
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
        found = []
        for version in self.version_ids():
            try:
                found.append(self.record(version))
            except VersionNotFound:
                continue  # removed while listing
            except ModelError as exc:
                found.append({"version": version, "error": str(exc)})
        return found

    def _entries(self) -> dict[str, int]:
        """Version directories and their inodes: one directory read, no stat, no file opened."""
        try:
            with os.scandir(self.root) as entries:
                return {e.name: e.inode() for e in entries
                        if is_version(e.name) and e.is_dir(follow_symlinks=False)}
        except OSError:
            return {}

    def version_ids(self) -> list[str]:
        """Stored version ids oldest first, from the directory alone (no record is read).

        Ids order by second; created_at (microseconds) orders versions saved in the same one,
        so only versions that share their second have their (cached) record read.
        """
        return self._ordered(self._entries())

    def _ordered(self, entries: dict[str, int]) -> list[str]:
        """Sort ids by (second, created_at), reading created_at only where seconds tie."""
        names = sorted(entries)
        seconds: dict[str, int] = {}
        for name in names:
            seconds[name[:16]] = seconds.get(name[:16], 0) + 1
        return sorted(names, key=lambda n: (n[:16], self._created(n, entries[n])
                                            if seconds[n[:16]] > 1 else ""))

    def _created(self, version: str, inode: int) -> str:
        """created_at of a version (cached), or "" when its record cannot be read."""
        item = self.summary(version, inode)
        return str(item.get("created_at", "")) if "error" not in item else ""

    def summary(self, version: str, inode: int | None = None) -> dict:
        """A version's record without its history, from the cache when its directory is the same.

        An unreadable version is {"version", "error"} (not cached: it may be repaired).
        """
        if inode is None:
            try:
                inode = os.stat(self.root / version, follow_symlinks=False).st_ino
            except OSError:
                return {"version": version, "error": f"{version}: no such version"}
        cached = self._summaries.get(version)
        if cached is not None and cached[0] == inode:
            return cached[1]
        try:
            item = summary(self.record(version))
        except ModelError as exc:
            return {"version": version, "error": str(exc)}
        self._summaries[version] = (inode, item)
        return item

    def page(self, limit: int, after: str | None = None) -> tuple[list[dict], str | None]:
        """Up to `limit` summaries of versions stored after `after` (an id), oldest first.

        Returns the summaries and the id to pass as `after` for the next page (None at the end).
        Cost: one directory read plus `limit` cache lookups (a record is read once per worker).
        """
        entries = self._entries()
        for gone in set(self._summaries) - set(entries):  # pruned: forget them
            self._summaries.pop(gone, None)
        ordered = self._ordered(entries)
        start = 0
        if after is not None:
            key = (after[:16], self._created(after, entries[after]) if after in entries else "")
            start = next((i for i, name in enumerate(ordered) if (
                name[:16], self._created(name, entries[name])
                if name[:16] == after[:16] else "") > key), len(ordered))
        chosen = ordered[start:start + limit]
        items = [self.summary(name, entries[name]) for name in chosen]
        more = start + limit < len(ordered)
        return items, (chosen[-1] if more and chosen else None)

    def pinned(self, version: str) -> bool:
        """Whether a version carries the pin marker (kept by pruning whatever its age)."""
        return os.path.lexists(self.root / version / PINNED)

    def _version_dir(self, version: str) -> Path:
        """Map an id to its directory, refusing anything that is not a stored version id."""
        if not is_version(version):
            raise self._error(self.root, f"{version!r} is not a valid version id", VersionNotFound)
        path = self.root / version
        if not path.is_dir():
            raise self._error(path, "no such version", VersionNotFound)
        return path

    def _read(self, path: Path, limit: int, dir_fd: int | None = None) -> bytes:
        """Read a regular file of at most `limit` bytes, turning I/O failures into a ModelError.

        With dir_fd, path's name is opened in that (locked) directory.
        """
        try:
            data = read_regular(path.name if dir_fd is not None else path, limit, dir_fd=dir_fd)
        except FileNotFoundError as exc:
            raise self._error(path, "is missing") from exc
        except NotRegularFile as exc:
            raise self._error(path, exc.strerror) from exc
        except OSError as exc:
            raise self._error(path, f"cannot be read ({exc.strerror or exc})") from exc
        if len(data) > limit:
            raise self._error(path, f"is larger than {limit:,} bytes")
        return data

    def record(self, version: str) -> dict:
        """Validated model.json of a version (weights are not read)."""
        directory = self._version_dir(version)
        with self._reading(directory) as fd:
            return self._record_at(version, directory, fd)

    def _record_at(self, version: str, directory: Path, fd: int) -> dict:
        """model.json read through the version's locked directory descriptor, validated."""
        path = directory / RECORD
        try:
            record = json.loads(self._read(path, MAX_RECORD_BYTES, fd))
        except (ValueError, RecursionError) as exc:
            raise self._error(path, f"is not valid JSON ({exc})") from exc
        if problem := _record_problem(record, version):
            raise self._error(path, problem)
        return record

    @contextlib.contextmanager
    def _reading(self, directory: Path) -> Iterator[int]:
        """The version directory, opened and share-locked so pruning cannot delete it under us.

        The lock is never waited for: a version that pruning holds is being removed, so it is
        not found, as is one renamed away between the lookup and the lock.
        """
        try:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise self._error(directory, "no such version", VersionNotFound) from exc
        except OSError as exc:
            raise self._error(directory, f"cannot be opened ({exc.strerror or exc})") from exc
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                still_here = os.stat(directory).st_ino == os.fstat(fd).st_ino
            except OSError:
                still_here = False
            if not still_here:
                raise self._error(directory, "no such version (being removed)", VersionNotFound)
            yield fd
        finally:
            os.close(fd)

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
        """The uncached load, under the version directory's shared lock."""
        directory = self._version_dir(version)
        with self._reading(directory) as fd:
            record = self._record_at(version, directory, fd)
            hidden = record["hyperparameters"]["hidden_size"]
            path = directory / WEIGHTS
            # a stored npz is the raw arrays plus a few hundred bytes of zip and npy headers
            limit = 8 * sum(map(np.prod, _expected_shapes(hidden).values())) + 4096
            data = self._read(path, int(limit), fd)
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
        tmp = self.root / f"{TMP_PREFIX}{secrets.token_hex(8)}"
        tmp.mkdir()
        try:
            lock = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except BaseException:
            tmp.rmdir()
            raise
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)  # "being written": clean_stale leaves it alone
            write_new(tmp / WEIGHTS, weights)
            write_new(tmp / RECORD, text.encode())
            for name, data in extra_files.items():
                write_new(tmp / name, data)
            fsync_dir(tmp)
            os.rename(tmp, self.root / version)  # fails if the id exists: never overwrites
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            os.close(lock)
        fsync_dir(self.root)
        if self.history is not None:
            with contextlib.suppress(OSError, ModelError):  # a failed prune never fails a save
                self.prune(self.history)
        if activate:
            self.activate(version, max_bits=max_bits)
        return version

    def activate(self, version: str, *, force: bool = False, max_bits: int = 4096,
                 expect_current: str | None = ANY_CURRENT,
                 before_switch: Callable[[], None] | None = None) -> Promotion:
        """Establish that a version may go live, then point CURRENT at it atomically.

        A version that is not promotable goes live only with force, and never becomes LAST_GOOD.
        With expect_current, CURRENT must still name that version (None: no CURRENT) when it is
        replaced, else CurrentChanged: a job started from one version never undoes a rollback.
        before_switch runs under the lock just before CURRENT is replaced; raising stops it.
        """
        promotion = self.promotion(version, max_bits)
        if not promotion.passed and not force:
            raise GateFailed(self.root / version / RECORD, promotion, self.root)
        with self._activation_lock():
            if not (self.root / version).is_dir():  # pruned since the gate ran
                raise self._error(self.root / version, "no such version", VersionNotFound)
            if before_switch is not None:
                before_switch()
            if expect_current is not ANY_CURRENT:
                found = self.current()
                if found != expect_current:
                    raise CurrentChanged(self.current_file, expect_current, found, self.root)
            atomic_write(self.current_file, f"{version}\n".encode())
            if promotion.passed:
                atomic_write(self.last_good_file, f"{version}\n".encode())
        return promotion

    def prune(self, keep: int) -> list[str]:
        """Remove all but the newest `keep` versions; CURRENT, LAST_GOOD and pinned ones stay.

        Under the activation lock (nothing goes live meanwhile), each version is renamed away
        at once, then deleted unless a reader still holds it (a later prune finishes it).
        Stale temporary files of crashed writers go too. Returns the versions removed.
        """
        if type(keep) is not int or keep < 1:
            raise ValueError(f"keep must be a positive integer, got {keep!r}")
        removed: list[str] = []
        with self._activation_lock():
            keep_ids = {self.current(), self.last_good()}
            ordered = self.version_ids()
            for version in ordered[:max(0, len(ordered) - keep)]:
                if version in keep_ids or self.pinned(version):
                    continue
                trash = self.root / f"{TRASH_PREFIX}{version}-{secrets.token_hex(4)}"
                try:
                    os.rename(self.root / version, trash)
                except FileNotFoundError:
                    continue
                removed.append(version)
                self._summaries.pop(version, None)
        if removed:
            fsync_dir(self.root)
        self.clean_stale()
        return removed

    def clean_stale(self) -> list[str]:
        """Delete what crashed writers and pruning left: unlocked .tmp-* (old) and .trash-*."""
        if not self.root.is_dir():
            return []
        gone = remove_stale(self.root, (TRASH_PREFIX,), older_than=0.0)
        gone += remove_stale(self.root, (TMP_PREFIX,))
        gone += remove_stale(self.root / "jobs", (TMP_PREFIX,))
        return gone

    @contextlib.contextmanager
    def _activation_lock(self) -> Iterator[None]:
        """An exclusive flock across processes and replicas, held while CURRENT is replaced."""
        fd = os.open(self.root / ACTIVATION_LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
