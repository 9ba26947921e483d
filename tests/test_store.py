"""Model store: round trips, atomic writes, and refusal of every kind of broken artifact."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from training import files as files_module
from training import store as store_module
from training.store import (
    RECORD,
    WEIGHTS,
    GateFailed,
    Model,
    ModelError,
    ModelStore,
    VersionNotFound,
    is_version,
)

HIDDEN = 4
ADDER = 16  # hidden units of adder_params (the bundled model)


def make_params(seed: int = 0, hidden: int = HIDDEN, biases: bool = False) -> dict:
    """Random float64 params shaped like the RNN's, built here so the store is tested alone."""
    rng = np.random.default_rng(seed)
    params = {
        "w_i": rng.uniform(-1, 1, (hidden, 2)),
        "w_h": rng.uniform(-1, 1, (hidden, hidden)),
        "w_o": rng.uniform(-1, 1, (1, hidden)),
    }
    if biases:
        params["b_h"] = rng.uniform(-1, 1, hidden)
        params["b_o"] = rng.uniform(-1, 1, 1)
    return params


def make_fields(hidden: int = HIDDEN, **overrides: object) -> dict:
    """The caller's part of model.json."""
    fields = {
        "hyperparameters": {
            "hidden_size": hidden, "optimizer": "adam", "learning_rate": 0.01, "batch_size": 64,
            "max_steps": 1000, "bits": 8, "biases": False, "check_every": 50,
            "target_accuracy": 1.0, "preset": None,
        },
        "seed": 0,
        "steps": 500,
        "training_seconds": 0.25,
        "metrics": {"accuracy_8bit": 1.0, "accuracy_16bit": 1.0, "accuracy_32bit": 1.0,
                    "accuracy_64bit": 0.99, "final_loss": 0.001},
        "history": [{"step": 50, "loss": 0.2, "accuracy": 0.5}],
        "parent": None,
        # a recorded pass, so these tests exercise the store and not the gate (tested below)
        "gate": {"passed": True, "max_bits": 4096, "seconds": 0.1, "failed": None, "checks": []},
    }
    fields.update(overrides)
    return fields


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models")


def leftovers(root: Path) -> list[str]:
    """Temporary entries a finished write must not leave behind."""
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".tmp-"))


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- round trip, activation, listing ---------------------------------------------------------

@pytest.mark.parametrize("biases", [False, True])
def test_round_trip_is_bit_exact(store: ModelStore, biases: bool) -> None:
    params = make_params(biases=biases)
    fields = make_fields()
    version = store.save(params, fields)

    assert is_version(version)
    model = store.load(version)
    assert isinstance(model, Model) and model.version == version and model.bits == 8
    assert model.params.keys() == params.keys()
    for name, array in params.items():
        assert model.params[name].dtype == np.float64
        assert model.params[name].tobytes() == array.tobytes()
    for key, value in fields.items():
        assert model.record[key] == value
    weights = (store.root / version / WEIGHTS).read_bytes()
    assert model.record["sha256"] == hashlib.sha256(weights).hexdigest()
    assert model.record["format_version"] == 1 and model.record["version"] == version
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", model.record["created_at"])
    assert store.record(version) == model.record
    assert store.current() is None
    assert leftovers(store.root) == []


def test_record_accepts_numpy_scalars(store: ModelStore) -> None:
    fields = make_fields(seed=np.int64(3), training_seconds=np.float64(1.5))
    record = store.record(store.save(make_params(), fields))
    assert record["seed"] == 3 and type(record["seed"]) is int
    assert record["training_seconds"] == 1.5


def test_save_with_activate_points_current_at_it(store: ModelStore, adder_params: dict) -> None:
    version = store.save(adder_params, make_fields(ADDER), activate=True)
    assert store.current_file.read_text() == f"{version}\n"
    assert store.current() == version
    assert store.load_current().version == version
    assert leftovers(store.root) == []


def test_activate_switches_only_to_a_valid_version(store: ModelStore, adder_params: dict) -> None:
    first = store.save(adder_params, make_fields(ADDER), activate=True)
    second = store.save(adder_params, make_fields(ADDER))
    store.activate(second)
    assert store.current() == second
    store.activate(first)
    (store.root / second / WEIGHTS).write_bytes(b"garbage")
    with pytest.raises(ModelError, match="sha256"):
        store.activate(second)
    assert store.current() == first
    assert leftovers(store.root) == []


