"""deploy/kubernetes/ checked offline: every core manifest against the OpenAPI schemas of a named
Kubernetes release in strict mode (kubernetes-validate; an unknown or misspelt field fails), the
security and wiring the deployment promises, and the KServe InferenceService against a schema of
the v1beta1 fields it uses.

The KServe schema below was written from the InferenceService CRD of kserve/kserve (commit
aaac4e294dae, config/crd/full/serving.kserve.io_inferenceservices.yaml): the predictor's own fields
with their types, and for the embedded Kubernetes types (Container, PodSecurityContext, Volume,
ObjectMeta) the same strict core schemas as above, which is what the CRD embeds.
"""

from __future__ import annotations

import copy
import json
import os
import re
import secrets
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from jsonschema import Draft202012Validator

from tests.kubelet import Cluster, Pod, Probe, expand, run_to_completion

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.33.0"
CORE = sorted([*K8S.glob("*.yaml"), *(K8S / "jobs").glob("*.yaml")])
KSERVE = K8S / "kserve" / "inferenceservice.yaml"
KSERVE_GRPC = K8S / "kserve" / "inferenceservice-grpc.yaml"
IMAGE_UID = 10001  # the rnnadd user of the Dockerfile
MODEL_DIR = "/var/lib/rnnadd/models"


