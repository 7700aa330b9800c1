"""What the deployment tests read: the kustomize overlays as built by `kubectl kustomize`, the
compose file, the Dockerfile, and what agentlog knows (settings, roles, commands)."""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
SCHEMAS = ROOT / "deploy" / "schemas"
CRD_SCHEMAS = SCHEMAS / "crds"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
# The Kubernetes version the manifests are written for: user namespaces (the tool executors'
# hostUsers: false) are on by default from 1.33.
KUBERNETES = "1.33"
# kustomize v4 was the first in kubectl (1.21) to take directories in `resources` and `patches`.
KUSTOMIZE_AT_LEAST = (4, 0)


def _yaml() -> YAML:
    return YAML(typ="safe", pure=True)


def load_all(text: str) -> list[dict[str, Any]]:
    return [doc for doc in _yaml().load_all(text) if doc]


def load(path: Path) -> Any:
    return _yaml().load(path.read_text(encoding="utf-8"))


@functools.cache
def kustomize_missing() -> str | None:
    """Why the overlays cannot be built here, or None when they can."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return "kubectl is not installed (.ci/run installs Debian's; `kubectl kustomize` builds the overlays)"
    result = subprocess.run(
        [kubectl, "version", "--client", "-o", "json"], capture_output=True, text=True, check=False
    )
    try:
        version = str(json.loads(result.stdout).get("kustomizeVersion", ""))
    except json.JSONDecodeError:
        version = ""
    found = re.match(r"v(\d+)\.(\d+)", version)
    if found is None or (int(found[1]), int(found[2])) < KUSTOMIZE_AT_LEAST:
        shown = version or "v2, too old to say"
        return f"{kubectl}'s kustomize ({shown}) predates v4: the overlays need kubectl 1.21 or later"
    return None


@functools.cache
def build(overlay: str) -> tuple[dict[str, Any], ...]:
    """The objects `kubectl kustomize` makes of deploy/k8s/overlays/OVERLAY (or `base`)."""
    path = K8S / "base" if overlay == "base" else K8S / "overlays" / overlay
    result = subprocess.run(
        ["kubectl", "kustomize", str(path)], capture_output=True, text=True, check=False, cwd=ROOT
    )
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {path} failed:\n{result.stderr}")
    return tuple(load_all(result.stdout))


def of_kind(objects: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def pod_specs(objects: tuple[dict[str, Any], ...]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, pod spec) of every Deployment and Job."""
    for obj in objects:
        if obj["kind"] in ("Deployment", "Job"):
            yield obj, obj["spec"]["template"]["spec"]


def config(objects: tuple[dict[str, Any], ...]) -> dict[str, str]:
    """The agentlog-config ConfigMap's settings (its name carries a content hash)."""
    maps = [o for o in of_kind(objects, "ConfigMap") if o["metadata"]["name"].startswith("agentlog-config")]
    assert len(maps) == 1, maps
    return {str(k): str(v) for k, v in maps[0]["data"].items()}


def schema_for(obj: dict[str, Any]) -> Path | None:
    """The vendored JSON Schema of a custom resource (deploy/schemas/crds), or None."""
    group, _, version = str(obj["apiVersion"]).rpartition("/")
    path = CRD_SCHEMAS / group / f"{str(obj['kind']).lower()}_{version}.json"
    return path if group and path.exists() else None


def compose_services() -> dict[str, Any]:
    services = load(COMPOSE)["services"]
    assert isinstance(services, dict)
    return services


def compose_environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(str(item).partition("=")[::2] for item in env)
    return {str(key): str(value) for key, value in env.items()}


def command(argv: Any) -> list[str]:
    return argv.split() if isinstance(argv, str) else [str(part) for part in argv]


def settings_variables() -> set[str]:
    """Every environment variable `Settings` reads: AGENTLOG_<FIELD>, and the aliases of the
    fields that have their own names (ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL)."""
    from pydantic import AliasChoices

    from eventstore.settings import Settings

    prefix = str(Settings.model_config.get("env_prefix", ""))
    names: set[str] = set()
    for field, info in Settings.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice).upper() for choice in alias.choices if isinstance(choice, str))
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(f"{prefix}{field}".upper())
    return names


def cli_commands() -> set[str]:
    import typer.main

    from agentlog.cli import app

    return set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def worker_roles() -> set[str]:
    from processors.run import ROLES

    return set(ROLES)
