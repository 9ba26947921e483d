"""Run deploy/kubernetes/'s containers in Docker the way a kubelet runs them, for tests.

Offline schema checks cannot see what only happens when a pod starts: a `$(VAR)` that no
variable defines stays literal text, a volume the user cannot write, a probe on the wrong port.
This module builds each container as the kubelet would and runs it with `docker run`:

- the environment from `envFrom` (ConfigMaps, Secrets) then `env` in order (values, ConfigMap and
  Secret keys, optional or not), each value expanded with the variables defined before it;
- `$(VAR)` in command and args expanded by Kubernetes' rules (`expand`, exactly as
  k8s.io/kubernetes/third_party/forked/golang/expansion): `$$` is a literal `$`, a reference to
  an undefined variable is left as it is; command replaces the image's ENTRYPOINT, args its CMD;
- the securityContext as Docker flags: user and group (`runAsUser`, `runAsGroup`, `fsGroup` as
  a supplementary group), `runAsNonRoot` refused for uid 0, `readOnlyRootFilesystem`, dropped
  and added capabilities, `allowPrivilegeEscalation: false` (no-new-privileges), seccomp;
- resources.limits (memory, cpu), and volumes: a PersistentVolumeClaim is a named Docker volume
  shared by every pod that claims it, an emptyDir an anonymous volume (tmpfs for medium Memory);
- container ports published on 127.0.0.1 (Docker picks the host port), and the startup,
  liveness and readiness probes (httpGet, tcpSocket, exec and grpc, the last with
  grpcio-health-checking's client) with their periods, timeouts and thresholds; a failed
  liveness probe restarts the container as restartPolicy Always does.

Not modelled: scheduling, the API server, Services (tests reach each pod directly), the
KUBERNETES_* variables of the default Service, fsGroup's chown of volumes (Docker gives a new
named volume the ownership of the image's directory instead).
"""

from __future__ import annotations

import contextlib
import re
import secrets
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