def _load(path: Path) -> list[dict[str, Any]]:
    """The documents of a manifest file."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _by_kind() -> dict[str, dict[str, Any]]:
    """Every core document by kind (each kind appears once)."""
    docs: dict[str, dict[str, Any]] = {}
    for path in CORE:
        for doc in _load(path):
            assert doc["kind"] not in docs, f"two {doc['kind']} documents"
            docs[doc["kind"]] = doc
    return docs


def _validate(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


# --- every core manifest, strictly --------------------------------------------------------------


def test_the_manifests_are_all_there() -> None:
    kinds = set(_by_kind())
    assert kinds == {"ConfigMap", "PersistentVolumeClaim", "Deployment", "Service",
                     "HorizontalPodAutoscaler", "PodDisruptionBudget", "Job"}


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_is_valid_for_the_named_kubernetes_version(path: Path) -> None:
    docs = _load(path)
    assert docs
    for doc in docs:
        _validate(doc)


@pytest.mark.parametrize(("where", "typo"), [
    (("spec", "template", "spec", "containers", 0), "readinesProbe"),
    (("spec", "template", "spec", "securityContext"), "runAsNonroot"),
    (("spec",), "replica"),
])
def test_strict_validation_catches_a_misspelt_field(where: tuple, typo: str) -> None:
    deployment = copy.deepcopy(_by_kind()["Deployment"])
    _validate(deployment)
    node: Any = deployment
    for key in where:
        node = node[key]
    node[typo] = node.get(typo.lower(), 1)
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(deployment)


# --- what the deployment promises ---------------------------------------------------------------


def _pod_specs() -> dict[str, dict[str, Any]]:
    docs = _by_kind()
    return {kind: docs[kind]["spec"]["template"]["spec"] for kind in ("Deployment", "Job")}


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_pods_are_locked_down(kind: str) -> None:
    pod = _pod_specs()[kind]
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == IMAGE_UID
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    resources = container["resources"]
    assert set(resources["requests"]) >= {"cpu", "memory"}
    assert set(resources["limits"]) >= {"cpu", "memory"}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts[MODEL_DIR] == "models" and "/tmp" in mounts
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] == "rnnadd-models"
    assert {"configMapRef": {"name": "rnnadd-config"}} in container["envFrom"]


def test_the_image_runs_as_the_uid_the_manifests_require() -> None:
    assert f"--uid {IMAGE_UID}" in (ROOT / "Dockerfile").read_text()


def test_deployment_replicas_and_probes() -> None:
    deployment = _by_kind()["Deployment"]
    assert deployment["spec"]["replicas"] >= 2
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["livenessProbe"]["grpc"] == {"port": 8081, "service": "liveness"}
    assert container["readinessProbe"]["grpc"] == {"port": 8081, "service": "readiness"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8000, "grpc": 8081}


def test_the_service_names_its_grpc_port_with_app_protocol() -> None:
    ports = {p["name"]: p for p in _by_kind()["Service"]["spec"]["ports"]}
    assert ports["grpc"]["appProtocol"] == "kubernetes.io/h2c"
    assert ports["grpc"]["targetPort"] == "grpc" and ports["http"]["targetPort"] == "http"


def test_the_admin_token_comes_from_a_secret_that_is_not_in_the_repo() -> None:
    for path in K8S.rglob("*.yaml"):
        assert all(doc.get("kind") != "Secret" for doc in _load(path)), path
    (container,) = _pod_specs()["Deployment"]["containers"]
    env = {e["name"]: e for e in container.get("env", [])}
    ref = env["RNNADD_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == "rnnadd-admin" and ref["key"] == "token"
    configmap = _by_kind()["ConfigMap"]["data"]
    assert "RNNADD_ADMIN_TOKEN" not in configmap
    assert all(k.startswith("RNNADD_") or k == "WEB_CONCURRENCY" for k in configmap)


def test_models_live_on_a_read_write_many_claim() -> None:
    assert _by_kind()["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]


def test_service_hpa_and_pdb_point_at_the_deployment() -> None:
    docs = _by_kind()
    deployment = docs["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert docs["Service"]["spec"]["selector"].items() <= labels.items()
    assert docs["Service"]["spec"]["ports"][0]["targetPort"] == "http"
    assert docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    target = docs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert docs["HorizontalPodAutoscaler"]["spec"]["minReplicas"] >= 2


def test_the_training_job_trains_into_the_shared_volume_under_the_training_lock() -> None:
    job = _by_kind()["Job"]
    assert "generateName" in job["metadata"]  # `kubectl create` makes a new Job each time
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert "command" not in container  # the image's entrypoint still seeds an empty volume
    shell, flag, script = container["args"]
    assert (shell, flag) == ("sh", "-c")
    words = expand(script, kubelet_env(container)).split()
    start = words.index("flock")
    assert words[start:start + 4] == ["flock", "--nonblock", "--conflict-exit-code", "75"]
    assert words[start + 4] == f"{MODEL_DIR}/.train.lock"
    assert words[start + 5:start + 8] == ["python", "-m", "training.train"]
    assert words[words.index("--model-dir") + 1] == MODEL_DIR
    # the gate's width and the versions kept come from the service's Settings, as the pods'
    assert words[words.index("--max-bits") + 1] == '"$1"'
    assert words[words.index("--keep-models") + 1] == '"$2"'
    assert "s.max_bits, s.model_history" in script
    assert container["image"] == _pod_specs()["Deployment"]["containers"][0]["image"]


# --- what a kubelet makes of the containers (tests/kubelet.py) ---------------------------------

# The cases of Kubernetes' own expansion tests (third_party/forked/golang/expansion).
EXPANSIONS = [
    ("$(VAR_A)", "A"), ("___$(VAR_B)___", "___B___"), ("$(VAR_A)-$(VAR_A)", "A-A"),
    ("$(VAR_A)-1", "A-1"), ("$(VAR_A)_$(VAR_B)_$(VAR_C)", "A_B_C"),
    ("$$(VAR_B)_$(VAR_A)", "$(VAR_B)_A"), ("$$(VAR_B)$(VAR_A)", "$(VAR_B)A"),
    ("f000-$$VAR_A", "f000-$VAR_A"), ("foo\\$(VAR_C)bar", "foo\\Cbar"),
    ("foo\\\\$(VAR_C)bar", "foo\\\\Cbar"), ("$(VAR_EMPTY)", ""), ("$(VAR_A", "$(VAR_A"),
    ("$(VAR_DNE)", "$(VAR_DNE)"), ("$(VAR_A)$(VAR_DNE)", "A$(VAR_DNE)"), ("$()", "$()"),
    ("$(", "$("), ("$", "$"), ("$$", "$"), ("$$$$", "$$"), ("$$$(VAR_A)", "$A"),
    ("$VAR_A", "$VAR_A"), ("${VAR_A}", "${VAR_A}"), ("$(VAR_A)$", "A$"),
    ("$(VAR_REF)", "$(VAR_A)"), ("(VAR_A)", "(VAR_A)"), ("$(VAR_A)$(VAR_B", "A$(VAR_B"),
]


@pytest.mark.parametrize(("text", "expected"), EXPANSIONS)
def test_expansion_follows_kubernetes_rules(text: str, expected: str) -> None:
    context = {"VAR_A": "A", "VAR_B": "B", "VAR_C": "C", "VAR_EMPTY": "", "VAR_REF": "$(VAR_A)"}
    assert expand(text, context) == expected


def kubelet_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's variables from the shipped ConfigMap and a stand-in admin Secret."""
    cluster = Cluster(configmaps={"rnnadd-config": _by_kind()["ConfigMap"].get("data") or {}},
                      secrets={"rnnadd-admin": {"token": "t0ken"}})
    return cluster.environment(container)


