"""The deployment manifests (deploy/k8s, deploy/kserve) against the Kubernetes and KServe API schemas and
against the real `ferry` binary.

No cluster runs here, so each manifest is loaded into the typed models of the `kubernetes` and `kserve`
packages (their generated OpenAPI classes), strictly: a key the schema does not have is an error, where the
clients' own deserializers drop it silently. Then every flag, port, path, health service and metric name the
manifests use is checked against Ferry itself: the containers' argument lists start a real ferry (only the
model repository and the ports are swapped for local ones), which must become ready; its gRPC health service
must answer the probes' service names; its metrics port must serve the scraped path and every metric the
autoscaling rules query.

Run by server/tests/deploy.rs, which passes the binary it built in FERRY_BINARY.
"""

import json
import os
import pathlib
import re
import subprocess
import threading
import urllib.request

import kserve.models
import kubernetes.client
import numpy as np
import pytest
import tritonclient.http as httpclient
import yaml
from grpc import insecure_channel

ROOT = pathlib.Path(os.environ.get("FERRY_REPO_ROOT", pathlib.Path(__file__).resolve().parents[2]))
K8S = ROOT / "deploy" / "k8s"
KSERVE = ROOT / "deploy" / "kserve"
EXAMPLES = ROOT / "examples" / "model_repository"

# (apiVersion, kind) -> the generated model class that holds it.
MODELS = {
    ("apps/v1", "Deployment"): "V1Deployment",
    ("v1", "Service"): "V1Service",
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("policy/v1", "PodDisruptionBudget"): "V1PodDisruptionBudget",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "V2HorizontalPodAutoscaler",
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"): "V1alpha1ClusterServingRuntime",
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "V1alpha1ServingRuntime",
    ("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceService",
}

PRIMITIVES = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "datetime": (str,),
    "date": (str,),
    "bytes": (str,),
    # A quantity ("2Gi", "500m", 2).
    "ResourceQuantity": (str, int, float),
    # IntOrString and other free-form values.
    "object": (object,),
}


class SchemaError(ValueError):
    """A manifest value the schema does not allow; the message names its path."""


def model_class(name):
    for module in (kserve.models, kubernetes.client):
        found = getattr(module, name, None)
        if found is not None:
            return found
    raise LookupError(f"no generated model named {name}")


def build(type_name, value, path):
    """`value` (parsed YAML) as an instance of the OpenAPI type `type_name`, refusing unknown keys and values
    of the wrong type; the generated constructors add their own checks (required fields, enums)."""
    if value is None:
        return None
    # Both generators' spellings: kubernetes writes List[X] and Dict[str, X], kserve list[X] and dict(str, X).
    if match := re.fullmatch(r"[Ll]ist\[(.+)\]", type_name):
        if not isinstance(value, list):
            raise SchemaError(f"{path}: expected a list, got {value!r}")
        return [build(match[1], item, f"{path}[{i}]") for i, item in enumerate(value)]
    if match := re.fullmatch(r"dict\(str, (.+)\)|Dict\[str, (.+)\]", type_name):
        if not isinstance(value, dict):
            raise SchemaError(f"{path}: expected a map, got {value!r}")
        inner = match[1] or match[2]
        return {key: build(inner, item, f"{path}.{key}") for key, item in value.items()}
    if type_name in PRIMITIVES:
        wanted = PRIMITIVES[type_name]
        if type_name != "bool" and isinstance(value, bool) and bool not in wanted:
            raise SchemaError(f"{path}: expected {type_name}, got {value!r}")
        if not isinstance(value, wanted):
            raise SchemaError(f"{path}: expected {type_name}, got {value!r}")
        return value
    cls = model_class(type_name)
    if not isinstance(value, dict):
        raise SchemaError(f"{path}: expected a {type_name} object, got {value!r}")
    by_json_name = {json_name: attr for attr, json_name in cls.attribute_map.items()}
    unknown = sorted(set(value) - set(by_json_name))
    if unknown:
        raise SchemaError(
            f"{path}: unknown field {unknown[0]!r} for {type_name} (known: {', '.join(sorted(by_json_name))})"
        )
    arguments = {
        by_json_name[key]: build(cls.openapi_types[by_json_name[key]], item, f"{path}.{key}")
        for key, item in value.items()
    }
    try:
        return cls(**arguments)
    except ValueError as error:
        raise SchemaError(f"{path}: {error}") from error


def load(document, source="manifest"):
    key = (document.get("apiVersion"), document.get("kind"))
    assert key in MODELS, f"{source}: no typed model for {key}"
    return build(MODELS[key], document, f"{source}:{key[1]}")


