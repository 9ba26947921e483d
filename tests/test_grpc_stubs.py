"""The committed gRPC modules are exactly what grpcio-tools makes of the committed .proto."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROTO = "service/proto/open_inference_grpc.proto"
MODULES = ("open_inference_grpc_pb2.py", "open_inference_grpc_pb2_grpc.py")


@pytest.mark.parametrize("module", MODULES)
def test_committed_stubs_match_the_generator(tmp_path: Path, module: str) -> None:
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", ".",
                    f"--python_out={tmp_path}", f"--grpc_python_out={tmp_path}", PROTO],
                   cwd=ROOT, check=True, timeout=60)
    generated = (tmp_path / "service" / "proto" / module).read_text()
    committed = (ROOT / "service" / "proto" / module).read_text()
    assert committed == generated, f"service/proto/{module} is stale: run `make grpc-stubs`"


def test_the_definition_keeps_the_protocols_names() -> None:
    text = (ROOT / PROTO).read_text()
    assert "package inference;" in text and "service GRPCInferenceService" in text
    for rpc in ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata",
                "ModelInfer"):
        assert f"rpc {rpc}({rpc}Request) returns ({rpc}Response)" in text
    assert (ROOT / "service" / "proto" / "LICENSE-open-inference-protocol").is_file()