CONTAINERS = {"Deployment": lambda: _pod_specs()["Deployment"]["containers"][0],
              "Job": lambda: _pod_specs()["Job"]["containers"][0],
              "InferenceService": lambda: _kserve()["spec"]["predictor"]["containers"][0]}


@pytest.mark.parametrize("kind", sorted(CONTAINERS))
def test_no_variable_reference_is_left_undefined(kind: str) -> None:
    """Kubernetes passes an undefined $(VAR) on as literal text: a trainer then exits 2."""
    container = CONTAINERS[kind]()
    env = kubelet_env(container)
    for part in [*container.get("command", []), *container.get("args", [])]:
        names = re.findall(r"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_]*)\)", part.replace("$$", ""))
        undefined = [name for name in names if name not in env]
        assert not undefined, f"{kind}: $({undefined[0]}) is defined by no variable"


# --- KServe -------------------------------------------------------------------------------------

CORE_DEFINITIONS = (Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
                    / f"v{KUBERNETES_VERSION}-local-strict" / "_definitions.json")
# Every property of v1beta1 PredictorSpec in the CRD (the inline PodSpec, ComponentExtensionSpec
# and the model-format members); the ones this manifest uses are typed in PREDICTOR below.
PREDICTOR_FIELDS = {
    "activeDeadlineSeconds", "affinity", "annotations", "autoScaling",
    "automountServiceAccountToken", "batcher", "canaryTrafficPercent", "containerConcurrency",
    "containers", "deploymentStrategy", "dnsConfig", "dnsPolicy", "enableServiceLinks",
    "hostAliases", "hostIPC", "hostNetwork", "hostPID", "hostUsers", "hostname",
    "hostnameOverride", "huggingface", "imagePullSecrets", "initContainers", "labels",
    "lightgbm", "logger", "maxReplicas", "minReplicas", "model", "name", "nodeName",
    "nodeSelector", "onnx", "os", "overhead", "paddle", "pmml", "preemptionPolicy", "priority",
    "priorityClassName", "pytorch", "readinessGates", "resourceClaims", "resources",
    "restartPolicy", "runtimeClassName", "scaleMetric", "scaleMetricType", "scaleTarget",
    "schedulerName", "schedulingGates", "securityContext", "serviceAccount",
    "serviceAccountName", "setHostnameAsFQDN", "shareProcessNamespace", "sklearn",
    "storageContainerName", "storageUris", "subdomain", "tensorflow",
    "terminationGracePeriodSeconds", "timeout", "tolerations", "topologySpreadConstraints",
    "triton", "volumes", "workerSpec", "xgboost",
}
PREDICTOR = {
    "type": "object",
    "required": ["containers"],
    "additionalProperties": False,
    "properties": {
        **{name: {} for name in PREDICTOR_FIELDS},
        "minReplicas": {"type": "integer", "minimum": 0},
        "maxReplicas": {"type": "integer", "minimum": 1},
        "scaleMetric": {"enum": ["cpu", "memory", "concurrency", "rps"]},
        "scaleTarget": {"type": "integer", "minimum": 1},
        "timeout": {"type": "integer", "minimum": 1},
        "automountServiceAccountToken": {"type": "boolean"},
        "terminationGracePeriodSeconds": {"type": "integer", "minimum": 0},
        "containers": {"type": "array", "minItems": 1,
                       "items": {"$ref": "#/$defs/io.k8s.api.core.v1.Container"}},
        "securityContext": {"$ref": "#/$defs/io.k8s.api.core.v1.PodSecurityContext"},
        "volumes": {"type": "array",
                    "items": {"$ref": "#/$defs/io.k8s.api.core.v1.Volume"}},
    },
}
INFERENCE_SERVICE = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "serving.kserve.io/v1beta1"},
        "kind": {"const": "InferenceService"},
        "metadata": {"$ref": "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"},
        "spec": {
            "type": "object",
            "required": ["predictor"],
            "additionalProperties": False,
            "properties": {"predictor": PREDICTOR, "transformer": {"type": "object"},
                           "explainer": {"type": "object"}, "canary": {"type": "object"}},
        },
    },
}


def _kserve_validator() -> Draft202012Validator:
    """INFERENCE_SERVICE, its references resolved in the strict core definitions."""
    definitions = json.loads(CORE_DEFINITIONS.read_text())["$defs"]
    return Draft202012Validator({**INFERENCE_SERVICE, "$defs": definitions})