def documents(path):
    return [document for document in yaml.safe_load_all(path.read_text()) if document is not None]


def manifest_files():
    return sorted(K8S.glob("*.yaml")) + sorted(KSERVE.glob("*.yaml"))


def one(path, kind):
    found = [document for document in documents(path) if document["kind"] == kind]
    assert len(found) == 1, f"{path}: expected one {kind}"
    return found[0]


@pytest.mark.parametrize("path", manifest_files(), ids=lambda path: f"{path.parent.name}/{path.name}")
def test_every_manifest_loads_into_its_typed_model(path):
    loaded = documents(path)
    assert loaded, f"{path} holds no document"
    for document in loaded:
        if document["kind"] == "Kustomization":
            continue
        typed = load(document, path.name)
        assert typed.kind == document["kind"]
        assert typed.metadata.name == document["metadata"]["name"]


def test_a_misspelt_or_mistyped_field_is_refused():
    deployment = one(K8S / "deployment.yaml", "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    # The kubernetes client's own deserializer drops the unknown key without a word: the reason for build().
    lenient = kubernetes.client.ApiClient().deserialize(json.dumps(deployment), "V1Deployment", "application/json")
    assert lenient.spec.template.spec.containers[0].readiness_probe is None
    with pytest.raises(SchemaError, match=r"containers\[0\]: unknown field 'readinesProbe' for V1Container"):
        load(deployment)

    runtime = one(KSERVE / "servingruntime.yaml", "ClusterServingRuntime")
    runtime["spec"]["supportedModelFormat"] = runtime["spec"].pop("supportedModelFormats")
    with pytest.raises(SchemaError, match="unknown field 'supportedModelFormat' for V1alpha1ServingRuntimeSpec"):
        load(runtime)

    service = one(K8S / "service.yaml", "Service")
    service["spec"]["ports"][0]["port"] = "8001"
    with pytest.raises(SchemaError, match=r"ports\[0\]\.port: expected int"):
        load(service)

    pdb = one(K8S / "pdb.yaml", "PodDisruptionBudget")
    del pdb["metadata"]
    pdb["spec"]["selector"]["matchExpressions"] = [{"key": "app"}]
    # A required field missing: the generated model's own validation, reported with the path.
    with pytest.raises(SchemaError, match=r"matchExpressions\[0\]: .*V1LabelSelectorRequirement\noperator\n\s+Field required"):
        load(pdb)


def test_kustomization_lists_the_app_manifests():
    kustomization = documents(K8S / "kustomization.yaml")[0]
    assert set(kustomization) <= {"apiVersion", "kind", "labels", "resources"}, kustomization
    listed = set(kustomization["resources"])
    present = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    # The adapter's rules go into the adapter's configuration, not the app's namespace.
    assert listed == present - {"prometheus-adapter.yaml"}


def test_selectors_and_service_ports_match_the_deployment():
    deployment = load(one(K8S / "deployment.yaml", "Deployment"))
    pod_labels = deployment.spec.template.metadata.labels
    container = deployment.spec.template.spec.containers[0]
    ports = {port.name: port.container_port for port in container.ports}
    assert set(ports) == {"grpc", "http", "metrics"}
    assert deployment.spec.selector.match_labels.items() <= pod_labels.items()

    service = load(one(K8S / "service.yaml", "Service"))
    assert service.spec.selector.items() <= pod_labels.items()
    assert {port.name for port in service.spec.ports} == {"grpc", "http", "metrics"}
    for port in service.spec.ports:
        assert port.target_port == port.name and port.port == ports[port.name], port

    pdb = load(one(K8S / "pdb.yaml", "PodDisruptionBudget"))
    assert pdb.spec.selector.match_labels.items() <= pod_labels.items()

    hpa = load(one(K8S / "hpa.yaml", "HorizontalPodAutoscaler"))
    target = hpa.spec.scale_target_ref
    assert (target.api_version, target.kind, target.name) == ("apps/v1", "Deployment", deployment.metadata.name)


def flag_values(args):
    """`--name=value` arguments as a map (the manifests write every flag that way)."""
    values = {}
    for arg in args:
        match = re.fullmatch(r"(--[a-z0-9-]+)=(.*)", arg)
        assert match, f"write flags as --name=value: {arg!r}"
        values[match[1]] = match[2]
    return values


def ferry_binary():
    binary = os.environ.get("FERRY_BINARY")
    assert binary, "FERRY_BINARY is unset: run through `cargo test -p ferry-server --test deploy`"
    return binary


def ferry_flags():
    help_text = subprocess.run([ferry_binary(), "--help"], check=True, capture_output=True, text=True).stdout
    return set(re.findall(r"^\s+(?:-\w, )?(--[a-z0-9-]+)", help_text, flags=re.MULTILINE))


class Ferry:
    """ferry started with a manifest's argument list, the repository and ports swapped for local ones."""

    def __init__(self, args, repository_flag_value):
        values = flag_values(args)
        assert values["--model-repository"] == repository_flag_value
        local = []
        for arg in args:
            name = arg.split("=", 1)[0]
            if name == "--model-repository":
                arg = f"--model-repository={EXAMPLES}"
            elif name in ("--grpc-port", "--http-port", "--metrics-port"):
                arg = f"{name}=0"
            local.append(arg)
        addresses = [f"--{side}-address=127.0.0.1" for side in ("grpc", "http", "metrics")]
        self.process = subprocess.Popen(
            [ferry_binary(), *local, *addresses],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.addresses = {}
        self.lines = []
        listening = threading.Event()

        def read():
            for line in self.process.stdout:
                self.lines.append(line)
                try:
                    fields = json.loads(line)["fields"]
                except (ValueError, KeyError, TypeError):
                    continue
                message = fields.get("message", "")
                if "listening" in message:
                    self.addresses[message.split()[0]] = fields["address"]
                    if len(self.addresses) == 3:
                        listening.set()

        threading.Thread(target=read, daemon=True).start()
        if not listening.wait(60):
            self.stop()
            raise AssertionError("ferry did not listen within 60 s:\n" + "".join(self.lines))

    @property
    def grpc(self):
        return self.addresses["gRPC"]

    @property
    def http(self):
        return self.addresses["HTTP/REST"]

    @property
    def metrics(self):
        return self.addresses["metrics"]

    def health(self, service):
        """grpc.health.v1.Health/Check for `service`: the status number (1 is SERVING)."""
        encoded = service.encode()
        assert len(encoded) < 128
        with insecure_channel(self.grpc) as channel:
            check = channel.unary_unary("/grpc.health.v1.Health/Check")
            reply = check(b"\x0a" + bytes([len(encoded)]) + encoded, timeout=10)
        # HealthCheckResponse { status = 1 }: field 1, varint; absent means 0 (UNKNOWN).
        return reply[1] if reply[:1] == b"\x08" else 0

    def get(self, address, path):
        with urllib.request.urlopen(f"http://{address}{path}", timeout=10) as reply:
            return reply.status, reply.read().decode()

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=60)


@pytest.fixture(scope="module")
def deployment():
    return one(K8S / "deployment.yaml", "Deployment")


@pytest.fixture(scope="module")
def deployed(deployment):
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    ferry = Ferry(container["args"], repository_flag_value=container["volumeMounts"][0]["mountPath"])
    yield ferry
    ferry.stop()


def test_container_flags_exist_and_start_a_ready_ferry(deployment, deployed):
    flags = ferry_flags()
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    runtime = one(KSERVE / "servingruntime.yaml", "ClusterServingRuntime")["spec"]["containers"][0]
    for args in (container["args"], runtime["args"]):
        unknown = set(flag_values(args)) - flags
        assert not unknown, f"flags ferry --help does not list: {unknown}"
    assert deployed.get(deployed.http, "/v2/health/ready")[0] == 200


def test_ports_match_the_flags(deployment):
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    values = flag_values(container["args"])
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {
        "grpc": int(values["--grpc-port"]),
        "http": int(values["--http-port"]),
        "metrics": int(values["--metrics-port"]),
    }
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["grpc"]["port"] == ports["grpc"], probe
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == ports["metrics"]


def test_probe_services_answer_on_the_real_server(deployment, deployed):
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    # 1 is SERVING: ready at start, and liveness always while the process answers.
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert deployed.health(container[probe]["grpc"]["service"]) == 1, probe
    assert container["livenessProbe"]["grpc"]["service"] == "liveness"
    assert container["readinessProbe"]["grpc"]["service"] in ("", "inference.GRPCInferenceService")


def test_grace_period_covers_pre_stop_drain_and_exit_timeout(deployment):
    spec = deployment["spec"]["template"]["spec"]
    container = spec["containers"][0]
    values = flag_values(container["args"])
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "/bin/sleep" and len(command) == 2, command
    pre_stop = int(command[1])
    drain = int(values["--shutdown-drain-secs"])
    exit_timeout = int(values["--exit-timeout-secs"])
    assert pre_stop > 0 and drain > 0
    assert spec["terminationGracePeriodSeconds"] >= pre_stop + drain + exit_timeout + 5, (
        "the kubelet's SIGKILL would cut requests Ferry is still allowed to finish"
    )
    # The readiness probe notices the drain well within it.
    readiness = container["readinessProbe"]
    assert readiness["periodSeconds"] * readiness["failureThreshold"] < drain


def adapter_rules():
    config_map = one(K8S / "prometheus-adapter.yaml", "ConfigMap")
    return yaml.safe_load(config_map["data"]["config.yaml"])["rules"]


def test_adapter_rules_query_metrics_ferry_serves(deployment, deployed):
    # One request, so that every per-model family (histograms included) has observed something.
    client = httpclient.InferenceServerClient(deployed.http)
    inputs = [httpclient.InferInput(name, [1, 16], "INT32") for name in ("INPUT0", "INPUT1")]
    for tensor in inputs:
        tensor.set_data_from_numpy(np.arange(16, dtype=np.int32).reshape(1, 16))
    client.infer("simple", inputs)
    client.close()

    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    status, text = deployed.get(deployed.metrics, annotations["prometheus.io/path"])
    assert status == 200
    served = set(re.findall(r"^([a-z_][a-z0-9_]*)(?:\{| )", text, flags=re.MULTILINE))
    rules = adapter_rules()
    assert rules
    for rule in rules:
        assert set(rule) == {"seriesQuery", "resources", "name", "metricsQuery"}, rule
        assert rule["resources"]["overrides"] == {
            "namespace": {"resource": "namespace"},
            "pod": {"resource": "pod"},
        }
        queried = set(re.findall(r"\b((?:nv|ferry)_[a-z0-9_]+)\s*\{", rule["seriesQuery"] + rule["metricsQuery"]))
        assert queried, rule
        missing = queried - served
        assert not missing, f"metrics ferry does not serve: {missing}"
        series = re.match(r"[a-z0-9_]+", rule["seriesQuery"])[0]
        assert re.fullmatch(rule["name"]["matches"], series), rule


def test_hpa_scales_on_the_adapter_metrics():
    names = {rule["name"]["as"] for rule in adapter_rules()}
    hpa = load(one(K8S / "hpa.yaml", "HorizontalPodAutoscaler"))
    used = {metric.pods.metric.name for metric in hpa.spec.metrics if metric.type == "Pods"}
    assert used and used == names, (used, names)
    assert 1 <= hpa.spec.min_replicas <= hpa.spec.max_replicas


def test_kserve_runtime_serves_onnx_over_v2_and_grpc_v2():
    runtime = load(one(KSERVE / "servingruntime.yaml", "ClusterServingRuntime"))
    formats = {model_format.name for model_format in runtime.spec.supported_model_formats}
    assert "onnx" in formats
    assert set(runtime.spec.protocol_versions) == {"v2", "grpc-v2"}
    [container] = runtime.spec.containers
    # KServe finds the model server's container by this name.
    assert container.name == "kserve-container"
    values = flag_values(container.args)
    assert values["--model-repository"] == "/mnt/models"
    # KServe's defaults: REST on 8080 and, for grpc-v2, gRPC on the h2c port 9000.
    assert values["--http-port"] == "8080"
    assert int(runtime.spec.annotations["prometheus.kserve.io/port"]) == int(values["--metrics-port"])

    services = {path.name: load(one(path, "InferenceService")) for path in sorted(KSERVE.glob("inferenceservice*.yaml"))}
    assert {service.spec.predictor.model.protocol_version for service in services.values()} == {"v2", "grpc-v2"}
    for service in services.values():
        model = service.spec.predictor.model
        assert model.runtime == runtime.metadata.name
        assert model.model_format.name in formats
        if model.protocol_version == "grpc-v2":
            [port] = model.ports
            assert (port.name, port.container_port) == ("h2c", int(values["--grpc-port"]))


def test_kserve_runtime_args_start_a_ready_ferry():
    runtime = one(KSERVE / "servingruntime.yaml", "ClusterServingRuntime")
    ferry = Ferry(runtime["spec"]["containers"][0]["args"], repository_flag_value="/mnt/models")
    try:
        assert ferry.get(ferry.http, "/v2/health/ready")[0] == 200
        assert ferry.health("inference.GRPCInferenceService") == 1
        path = runtime["spec"]["annotations"]["prometheus.kserve.io/path"]
        assert ferry.get(ferry.metrics, path)[0] == 200
    finally:
        ferry.stop()