def test_extra_files_land_inside_the_version(store: ModelStore) -> None:
    version = store.save(make_params(), make_fields(), extra_files={"training_curve.png": b"png"})
    assert (store.root / version / "training_curve.png").read_bytes() == b"png"
    store.load(version)


@pytest.mark.parametrize("name", ["../x.png", "a/b.png", ".hidden", "", WEIGHTS, RECORD])
def test_bad_extra_file_names_are_refused(store: ModelStore, name: str) -> None:
    with pytest.raises(ValueError, match="extra file name"):
        store.save(make_params(), make_fields(), extra_files={name: b"x"})
    assert not store.root.exists() or list(store.root.iterdir()) == []


def test_versions_are_sorted_and_skip_other_entries(store: ModelStore, adder_params: dict) -> None:
    saved = [store.save(adder_params, make_fields(ADDER)) for _ in range(4)]
    (store.root / "jobs").mkdir()
    (store.root / "jobs" / "abc.json").write_text("{}")
    (store.root / ".tmp-deadbeef").mkdir()
    (store.root / ".train.lock").touch()
    (store.root / "20000101T000000Z-aaaaaa").write_text("a file, not a version directory")
    store.activate(saved[0])

    listed = store.versions()
    assert [r["version"] for r in listed] == saved  # oldest first, even within one second
    assert all("error" not in r and r["metrics"]["accuracy_8bit"] == 1.0 for r in listed)


def test_versions_lists_a_broken_record_with_its_error(store: ModelStore) -> None:
    good = store.save(make_params(1), make_fields())
    bad = store.save(make_params(2), make_fields())
    (store.root / bad / RECORD).write_text("{not json")
    listed = {r["version"]: r for r in store.versions()}
    assert "error" not in listed[good]
    assert listed[bad].keys() == {"version", "error"}
    assert listed[bad]["error"].startswith(f"{bad}/{RECORD}: ")
    assert "not valid JSON" in listed[bad]["error"]


def test_versions_of_a_missing_root_is_empty(tmp_path: Path) -> None:
    assert ModelStore(tmp_path / "nowhere").versions() == []


# --- CURRENT ---------------------------------------------------------------------------------

def test_current_strips_whitespace(store: ModelStore) -> None:
    version = store.save(make_params(), make_fields())
    store.current_file.write_text(f"  {version} \n\n")
    assert store.current() == version
    assert store.load_current().version == version


@pytest.mark.parametrize("content", ["", "\n", "../etc/passwd\n", "20000101T000000Z-abcdef\n"])
def test_load_current_refuses_a_bad_current(store: ModelStore, content: str) -> None:
    store.save(make_params(), make_fields())
    store.current_file.write_text(content)
    with pytest.raises(ModelError) as caught:
        store.load_current()
    assert caught.value.path == store.current_file
    assert str(caught.value).startswith("CURRENT: ")


def test_load_current_without_current(store: ModelStore) -> None:
    store.save(make_params(), make_fields())
    assert store.current() is None
    with pytest.raises(ModelError, match="CURRENT: is missing"):
        store.load_current()


def test_current_is_replaced_atomically(store: ModelStore, monkeypatch, adder_params) -> None:
    first = store.save(adder_params, make_fields(ADDER), activate=True)
    second = store.save(adder_params, make_fields(ADDER))
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        # At swap time the new content is complete in a sibling temp file; CURRENT is untouched.
        seen.append((Path(src).parent, Path(src).read_text(), store.current()))
        real_replace(src, dst)

    monkeypatch.setattr(store_module.os, "replace", spy)
    store.activate(second)
    assert seen[0] == (store.root, f"{second}\n", first)  # then LAST_GOOD, the same way
    assert store.current() == second

    def failing(src, dst):
        raise OSError("disk on fire")

    monkeypatch.setattr(store_module.os, "replace", failing)
    with pytest.raises(OSError, match="disk on fire"):
        store.activate(first)
    assert store.current() == second
    assert leftovers(store.root) == []