def _kserve(path: Path = KSERVE) -> dict[str, Any]:
    (doc,) = _load(path)
    return doc


@pytest.mark.parametrize("path", [KSERVE, KSERVE_GRPC], ids=lambda p: p.name)
def test_inference_service_matches_the_v1beta1_schema(path: Path) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}"
              for e in _kserve_validator().iter_errors(_kserve(path))]
    assert not errors, errors


def test_the_grpc_inference_service_differs_only_in_protocol_port_and_probes() -> None:
    rest, grpc = _kserve(), _kserve(KSERVE_GRPC)
    (container,) = grpc["spec"]["predictor"]["containers"]
    assert container["ports"] == [{"name": "h2c", "containerPort": 8081, "protocol": "TCP"}]
    assert {e["name"]: e.get("value") for e in container["env"]}["PROTOCOL"] == "grpc-v2"
    assert container["readinessProbe"]["grpc"] == {"port": 8081, "service": "readiness"}
    assert container["livenessProbe"]["grpc"] == {"port": 8081, "service": "liveness"}
    for doc in (rest, grpc):
        (c,) = doc["spec"]["predictor"]["containers"]
        for key in ("ports", "livenessProbe", "readinessProbe"):
            c.pop(key)
        c["env"] = [e for e in c["env"] if e["name"] != "PROTOCOL"]
        doc["metadata"].pop("name")
    assert rest == grpc


@pytest.mark.parametrize(("where", "typo"), [
    (("spec", "predictor"), "minReplica"),
    (("spec", "predictor", "containers", 0), "readinesProbe"),
    (("spec",), "predicter"),
])
def test_inference_service_schema_catches_a_misspelt_field(where: tuple, typo: str) -> None:
    doc = _kserve()
    node: Any = doc
    for key in where:
        node = node[key]
    node[typo] = 1
    assert list(_kserve_validator().iter_errors(doc))