OPERATOR, OPENER, CLOSER = "$", "(", ")"
QUANTITY = re.compile(r"([0-9.]+)([A-Za-z]*)")
BINARY = {"": 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40,
          "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "m": 10**-3}


class PodError(RuntimeError):
    """A pod the kubelet would not start (CreateContainerConfigError and the like)."""


# --- Kubernetes' $(VAR) expansion ------------------------------------------------------------


def _read_variable(rest: str) -> tuple[str, bool, int]:
    """After a `$`: (text or name, whether it is a reference, characters consumed)."""
    if rest[0] == OPERATOR:  # $$ is an escaped $
        return OPERATOR, False, 1
    if rest[0] == OPENER:
        closing = rest.find(CLOSER, 1)
        if closing != -1:
            return rest[1:closing], True, closing + 1
        return OPERATOR + OPENER, False, 1  # an unclosed $( is literal
    return OPERATOR + rest[0], False, 1  # $x is literal


def expand(text: str, *contexts: Mapping[str, str]) -> str:
    """`text` with `$(NAME)` replaced from the first context that defines NAME."""

    def lookup(name: str) -> str:
        for context in contexts:
            if name in context:
                return context[name]
        return f"{OPERATOR}{OPENER}{name}{CLOSER}"  # undefined: left as written

    out, checkpoint, cursor = [], 0, 0
    while cursor < len(text):
        if text[cursor] == OPERATOR and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            read, is_reference, advance = _read_variable(text[cursor + 1:])
            out.append(lookup(read) if is_reference else read)
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    return "".join(out) + text[checkpoint:]


# --- the container as the kubelet builds it ---------------------------------------------------


@dataclass
class Cluster:
    """What the API server would hold: ConfigMaps and Secrets by name, and claimed volumes."""

    configmaps: dict[str, dict[str, str]] = field(default_factory=dict)
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    images: dict[str, str] = field(default_factory=dict)  # manifest image -> local tag
    prefix: str = field(default_factory=lambda: f"kubelet{secrets.token_hex(4)}")
    volumes: set[str] = field(default_factory=set)

    def _source(self, kind: str, name: str, optional: bool) -> dict[str, str] | None:
        store = self.configmaps if kind == "configMap" else self.secrets
        if name in store:
            return store[name]
        if optional:
            return None
        raise PodError(f"{kind} {name!r} not found")

    def environment(self, container: dict[str, Any]) -> dict[str, str]:
        """The container's variables: envFrom first, then env, each expanded in order."""
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            for kind in ("configMap", "secret"):
                ref = source.get(f"{kind}Ref")
                if ref is None:
                    continue
                data = self._source(kind, ref["name"], ref.get("optional", False)) or {}
                for key, value in data.items():
                    env[source.get("prefix", "") + key] = value
        for var in container.get("env", []):
            if "valueFrom" not in var:
                env[var["name"]] = expand(var.get("value", ""), env)
                continue
            for kind in ("configMap", "secret"):
                ref = var["valueFrom"].get(f"{kind}KeyRef")
                if ref is None:
                    continue
                optional = ref.get("optional", False)
                data = self._source(kind, ref["name"], optional)
                if data is None or (ref["key"] not in data and optional):
                    break
                if ref["key"] not in data:
                    raise PodError(f"key {ref['key']!r} not in {kind} {ref['name']!r}")
                env[var["name"]] = data[ref["key"]]
        return env

    def claim(self, name: str) -> str:
        """The Docker volume behind a PersistentVolumeClaim (one per claim, shared)."""
        volume = f"{self.prefix}-{name}"
        if volume not in self.volumes:
            _docker("volume", "create", volume)
            self.volumes.add(volume)
        return volume

    def docker_args(self, pod: dict[str, Any], container: dict[str, Any],
                    name: str) -> list[str]:
        """`docker run` arguments (without `run`) for one container of a pod spec."""
        env = self.environment(container)
        pod_security = pod.get("securityContext", {})
        security = {**pod_security, **container.get("securityContext", {})}
        args = ["--detach", "--name", name, "--label", f"io.rnnadd.kubelet={self.prefix}"]
        uid, gid = security.get("runAsUser"), security.get("runAsGroup")
        if uid is not None:
            args += ["--user", f"{uid}:{gid}" if gid is not None else str(uid)]
        if security.get("runAsNonRoot") and uid is None:
            uid = int(_docker("image", "inspect", "-f", "{{.Config.User}}",
                              self.image(container)).strip().split(":")[0] or 0)
        if security.get("runAsNonRoot") and uid == 0:
            raise PodError("container has runAsNonRoot and image will run as root")
        for group in [*pod_security.get("supplementalGroups", []),
                      *([pod_security["fsGroup"]] if "fsGroup" in pod_security else [])]:
            args += ["--group-add", str(group)]
        if security.get("readOnlyRootFilesystem"):
            args.append("--read-only")
        capabilities = security.get("capabilities", {})
        args += [f"--cap-drop={cap}" for cap in capabilities.get("drop", [])]
        args += [f"--cap-add={cap}" for cap in capabilities.get("add", [])]
        if security.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges:true"]
        seccomp = security.get("seccompProfile", {}).get("type", "RuntimeDefault")
        if seccomp == "Unconfined":
            args += ["--security-opt", "seccomp=unconfined"]
        limits = container.get("resources", {}).get("limits", {})
        if "memory" in limits:
            args += ["--memory", str(int(quantity(limits["memory"])))]
        if "cpu" in limits:
            args += ["--cpus", f"{quantity(limits['cpu']):g}"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for mount in container.get("volumeMounts", []):
            args += self._mount(volumes[mount["name"]], mount)
        for port in container.get("ports", []):
            args += ["--publish", f"127.0.0.1::{port['containerPort']}/"
                                  f"{port.get('protocol', 'TCP').lower()}"]
        for key, value in env.items():
            args += ["--env", f"{key}={value}"]
        command = [expand(part, env) for part in container.get("command", [])]
        run_args = [expand(part, env) for part in container.get("args", [])]
        if command:
            args += ["--entrypoint", command[0], self.image(container), *command[1:], *run_args]
        else:
            args += [self.image(container), *run_args]
        return args

    def image(self, container: dict[str, Any]) -> str:
        """The local image standing in for the manifest's."""
        return self.images.get(container["image"], container["image"])

    def _mount(self, volume: dict[str, Any], mount: dict[str, Any]) -> list[str]:
        read_only = ",readonly" if mount.get("readOnly") else ""
        path = mount["mountPath"]
        if "persistentVolumeClaim" in volume:
            claim = self.claim(volume["persistentVolumeClaim"]["claimName"])
            return ["--mount", f"type=volume,src={claim},dst={path}{read_only}"]
        if "emptyDir" in volume:
            empty = volume["emptyDir"] or {}
            if empty.get("medium") == "Memory":
                size = f",size={int(quantity(empty['sizeLimit']))}" if "sizeLimit" in empty else ""
                return ["--tmpfs", f"{path}:rw,nosuid,nodev,mode=1777{size}"]
            return ["--mount", f"type=volume,dst={path}{read_only}"]  # anonymous: the pod's own
        raise PodError(f"volume {volume['name']!r}: only persistentVolumeClaim and emptyDir")

    def remove(self) -> None:
        """Every container and volume this cluster made."""
        ids = _docker("ps", "-aq", "--filter", f"label=io.rnnadd.kubelet={self.prefix}").split()
        if ids:
            _docker("rm", "-f", "-v", *ids, check=False)
        for volume in self.volumes:
            _docker("volume", "rm", "-f", volume, check=False)


def quantity(text: str | int | float) -> float:
    """A Kubernetes quantity ("768Mi", "500m", "1") as a number."""
    match = QUANTITY.fullmatch(str(text))
    if match is None or match.group(2) not in BINARY:
        raise PodError(f"unsupported quantity {text!r}")
    return float(match.group(1)) * BINARY[match.group(2)]


def _docker(*args: str, check: bool = True, timeout: float = 120) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                            check=False)
    if check and result.returncode != 0:
        raise PodError(f"docker {' '.join(args[:3])} ...: {result.stderr.strip()[-1500:]}")
    return result.stdout


# --- probes -----------------------------------------------------------------------------------


@dataclass
class Probe:
    """One probe of a container, checked against its published ports."""

    spec: dict[str, Any]
    ports: dict[str, int]  # port name or number (as text) -> container port

    @property
    def period(self) -> float:
        return float(self.spec.get("periodSeconds", 10))

    @property
    def timeout(self) -> float:
        return float(self.spec.get("timeoutSeconds", 1))

    @property
    def failure_threshold(self) -> int:
        return int(self.spec.get("failureThreshold", 3))

    @property
    def success_threshold(self) -> int:
        return int(self.spec.get("successThreshold", 1))

    def _port(self, handler: dict[str, Any]) -> int:
        port = handler["port"]
        return self.ports[str(port)] if str(port) in self.ports else int(port)

    def check(self, container: str, host_port: Callable[[int], int]) -> bool:
        """One attempt, as the kubelet makes it; True on success."""
        if "httpGet" in self.spec:
            get = self.spec["httpGet"]
            url = f"http://127.0.0.1:{host_port(self._port(get))}{get.get('path', '/')}"
            request = urllib.request.Request(url, headers={
                h["name"]: h["value"] for h in get.get("httpHeaders", [])})
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return 200 <= response.status < 400
            except urllib.error.HTTPError as err:
                return 200 <= err.code < 400
            except OSError:
                return False
        if "grpc" in self.spec:
            return self._grpc(host_port(self._port(self.spec["grpc"])))
        if "tcpSocket" in self.spec:
            import socket

            try:
                socket.create_connection(("127.0.0.1", host_port(
                    self._port(self.spec["tcpSocket"]))), timeout=self.timeout).close()
                return True
            except OSError:
                return False
        if "exec" in self.spec:
            try:
                result = subprocess.run(["docker", "exec", container,
                                         *self.spec["exec"]["command"]],
                                        capture_output=True, timeout=self.timeout + 5)
            except subprocess.TimeoutExpired:
                return False
            return result.returncode == 0
        raise PodError(f"unknown probe {sorted(self.spec)}")

    def _grpc(self, port: int) -> bool:
        """The kubelet's gRPC probe: grpc.health.v1.Health/Check must answer SERVING."""
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        service = self.spec["grpc"].get("service", "")
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            try:
                answer = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=self.timeout)
            except grpc.RpcError:
                return False
        return answer.status == health_pb2.HealthCheckResponse.SERVING