def test_written_files_honour_the_umask(store: ModelStore, adder_params: dict) -> None:
    version = store.save(adder_params, make_fields(ADDER), activate=True)
    mask = current_umask()
    assert store.current_file.stat().st_mode & 0o777 == 0o666 & ~mask
    assert (store.root / version).stat().st_mode & 0o777 == 0o777 & ~mask


# --- atomic save -----------------------------------------------------------------------------

def test_a_version_appears_only_when_complete(store: ModelStore, monkeypatch) -> None:
    seen = []
    real_rename = os.rename

    def spy(src, dst):
        # Just before the rename the version is invisible, and its temp dir is already complete.
        src, dst = Path(src), Path(dst)
        seen.append((src.name.startswith(".tmp-"), dst.exists(), store.versions()))
        assert sorted(p.name for p in src.iterdir()) == [RECORD, WEIGHTS]
        real_rename(src, dst)

    monkeypatch.setattr(store_module.os, "rename", spy)
    version = store.save(make_params(), make_fields())
    assert seen == [(True, False, [])]
    assert store.load(version).version == version
    assert leftovers(store.root) == []


def test_failed_save_leaves_nothing_behind(store: ModelStore, monkeypatch) -> None:
    store.save(make_params(), make_fields())
    before = sorted(p.name for p in store.root.iterdir())
    real_write = store_module.write_new

    def write_then_fail(path: Path, data: bytes) -> None:
        real_write(path, data)
        if path.name == RECORD:
            raise OSError("no space left")

    monkeypatch.setattr(store_module, "write_new", write_then_fail)
    with pytest.raises(OSError, match="no space left"):
        store.save(make_params(), make_fields())
    assert sorted(p.name for p in store.root.iterdir()) == before


def nan_params() -> dict:
    params = make_params()
    params["w_h"][0, 0] = np.nan
    return params


@pytest.mark.parametrize(
    ("params", "fields", "message"),
    [
        (nan_params(), make_fields(), "params: array 'w_h' has non-finite"),
        ({**make_params(), "w_i": np.zeros((HIDDEN, 2), np.float32)}, make_fields(),
         "params: array 'w_i' has dtype float32"),
        (make_params(hidden=3), make_fields(), r"params: array 'w_i' has shape \(3, 2\)"),
        ({**make_params(), "b_h": np.zeros(HIDDEN)}, make_fields(), "without its pair"),
        (make_params(), {k: v for k, v in make_fields().items() if k != "history"},
         r"record_fields: missing keys \['history'\]"),
        (make_params(), make_fields(hyperparameters={"bits": 8}),
         "hyperparameters.hidden_size must be a positive integer"),
        (make_params(), make_fields(metrics={"final_loss": float("nan")}), "Out of range float"),
    ],
)
def test_save_refuses_what_load_would_refuse(store, params, fields, message) -> None:
    with pytest.raises(ValueError, match=message):
        store.save(params, fields)
    assert not store.root.exists() or list(store.root.iterdir()) == []


# --- refusals on load ------------------------------------------------------------------------

def rewrite_weights(vdir: Path, allow_pickle: bool = False, **arrays: np.ndarray) -> None:
    """Replace weights.npz and fix the checksum, so the check under test is the one that fires."""
    np.savez(vdir / WEIGHTS, allow_pickle=allow_pickle, **arrays)
    set_sha(vdir)


def set_sha(vdir: Path) -> None:
    digest = hashlib.sha256((vdir / WEIGHTS).read_bytes()).hexdigest()
    edit_record(vdir, sha256=digest)


def edit_record(vdir: Path, **changes: object) -> None:
    record = json.loads((vdir / RECORD).read_text())
    record.update(changes)
    (vdir / RECORD).write_text(json.dumps(record))


