"""python -m training.certify: exit codes and what it says, for files and version folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.certify.__main__ import main


def save(path: Path, params: dict) -> Path:
    """A weights.npz."""
    np.savez(path, **params)
    return path


def test_weights_file_certified(tmp_path: Path, exact_adder: dict, capsys) -> None:
    """Exit 0 and 'certified' for a provable model."""
    assert main([str(save(tmp_path / "w.npz", exact_adder)), "--time-limit", "20"]) == 0
    assert "certified" in capsys.readouterr().out


def test_folder_with_certificate_is_reverified(tmp_path: Path, exact_adder: dict,
                                               exact_verdict, capsys) -> None:
    """A stored certificate is re-verified; a damaged one is reported, exit 1."""
    save(tmp_path / "weights.npz", exact_adder)
    (tmp_path / "certificate.npz").write_bytes(exact_verdict.certificate.to_bytes())
    assert main([str(tmp_path)]) == 0
    assert "stored certificate verified" in capsys.readouterr().out
    cert = exact_verdict.certificate.to_bytes()
    (tmp_path / "certificate.npz").write_bytes(cert[: len(cert) // 2])
    assert main([str(tmp_path)]) == 1
    assert "UNREADABLE" in capsys.readouterr().out


def test_wrong_model_exit_1(tmp_path: Path, slow_model, capsys) -> None:
    """Not certified: exit 1 and the reason."""
    assert main([str(save(tmp_path / "w.npz", slow_model[0])), "--time-limit", "3"]) == 1
    out = capsys.readouterr().out
    assert out.startswith(("unknown", "counterexample"))


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04junk", b"not an npz"])
def test_unreadable_input_exit_2(tmp_path: Path, content: bytes, capsys) -> None:
    """Unreadable input: exit 2 with a message, no traceback."""
    path = tmp_path / "w.npz"
    path.write_bytes(content)
    assert main([str(path)]) == 2
    assert "error:" in capsys.readouterr().err


def test_misshapen_weights_exit_2(tmp_path: Path, capsys) -> None:
    """Weights that are no adder's: exit 2 naming the array."""
    path = save(tmp_path / "w.npz", {"w_i": np.zeros((3, 2)), "w_h": np.zeros((3, 2)),
                                     "w_o": np.zeros((1, 3))})
    assert main([str(path)]) == 2
    assert "w_h" in capsys.readouterr().err