# --- pods -------------------------------------------------------------------------------------


class Pod:
    """One pod of a single container, started, probed and restarted like the kubelet does."""

    def __init__(self, cluster: Cluster, spec: dict[str, Any], name: str) -> None:
        (self.container_spec,) = spec["containers"]
        self.cluster, self.spec, self.name = cluster, spec, name
        self.ports = {str(p["containerPort"]): p["containerPort"]
                      for p in self.container_spec.get("ports", [])}
        self.ports.update({p["name"]: p["containerPort"]
                           for p in self.container_spec.get("ports", []) if "name" in p})
        self.ready = threading.Event()
        self.stopping = threading.Event()
        self.restarts = 0
        self.events: list[str] = []
        self._host_ports: dict[int, int] = {}
        self._thread: threading.Thread | None = None

    def _probe(self, kind: str) -> Probe | None:
        spec = self.container_spec.get(kind)
        return Probe(spec, self.ports) if spec else None

    def host_port(self, container_port: int) -> int:
        """Where Docker published a container port on 127.0.0.1."""
        if container_port not in self._host_ports:
            text = _docker("port", self.name, f"{container_port}/tcp").split()[0]
            self._host_ports[container_port] = int(text.rsplit(":", 1)[1])
        return self._host_ports[container_port]

    def url(self, port: str | int = "http") -> str:
        """http://127.0.0.1:<published> for a named or numbered container port."""
        return f"http://127.0.0.1:{self.host_port(self.ports[str(port)])}"

    def start(self) -> None:
        """Create and start the container, then probe it in the background."""
        _docker("run", *self.cluster.docker_args(self.spec, self.container_spec, self.name))
        self._host_ports.clear()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def running(self) -> bool:
        return _docker("inspect", "-f", "{{.State.Running}}", self.name,
                       check=False).strip() == "true"

    def _watch(self) -> None:
        """Startup probe first, then liveness and readiness, each on its own period."""
        startup, liveness = self._probe("startupProbe"), self._probe("livenessProbe")
        readiness = self._probe("readinessProbe")
        started = startup is None
        failures = {"startupProbe": 0, "livenessProbe": 0, "readinessProbe": 0}
        successes = 0
        due = {kind: time.monotonic() + float((probe.spec if probe else {}).get(
            "initialDelaySeconds", 0)) for kind, probe in (("startupProbe", startup),
                                                           ("livenessProbe", liveness),
                                                           ("readinessProbe", readiness))}
        while not self.stopping.is_set():
            if not self.running():
                self.ready.clear()
                self.events.append("container exited")
                return
            now = time.monotonic()
            if not started and startup is not None and now >= due["startupProbe"]:
                due["startupProbe"] = now + startup.period
                if startup.check(self.name, self.host_port):
                    started = True
                else:
                    failures["startupProbe"] += 1
                    if failures["startupProbe"] >= startup.failure_threshold:
                        self._restart("startup probe failed")
                        return
            if started and liveness is not None and now >= due["livenessProbe"]:
                due["livenessProbe"] = now + liveness.period
                if liveness.check(self.name, self.host_port):
                    failures["livenessProbe"] = 0
                else:
                    failures["livenessProbe"] += 1
                    if failures["livenessProbe"] >= liveness.failure_threshold:
                        self._restart("liveness probe failed")
                        return
            if started and now >= due["readinessProbe"]:
                if readiness is None:
                    self.ready.set()
                else:
                    due["readinessProbe"] = now + readiness.period
                    if readiness.check(self.name, self.host_port):
                        failures["readinessProbe"], successes = 0, successes + 1
                        if successes >= readiness.success_threshold:
                            self.ready.set()
                    else:
                        successes = 0
                        failures["readinessProbe"] += 1
                        if failures["readinessProbe"] >= readiness.failure_threshold:
                            if self.ready.is_set():
                                self.events.append("became unready")
                            self.ready.clear()
            self.stopping.wait(0.1)

    def _restart(self, why: str) -> None:
        """restartPolicy Always: kill the container and start it again."""
        self.events.append(why)
        self.ready.clear()
        self.restarts += 1
        _docker("rm", "-f", self.name, check=False)
        self.start()

    def stop(self) -> None:
        """preStop hook, then SIGTERM with the pod's grace period, then remove the container."""
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(10)
        hook = self.container_spec.get("lifecycle", {}).get("preStop", {}).get("exec")
        grace = int(self.spec.get("terminationGracePeriodSeconds", 30))
        if hook and self.running():
            with contextlib.suppress(subprocess.TimeoutExpired):
                subprocess.run(["docker", "exec", self.name, *hook["command"]],
                               capture_output=True, timeout=grace)
        _docker("stop", "-t", str(grace), self.name, check=False, timeout=grace + 30)
        _docker("rm", "-f", "-v", self.name, check=False)


def run_to_completion(cluster: Cluster, job: dict[str, Any], name: str) -> tuple[int, str]:
    """A Job's pod (restartPolicy Never): its exit code and its log, within the deadline."""
    spec = job["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    deadline = float(job["spec"].get("activeDeadlineSeconds", 3600))
    _docker("run", *cluster.docker_args(spec, container, name))
    try:
        code = _docker("wait", name, timeout=deadline).strip()
    except subprocess.TimeoutExpired:
        _docker("kill", name, check=False)
        raise PodError(f"job {name} ran past activeDeadlineSeconds ({deadline:.0f} s)") from None
    result = subprocess.run(["docker", "logs", name], capture_output=True, text=True,
                            timeout=60, check=False)
    _docker("rm", "-f", "-v", name, check=False)
    return int(code), result.stdout + result.stderr