def flip_byte(vdir: Path, params: dict) -> None:
    data = bytearray((vdir / WEIGHTS).read_bytes())
    data[len(data) // 2] ^= 0x01
    (vdir / WEIGHTS).write_bytes(bytes(data))


def with_array(name: str, value: np.ndarray) -> Callable[[Path, dict], None]:
    return lambda vdir, params: rewrite_weights(vdir, **{**params, name: value})


def without_array(name: str) -> Callable[[Path, dict], None]:
    return lambda vdir, params: rewrite_weights(
        vdir, **{k: v for k, v in params.items() if k != name})


def pickled_object(vdir: Path, params: dict) -> None:
    sneaky = np.empty(2, dtype=object)
    sneaky[:] = [{"os": "system"}, "payload"]
    rewrite_weights(vdir, allow_pickle=True, **{**params, "w_h": sneaky})


def nan_in(name: str) -> Callable[[Path, dict], None]:
    def corrupt(vdir: Path, params: dict) -> None:
        array = params[name].copy()
        array.flat[0] = np.nan
        rewrite_weights(vdir, **{**params, name: array})
    return corrupt


def write_file(name: str, content: bytes, fix_sha: bool = False) -> Callable[[Path, dict], None]:
    def corrupt(vdir: Path, params: dict) -> None:
        (vdir / name).write_bytes(content)
        if fix_sha:
            set_sha(vdir)
    return corrupt


def drop_key(key: str) -> Callable[[Path, dict], None]:
    def corrupt(vdir: Path, params: dict) -> None:
        record = json.loads((vdir / RECORD).read_text())
        del record[key]
        (vdir / RECORD).write_text(json.dumps(record))
    return corrupt


BAD_ARTIFACTS = {
    "flipped byte": (flip_byte, WEIGHTS, "sha256 is [0-9a-f]{64}, but model.json says"),
    "wrong shape": (with_array("w_h", np.zeros((3, 4))), WEIGHTS,
                    r"array 'w_h' has shape \(3, 4\) and dtype float64, expected \(4, 4\) float64"),
    "wrong shape of w_o": (with_array("w_o", np.zeros((HIDDEN, 1))), WEIGHTS,
                           r"array 'w_o' has shape \(4, 1\) and dtype float64, expected \(1, 4\)"),
    "hidden size disagrees": (lambda vdir, p: edit_record(vdir, hyperparameters={
        "hidden_size": 8, "bits": 8}), WEIGHTS,
        r"'w_i' has shape \(4, 2\) and dtype float64, expected \(8, 2\)"),
    "NaN": (nan_in("w_h"), WEIGHTS, "array 'w_h' has non-finite values"),
    "inf": (with_array("w_o", np.full((1, HIDDEN), np.inf)), WEIGHTS, "'w_o' has non-finite"),
    "float32": (with_array("w_i", np.zeros((HIDDEN, 2), np.float32)), WEIGHTS,
                r"array 'w_i' has shape \(4, 2\) and dtype float32, expected \(4, 2\) float64"),
    "big-endian": (with_array("w_i", np.zeros((HIDDEN, 2), ">f8")), WEIGHTS, "dtype >f8"),
    "int array": (with_array("w_i", np.zeros((HIDDEN, 2), np.int64)), WEIGHTS, "dtype int64"),
    "pickled object": (pickled_object, WEIGHTS,
                       r"array 'w_h' has shape \(2,\) and dtype object"),
    "extra array": (with_array("extra", np.zeros(1)), WEIGHTS, r"unexpected arrays \['extra'\]"),
    "missing array": (without_array("w_o"), WEIGHTS, r"missing arrays \['w_o'\]"),
    "lone bias": (with_array("b_h", np.zeros(HIDDEN)), WEIGHTS, r"\['b_h'\] without its pair"),
    "not a zip": (write_file(WEIGHTS, b"\x93NUMPY not a zip", fix_sha=True), WEIGHTS,
                  "is not an npz"),
    "truncated zip": (write_file(WEIGHTS, b"PK\x03\x04" + b"\0" * 20, fix_sha=True), WEIGHTS,
                      "is not a valid model archive"),
    "missing weights": (lambda vdir, p: (vdir / WEIGHTS).unlink(), WEIGHTS, "is missing"),
    "missing record": (lambda vdir, p: (vdir / RECORD).unlink(), RECORD, "is missing"),
    "invalid JSON": (write_file(RECORD, b"{\"format_version\": 1,"), RECORD, "is not valid JSON"),
    "not UTF-8": (write_file(RECORD, b"\xff\xfe{}"), RECORD, "is not valid JSON"),
    "JSON array": (write_file(RECORD, b"[1, 2]"), RECORD, "is not a JSON object"),
    "unknown format": (lambda vdir, p: edit_record(vdir, format_version=2), RECORD,
                       "unknown format_version 2 "),
    "bool format": (lambda vdir, p: edit_record(vdir, format_version=True), RECORD,
                    "unknown format_version True"),
    "missing key": (drop_key("metrics"), RECORD, r"missing keys \['metrics'\]"),
    "other version": (lambda vdir, p: edit_record(vdir, version="20000101T000000Z-abcdef"),
                      RECORD, "version is '20000101T000000Z-abcdef' but the directory is"),
    "bad sha field": (lambda vdir, p: edit_record(vdir, sha256="xyz"), RECORD,
                      "sha256 'xyz' is not a hex SHA-256 digest"),
    "no bits": (lambda vdir, p: edit_record(vdir, hyperparameters={"hidden_size": HIDDEN}),
                RECORD, "hyperparameters.bits must be a positive integer"),
}


@pytest.mark.parametrize(("corrupt", "filename", "message"), BAD_ARTIFACTS.values(),
                         ids=BAD_ARTIFACTS.keys())
def test_load_refuses_bad_artifacts(store: ModelStore, corrupt, filename, message) -> None:
    params = make_params()
    version = store.save(params, make_fields())
    vdir = store.root / version
    corrupt(vdir, params)

    with pytest.raises(ModelError) as caught:
        store.load(version)
    error = caught.value
    assert type(error) is ModelError
    assert error.path == vdir / filename
    # relative to the model directory: messages reach clients, server paths must not
    assert re.match(rf"{re.escape(f'{vdir.name}/{filename}')}: .*{message}", str(error)), str(error)
    assert str(store.root) not in str(error)
    if filename == RECORD:
        with pytest.raises(ModelError, match=re.escape(f"{vdir.name}/{filename}")):
            store.record(version)


# --- version ids -----------------------------------------------------------------------------

BAD_IDS = [
    "../x", "..", ".", "", "/etc/passwd", "jobs", ".tmp-0123456789abcdef", "CURRENT",
    "20261129T013600Z-a1b2c3/../../x", "20261129T013600Z-A1B2C3", "20261129T013600Z-a1b2c3\n",
    " 20261129T013600Z-a1b2c3", "20261129T013600Z-a1b2c", None, 20261129,
]


@pytest.mark.parametrize("bad", BAD_IDS, ids=repr)
def test_invalid_version_ids_are_not_found(store: ModelStore, bad) -> None:
    store.save(make_params(), make_fields())
    for call in (store.load, store.record, store.activate):
        with pytest.raises(VersionNotFound, match="is not a valid version id") as caught:
            call(bad)
        assert caught.value.path == store.root
    assert store.current() is None


def test_ids_never_reach_outside_the_root(tmp_path: Path) -> None:
    other = ModelStore(tmp_path / "other")
    version = other.save(make_params(), make_fields())
    store = ModelStore(tmp_path / "models")
    store.save(make_params(), make_fields())
    for sneaky in (f"../other/{version}", str(other.root / version)):
        with pytest.raises(VersionNotFound):
            store.load(sneaky)
    assert store.current() is None


def test_unknown_version_is_not_found(store: ModelStore) -> None:
    store.save(make_params(), make_fields())
    missing = "20000101T000000Z-abcdef"
    with pytest.raises(VersionNotFound, match="no such version") as caught:
        store.load(missing)
    assert caught.value.path == store.root / missing
    with pytest.raises(VersionNotFound):
        store.activate(missing)
    assert store.current() is None


# --- safe, cheap loading and the promotion gate ------------------------------------------------


def inflating_npz(hidden: int, rows: int) -> bytes:
    """A small deflated npz whose w_h header claims (rows, hidden) float64: gigabytes inflated."""
    import io
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (rows, hidden)})
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, shape in (("w_i", (hidden, 2)), ("w_o", (1, hidden))):
            buf = io.BytesIO()
            np.save(buf, np.zeros(shape))
            archive.writestr(f"{name}.npy", buf.getvalue())
        with archive.open("w_h.npy", "w", force_zip64=True) as member:
            member.write(header.getvalue())
            zeros = b"\0" * (1 << 20)
            for _ in range(2):  # 2 MB of zeros deflate to 2 KB; the header claims 32 GB
                member.write(zeros)
    return out.getvalue()


