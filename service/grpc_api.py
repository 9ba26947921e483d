"""The Open Inference Protocol over gRPC: a codec between protobuf messages and the one core.

An inference request is mapped to the same header and binary data as a REST request
(`oip.parse_infer_header`), so both protocols share every rule, limit and message; errors are
the core's APIError, turned into gRPC status codes by service.errors' one table. Every call is
counted, timed and logged as REST requests are (protocol label "grpc").
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import grpc

from service import errors, grpc_codec, oip
from service.auth import check_admin
from service.context import Services
from service.errors import APIError, V2Error
from service.grpc_codec import common_request, infer_header
from service.proto import open_inference_grpc_pb2 as pb
from service.reqlog import Clock, request_id
from service.runtime import AUTO, Prediction

SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
REQUEST_ID_KEY = "x-request-id"
AUTHORIZATION_KEY = "authorization"  # "Bearer <token>", as the REST header
LINE = ('{"ts": "%s", "level": "info", "event": "request", "protocol": "grpc", "method": "POST", '
        '"path": "%s", "status": "%s", "duration_ms": %.3f, "request_id": "%s"}\n')


class Malformed:
    """A request whose bytes are not the message the method takes (answered INVALID_ARGUMENT)."""

    def __init__(self, message: str, reason: str) -> None:
        self.message = message
        self.reason = reason


def decoder(message_class: Any) -> Callable[[bytes], Any]:
    """Parse a request, keeping a failure as a value so it gets a clear status, not INTERNAL."""
    name = message_class.DESCRIPTOR.full_name

    def parse(data: bytes) -> Any:
        try:
            return message_class.FromString(data)
        except Exception as exc:  # DecodeError and friends: any bytes may arrive
            return Malformed(name, str(exc) or type(exc).__name__)

    return parse


def infer_response(request: pb.ModelInferRequest, req: oip.InferRequest,
                   prediction: Prediction) -> bytes:
    """Outputs as raw_output_contents (when inputs came raw, as Triton answers) or contents.

    An untrusted version's answer carries the same markers as REST's: trusted and forced.
    """
    parameters: dict[str, int | bool] = {"bits": prediction.bits}
    if not prediction.trusted:
        parameters.update(trusted=False, forced=prediction.forced)
    raw = any(requested.binary for requested in req.outputs)
    return grpc_codec.infer_response(oip.MODEL_NAME, prediction.version, request.id, parameters,
                                     oip.outputs(req, prediction.sums, prediction.bits), raw)


def _check_name(name: str) -> None:
    """This server holds one model; any other name is unknown (NOT_FOUND)."""
    if name != oip.MODEL_NAME:
        raise V2Error(f"unknown model {name!r}; this server serves {oip.MODEL_NAME!r}", 404)


class InferenceServicer:
    """inference.GRPCInferenceService over the app's Services (the same core as REST)."""

    def __init__(self, services: Services, server_version: str) -> None:
        self.services = services
        self.runtime = services.runtime
        self.server_version = server_version
        self.clock = Clock()
        self.access_log = services.settings.access_log

    def admin(self, context: Any) -> bool:
        """Whether the call carries the admin token (authorization metadata); wrong: refused."""
        supplied = next((value for key, value in context.invocation_metadata()
                         if key == AUTHORIZATION_KEY), None)
        if supplied is None:
            return False
        check_admin(self.services.settings.admin_token, str(supplied))
        return True

    def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        """Always live while it answers."""
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        """Ready while a model is loaded, as GET /v2/health/ready."""
        return pb.ServerReadyResponse(ready=self.services.holder.current() is not None)

    def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        """Whether the active model (or the version named) can answer; unknown ones NOT_FOUND."""
        _check_name(request.name)
        if not request.version:
            return pb.ModelReadyResponse(ready=self.services.holder.current() is not None)
        try:
            self.runtime.model(request.version, admin=self.admin(context))
        except APIError as exc:
            if exc.status == 404:
                raise
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    def ServerMetadata(self, request: pb.ServerMetadataRequest,
                       context: Any) -> pb.ServerMetadataResponse:
        """Name and version; the REST extensions have no gRPC methods here, so none are listed."""
        return pb.ServerMetadataResponse(name=oip.MODEL_NAME, version=self.server_version)

    def ModelMetadata(self, request: pb.ModelMetadataRequest,
                      context: Any) -> pb.ModelMetadataResponse:
        """Versions, platform and tensors, as GET /v2/models/rnnadd."""
        _check_name(request.name)
        self.runtime.model(request.version or None)
        store = self.services.store
        listed, _ = store.page(len(store.version_ids()) or 1)  # cached summaries, as REST
        versions = [r["version"] for r in listed if "error" not in r]
        return pb.ModelMetadataResponse(**oip.model_metadata(versions))

    def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> bytes:
        """Decode as REST does, predict through the inference core, encode."""
        _check_name(request.model_name)
        runtime, version, admin = self.runtime, request.model_version or None, False
        if version is not None:  # unknown: NOT_FOUND, untrusted: PERMISSION_DENIED, first
            admin = self.admin(context)
            runtime.model(version, admin=admin)
        req = common_request(request, runtime.max_batch)
        if req is None:
            header, binary = infer_header(request)
            req = oip.parse_infer_header(header, binary, runtime.max_batch, runtime.max_digits,
                                         binary_output=bool(request.raw_input_contents))
        prediction = runtime.predict(req.a, req.b, req.parameters.get("bits", AUTO), version,
                                     name=lambda i, j: f"input {oip.INPUT_NAMES[j]!r}[{i}]",
                                     admin=admin)
        return infer_response(request, req, prediction)

    def observed(self, method: str, behavior: Callable[[Any, Any], Any]) -> Callable:
        """Wrap one method: request id, errors to status codes, metrics and the access log."""
        path = f"/{SERVICE}/{method}"

        def handler(request: Any, context: Any) -> Any:
            started = time.perf_counter()
            supplied = next((value for key, value in context.invocation_metadata()
                             if key == REQUEST_ID_KEY), None)
            rid = request_id(supplied if isinstance(supplied, str) else None)
            context.set_trailing_metadata(((REQUEST_ID_KEY, rid),))
            try:
                if isinstance(request, Malformed):
                    raise V2Error(f"the request is not a valid {request.message} message: "
                                  f"{request.reason}")
                response = behavior(request, context)
            except APIError as exc:
                error = exc
            except Exception as exc:  # a bug: logged with its traceback, the caller gets the id
                error = errors.unexpected(exc, {"REQUEST_METHOD": "POST", "PATH_INFO": path,
                                                "rnnadd.request_id": rid})
                error.detail = f"{error.detail} (request_id {rid})"
            else:
                self.record(path, "OK", started, rid)
                return response
            code = errors.grpc_code(error)
            self.record(path, code, started, rid)
            context.abort(grpc.StatusCode[code], error.detail)

        return handler

    def record(self, path: str, code: str, started: float, rid: str) -> None:
        """Count and log one finished call, as reqlog does for HTTP."""
        seconds = time.perf_counter() - started
        self.services.metrics.observe_request(path, "POST", code, seconds, protocol="grpc")
        if self.access_log:
            sys.stderr.write(LINE % (self.clock.stamp(time.time()), path, code,
                                     seconds * 1000.0, rid))

    def handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        """Every method by name, with decoders that turn undecodable bytes into a clear error.

        For Server.add_registered_method_handlers: methods known when the server starts are
        matched by the gRPC core itself, not by a Python lookup per call.
        """
        methods = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods
        handlers = {}
        for method in methods:
            request_class = getattr(pb, method.input_type.name)
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                self.observed(method.name, getattr(self, method.name)),
                request_deserializer=decoder(request_class),
                # ModelInfer answers bytes it wrote itself (grpc_codec); the rest, messages.
                response_serializer=None if method.name == "ModelInfer"
                else lambda message: message.SerializeToString(),
            )
        return handlers