def test_inference_service_is_a_v2_custom_predictor_of_the_same_image() -> None:
    predictor = _kserve()["spec"]["predictor"]
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container"  # the container KServe reads PROTOCOL from
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["PROTOCOL"] == "v2"
    assert container["ports"][0]["containerPort"] == 8000
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/models/rnnadd/ready"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert predictor["securityContext"]["runAsNonRoot"] is True
    assert predictor["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    deployment = _pod_specs()["Deployment"]["containers"][0]
    assert container["image"] == deployment["image"]
    volumes = {v["name"]: v for v in predictor["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] == "rnnadd-models"


def test_the_configmap_and_compose_only_pass_settings_the_service_knows() -> None:
    from service.settings import describe

    known = {name for name, _, _ in describe()}
    configmap = _by_kind()["ConfigMap"].get("data") or {}
    assert set(configmap) <= known, set(configmap) - known
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    passed = compose["services"]["api"]["environment"]
    assert all("=" not in item for item in passed), "compose restates a default"
    assert set(passed) <= known, set(passed) - known
    assert compose["services"]["proxy"]["environment"] == ["RNNADD_MAX_BODY"]


# --- the manifests' containers, run in Docker as a kubelet runs them ---------------------------

K8S_IMAGE = "rnnadd:k8stest"
READY_TIMEOUT = 120.0


def _docker_or_skip() -> None:
    """Skip without Docker, except where it is required (CI, REQUIRE_DOCKER=1): then fail."""
    from tests.test_container import _docker_problem, _docker_required

    problem = _docker_problem()
    if problem is None:
        return
    if _docker_required():
        pytest.fail(f"needs Docker: {problem} (required because CI=true or REQUIRE_DOCKER=1)")
    pytest.skip(f"needs Docker: {problem}; set REQUIRE_DOCKER=1 to make this a failure")


def _build_image() -> None:
    base = os.environ.get("RNNADD_PYTHON_IMAGE") or os.environ.get("PYTHON_IMAGE")
    cmd = ["docker", "build", "-q", "-t", K8S_IMAGE, *(["--build-arg", f"PYTHON_IMAGE={base}"]
                                                      if base else []), str(ROOT)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, check=False)
    assert result.returncode == 0, result.stderr[-3000:]


def _get(url: str, token: str | None = None, body: dict | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def _eventually(url: str, key: str, value: str, **kwargs: Any) -> tuple[int, dict]:
    """GET (or POST a body) until answer[key] == value, for up to 5 s: a pod's workers each
    follow CURRENT on their own within RNNADD_RELOAD_INTERVAL."""
    until = time.monotonic() + 5
    status, answer = _get(url, **kwargs)
    while time.monotonic() < until and answer.get(key) != value:
        time.sleep(0.2)
        status, answer = _get(url, **kwargs)
    return status, answer


def _served(pods: list[Pod]) -> set[str]:
    return {_get(pod.url() + "/readyz")[1]["model_version"] for pod in pods}


@pytest.mark.container
def test_the_deployment_serves_and_the_training_job_activates_what_it_serves() -> None:
    """The shipped manifests as a kubelet runs them: ConfigMap and Secret, securityContext,
    volumes and probes. The Deployment's pods become ready and answer; the training Job ends
    with a new active version on the shared claim, which every pod then serves."""
    _docker_or_skip()
    _build_image()
    docs = _by_kind()
    token = secrets.token_urlsafe(24)
    cluster = Cluster(configmaps={"rnnadd-config": docs["ConfigMap"].get("data") or {}},
                      secrets={"rnnadd-admin": {"token": token}},
                      images={"rnnadd:latest": K8S_IMAGE})
    deployment = docs["Deployment"]
    pods = [Pod(cluster, deployment["spec"]["template"]["spec"], f"{cluster.prefix}-api-{i}")
            for i in range(deployment["spec"]["replicas"])]
    try:
        for pod in pods:
            pod.start()
        for pod in pods:
            assert pod.ready.wait(READY_TIMEOUT), (pod.events, _logs(pod.name))
        bundled = (ROOT / "models" / "CURRENT").read_text().strip()
        assert _served(pods) == {bundled}
        for pod in pods:
            status, answer = _get(pod.url() + "/v1/predict", body={"a": 3, "b": 5})
            assert (status, answer["decimal"]) == (200, 8), answer
            # The Secret's token reached the app: admin endpoints are on (403 without it).
            assert _get(pod.url() + "/v1/retrain", token="wrong", body={})[0] == 401
        code, log = run_to_completion(cluster, docs["Job"], f"{cluster.prefix}-train")
        assert code == 0, log[-3000:]
        deadline = time.monotonic() + 5  # RNNADD_RELOAD_INTERVAL (1 s) plus a margin
        served = _served(pods)
        while time.monotonic() < deadline and (len(served) > 1 or served == {bundled}):
            time.sleep(0.2)
            served = _served(pods)
        assert len(served) == 1 and served != {bundled}, (served, log[-3000:])
        (version,) = served
        for pod in pods:
            # each pod's workers follow CURRENT on their own within RNNADD_RELOAD_INTERVAL:
            # one worker answering the new version does not mean the other already does
            status, model = _eventually(pod.url() + "/v1/model", "version", version)
            assert status == 200 and model["version"] == version, model
            assert model["certified"] is True, model["certificate"]
            status, answer = _eventually(pod.url() + "/v1/predict", "model_version", version,
                                         body={"a": 2**40, "b": 2**40 - 1})
            assert status == 200 and answer["decimal"] == 2**41 - 1, answer
            assert answer["model_version"] == version
        assert all(pod.ready.is_set() and pod.restarts == 0 for pod in pods), [
            (pod.name, pod.events) for pod in pods]
    finally:
        stoppers = [threading.Thread(target=pod.stop) for pod in pods]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join(120)
        cluster.remove()


def _logs(name: str) -> str:
    result = subprocess.run(["docker", "logs", "--tail", "40", name], capture_output=True,
                            text=True, timeout=30, check=False)
    return result.stdout[-3000:] + result.stderr[-3000:]


def test_the_kubelets_grpc_probe_asks_the_health_service() -> None:
    """Probe's grpc handler against a real grpc.health.v1 server (grpcio-health-checking)."""
    from concurrent import futures

    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        probe = Probe({"grpc": {"port": "grpc"}, "timeoutSeconds": 2}, {"grpc": port})
        named = Probe({"grpc": {"port": port, "service": "rnnadd"}, "timeoutSeconds": 2}, {})
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        assert probe.check("", lambda p: p)
        assert not named.check("", lambda p: p)  # an unknown service is NOT_FOUND: a failure
        servicer.set("rnnadd", health_pb2.HealthCheckResponse.SERVING)
        assert named.check("", lambda p: p)
        servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert not probe.check("", lambda p: p)
    finally:
        server.stop(0)
    assert not probe.check("", lambda p: p)  # nothing listens: a failure, not a hang