def test_an_inflating_npz_is_refused_from_its_header_at_once(store: ModelStore) -> None:
    version = store.save(make_params(), make_fields())
    data = inflating_npz(HIDDEN, rows=10**9)
    assert len(data) < 1 << 20
    path = store.root / version / WEIGHTS
    path.chmod(0o644)
    path.write_bytes(data)
    edit_record(store.root / version, sha256=hashlib.sha256(data).hexdigest())
    started = time.perf_counter()
    with pytest.raises(ModelError, match=r"'w_h' has shape \(1000000000, 4\)"):
        store.load(version)
    assert time.perf_counter() - started < 0.5


def test_an_oversized_weights_file_is_refused_unread(store: ModelStore) -> None:
    version = store.save(make_params(), make_fields())
    path = store.root / version / WEIGHTS
    path.chmod(0o644)
    path.write_bytes(b"PK\x03\x04" + b"\0" * (1 << 20))
    with pytest.raises(ModelError, match="is larger than"):
        store.load(version)


def test_failed_loads_are_remembered_until_the_files_change(store, monkeypatch) -> None:
    version = store.save(make_params(), make_fields())
    (store.root / version / RECORD).chmod(0o644)
    edit_record(store.root / version, sha256="f" * 64)
    reads = []
    real = store_module.ModelStore._load
    monkeypatch.setattr(store_module.ModelStore, "_load",
                        lambda self, v: reads.append(v) or real(self, v))
    for _ in range(3):
        with pytest.raises(ModelError, match="sha256"):
            store.load(version)
    assert reads == [version]
    edit_record(store.root / version, sha256="e" * 64)  # a new file: tried again
    with pytest.raises(ModelError):
        store.load(version)
    assert len(reads) == 2


