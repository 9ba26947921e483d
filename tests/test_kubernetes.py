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
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from jsonschema import Draft202012Validator

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
    args = container["args"]
    assert "command" not in container  # the image's entrypoint still seeds an empty volume
    assert args[:2] == ["flock", "--nonblock"] and f"{MODEL_DIR}/.train.lock" in args
    start = args.index("python")
    assert args[start:start + 3] == ["python", "-m", "training.train"]
    assert args[args.index("--model-dir") + 1] == MODEL_DIR
    assert container["image"] == _pod_specs()["Deployment"]["containers"][0]["image"]


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