@pytest.mark.parametrize(("key", "value"), [("hidden_size", 100_000), ("bits", 65),
                                            ("learning_rate", 10**400), ("biases", "yes")])
def test_hyperparameters_are_bounded(store: ModelStore, key: str, value: object) -> None:
    version = store.save(make_params(), make_fields())
    hyper = {**make_fields()["hyperparameters"], key: value}
    (store.root / version / RECORD).chmod(0o644)
    edit_record(store.root / version, hyperparameters=hyper)
    with pytest.raises(ModelError, match=f"hyperparameters.{key}"):
        store.load(version)


def failing_fields() -> dict:
    """A record whose gate failed, as training would store it."""
    gate = {"passed": False, "max_bits": 4096, "seconds": 0.1, "failed": "random_4096bit",
            "checks": []}
    return make_fields(gate=gate)


def test_activation_is_refused_when_the_gate_fails(store: ModelStore, adder_params) -> None:
    good = store.save(adder_params, make_fields(ADDER), activate=True)
    bad = store.save(make_params(2), failing_fields())
    with pytest.raises(GateFailed) as caught:
        store.activate(bad)
    assert isinstance(caught.value, ModelError) and caught.value.check == "exhaustive_8bit"
    assert caught.value.gate["passed"] is False and str(store.root) not in str(caught.value)
    assert store.current() == good and store.last_good() == good
    promotion = store.activate(bad, force=True)
    assert promotion.passed is False and promotion.gate["passed"] is False
    assert store.current() == bad and store.last_good() == good  # forced is never last good


def test_activation_runs_the_gate_on_the_weights_not_the_record(store: ModelStore) -> None:
    """A record claiming a pass (copied from a good version) does not make weights add."""
    version = store.save(make_params(), make_fields())  # random weights, a recorded pass
    assert store.record(version)["gate"]["passed"] is True
    with pytest.raises(GateFailed) as caught:
        store.activate(version)
    assert caught.value.check == "exhaustive_8bit"
    assert store.current() is None and store.last_good() is None
    fresh = store.promotion(version, 128)
    assert fresh.passed is False and fresh.gate["max_bits"] == 128
    assert store.record(version)["gate"]["max_bits"] == 4096  # versions are immutable


def test_activation_is_a_compare_and_set_on_current(store: ModelStore, adder_params) -> None:
    first = store.save(adder_params, make_fields(ADDER), activate=True)
    second = store.save(adder_params, make_fields(ADDER))
    third = store.save(adder_params, make_fields(ADDER))
    store.activate(second)  # a rollback or another job, after a job started from `first`
    with pytest.raises(store_module.CurrentChanged) as caught:
        store.activate(third, expect_current=first)
    assert caught.value.found == second and store.current() == second
    store.activate(third, expect_current=second)
    assert store.current() == third
    empty = ModelStore(store.root.parent / "empty")
    version = empty.save(adder_params, make_fields(ADDER))
    with pytest.raises(store_module.CurrentChanged):
        empty.activate(version, expect_current=first)
    empty.activate(version, expect_current=None)  # None: there must be no CURRENT yet
    assert empty.current() == version


def test_save_runs_and_records_the_gate(store: ModelStore) -> None:
    fields = make_fields()
    del fields["gate"]
    version = store.save(make_params(), fields, max_bits=100)
    gate = store.record(version)["gate"]
    assert gate["max_bits"] == 100 and gate["passed"] is False
    assert gate["failed"] == "exhaustive_8bit" and gate["checks"][0]["example"] is not None


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC, errno.EACCES])
def test_write_errors_propagate_and_leave_nothing(store: ModelStore, monkeypatch, code,
                                                 adder_params: dict) -> None:
    first = store.save(adder_params, make_fields(ADDER), activate=True)

    def failing(path, data):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(store_module, "write_new", failing)
    monkeypatch.setattr(files_module, "write_new", failing)
    with pytest.raises(OSError) as caught:
        store.save(make_params(2), make_fields())
    assert caught.value.errno == code
    second = [v["version"] for v in store.versions()]
    with pytest.raises(OSError):
        store.activate(first)
    assert second == [first] and store.current() == first
    assert leftovers(store.root) == []


# --- reads that cannot block -----------------------------------------------------------------

def in_thread(call: Callable[[], object], timeout: float = 5.0) -> object:
    """Run call in a daemon thread; fail (rather than hang the suite) if it blocks."""
    result: list[object] = []

    def target() -> None:
        try:
            result.append(call())
        except BaseException as exc:  # returned for the test to look at
            result.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"{call} blocked for more than {timeout} s"
    return result[0]


def release_fifo(path: Path) -> None:
    """Unblock anyone stuck reading a FIFO (the code before this fix would be): open, close."""
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


@pytest.mark.parametrize("name", [RECORD, WEIGHTS])
def test_a_fifo_in_a_version_is_an_error_at_once(store: ModelStore, name: str) -> None:
    version = store.save(make_params(), make_fields())
    path = store.root / version / name
    path.unlink()
    os.mkfifo(path)
    try:
        listed = in_thread(store.versions) if name == RECORD else None
        loaded = in_thread(lambda: store.load(version))
    finally:
        release_fifo(path)
    assert isinstance(loaded, ModelError) and "not a regular file (a FIFO)" in str(loaded)
    if listed is not None:
        assert "a FIFO" in listed[0]["error"]


@pytest.mark.parametrize("pointer", ["CURRENT", "LAST_GOOD"])
def test_a_fifo_at_current_or_last_good_is_an_error_at_once(store: ModelStore,
                                                            pointer: str) -> None:
    store.root.mkdir()
    os.mkfifo(store.root / pointer)
    try:
        result = in_thread(store.current if pointer == "CURRENT" else store.last_good)
    finally:
        release_fifo(store.root / pointer)
    assert isinstance(result, ModelError) and "a FIFO" in str(result)


def test_a_symlinked_record_is_refused(store: ModelStore, tmp_path: Path) -> None:
    version = store.save(make_params(), make_fields())
    outside = tmp_path / "elsewhere.json"
    (store.root / version / RECORD).rename(outside)
    (store.root / version / RECORD).symlink_to(outside)
    with pytest.raises(ModelError, match="symbolic link"):
        store.record(version)


# --- pruning, pins, pages --------------------------------------------------------------------

def saved(store: ModelStore, count: int) -> list[str]:
    """Versions saved one after another (oldest first)."""
    return [store.save(make_params(i), make_fields()) for i in range(count)]


def test_prune_keeps_the_newest_current_last_good_and_pinned(store: ModelStore) -> None:
    versions = saved(store, 8)
    (store.root / "LAST_GOOD").write_text(versions[1] + "\n")
    (store.root / "CURRENT").write_text(versions[2] + "\n")
    (store.root / versions[3] / store_module.PINNED).touch()
    removed = store.prune(3)
    assert removed == [versions[0], versions[4]]
    assert store.version_ids() == [versions[1], versions[2], versions[3], *versions[5:]]
    assert [n for n in os.listdir(store.root) if n.startswith((".trash", ".tmp"))] == []


def test_a_store_with_history_prunes_after_every_save(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models", history=2)
    versions = saved(store, 5)
    assert store.version_ids() == versions[-2:]


def test_a_version_being_read_is_renamed_away_and_deleted_once_released(
    store: ModelStore,
) -> None:
    versions = saved(store, 3)
    with store._reading(store.root / versions[0]):  # a worker loading this version right now
        assert store.prune(1) == versions[:2]
        trash = [n for n in os.listdir(store.root) if n.startswith(store_module.TRASH_PREFIX)]
        assert len(trash) == 1 and versions[0] in trash[0], "held: renamed, not deleted"
        with pytest.raises(VersionNotFound):
            store.load(versions[0])  # new readers no longer find it
    store.clean_stale()
    assert [n for n in os.listdir(store.root) if n.startswith(".trash")] == []


def test_activation_of_a_pruned_version_is_not_found(store: ModelStore, monkeypatch) -> None:
    versions = saved(store, 3)
    real = ModelStore.promotion

    def prune_meanwhile(self: ModelStore, version: str, max_bits: int) -> object:
        result = real(self, version, max_bits)
        self.prune(1)  # another process prunes while the gate runs
        return result

    monkeypatch.setattr(ModelStore, "promotion", prune_meanwhile)
    with pytest.raises(VersionNotFound):
        store.activate(versions[0], force=True)
    assert store.current() is None


def test_pages_cover_every_version_in_order(store: ModelStore) -> None:
    versions = saved(store, 7)  # several in one second: ordered by created_at
    seen, after = [], None
    while True:
        page, after = store.page(3, after)
        seen += [item["version"] for item in page]
        assert all("history" not in item for item in page)
        if after is None:
            break
    assert seen == versions


def test_listings_read_each_record_once(store: ModelStore, monkeypatch) -> None:
    saved(store, 5)
    reads: list[str] = []
    real = ModelStore.record
    monkeypatch.setattr(ModelStore, "record",
                        lambda self, v: reads.append(v) or real(self, v))
    store.page(100)
    first = len(reads)
    assert first == 5
    store.page(100)
    store.version_ids()
    assert len(reads) == first, "versions never change: the second listing reads no record"


# --- leftovers of crashed writers ------------------------------------------------------------

def age(path: Path, seconds: float = 3600) -> None:
    """Make a file look as old as a crash an hour ago."""
    old = time.time() - seconds
    os.utime(path, (old, old))


def test_stale_temporary_files_are_removed_but_not_live_ones(store: ModelStore) -> None:
    version = store.save(make_params(), make_fields())
    stale_file = store.root / ".tmp-CURRENT-0123456789abcdef"  # kill -9 inside atomic_write
    stale_file.write_text(version)
    stale_dir = store.root / ".tmp-0123456789abcdef"  # kill -9 inside save
    stale_dir.mkdir()
    (stale_dir / WEIGHTS).write_bytes(b"half")
    fresh = store.root / ".tmp-LAST_GOOD-fedcba9876543210"  # being written right now
    fresh.write_text(version)
    written = store.root / ".tmp-LAST_GOOD-00000000deadbeef"  # old, but a writer holds it
    written.write_text(version)
    for path in (stale_file, stale_dir, written):
        age(path)
    holder = os.open(written, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        removed = store.clean_stale()
    finally:
        os.close(holder)
    assert sorted(removed) == sorted([stale_file.name, stale_dir.name])
    assert fresh.exists() and written.exists() and (store.root / version).is_dir()
