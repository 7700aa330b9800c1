"""The production docker-compose.yml is valid Compose (the compose-spec schema, vendored in
deploy/schemas), wires every agentlog role the same way, runs two replicas of each worker role
with the tool executors' workspace volume, and keeps the log for ever."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"

INFRA = {"kafka", "postgres"}
AGENTLOG_SERVICES = {
    "migrate",
    "api",
    "reactor",
    "model-worker",
    "tool-worker",
    "subagent-worker",
    "projector",
}
WORKERS = {
    "reactor": "reactor",
    "model-worker": "model",
    "tool-worker": "tools",
    "subagent-worker": "subagents",
    "projector": "projector",
}
ROLES = {"reactor", "model", "tools", "subagents", "projector"}


def _compose() -> dict[str, Any]:
    data: Any = YAML(typ="safe", pure=True).load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _services() -> dict[str, Any]:
    services = _compose()["services"]
    assert isinstance(services, dict)
    return services


def _command(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    if isinstance(command, str):
        return command.split()
    assert isinstance(command, list)
    return [str(part) for part in command]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(str(item).partition("=")[::2] for item in env)
    assert isinstance(env, dict)
    return {str(key): str(value) for key, value in env.items()}


def test_compose_file_matches_the_compose_spec() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--schemafile",
            "deploy/schemas/compose-spec.json",
            "docker-compose.yml",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"


def test_every_service_is_present() -> None:
    assert set(_services()) >= INFRA | AGENTLOG_SERVICES


def test_long_running_services_have_a_healthcheck_or_restart_policy() -> None:
    services = _services()
    for name, service in services.items():
        if name == "migrate":
            continue
        restarts = service.get("restart") in {"always", "unless-stopped", "on-failure"}
        assert "healthcheck" in service or restarts, name
    for name in ("kafka", "postgres", "api"):
        assert "healthcheck" in services[name], name
    for name in WORKERS:
        assert services[name]["restart"] == "unless-stopped", name
    assert services["migrate"]["restart"] == "no"


def test_agentlog_services_share_kafka_and_database_settings() -> None:
    services = _services()
    for name in AGENTLOG_SERVICES:
        env = _environment(services[name])
        assert env.get("AGENTLOG_KAFKA_BOOTSTRAP") == "kafka:9092", name
        assert env.get("AGENTLOG_DATABASE_URL", "").startswith("postgresql://"), name
        assert "@postgres:5432/" in env["AGENTLOG_DATABASE_URL"], name


def test_the_api_logs_in_as_its_own_role_and_the_others_as_the_owner() -> None:
    """Row-level security binds the api's role, not the owner (migration 0015); the role is made
    with its password when the database is first initialised."""
    services = _services()
    for name in AGENTLOG_SERVICES:
        user = _environment(services[name])["AGENTLOG_DATABASE_URL"].split("://", 1)[1].split(":", 1)[0]
        assert user == ("agentlog_api" if name == "api" else "agentlog"), name
    mounted = {c["source"] for c in services["postgres"]["configs"]}
    made = "".join(_compose()["configs"][source]["content"] for source in mounted)
    assert "CREATE ROLE agentlog_api LOGIN PASSWORD" in made


def test_migrate_runs_once_before_the_others() -> None:
    services = _services()
    assert _command(services["migrate"]) == ["agentlog", "migrate"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in AGENTLOG_SERVICES - {"migrate"}:
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["kafka"]["condition"] == "service_healthy", name


def test_worker_commands_name_a_known_role() -> None:
    services = _services()
    for name, role in WORKERS.items():
        command = _command(services[name])
        assert command[:2] == ["agentlog", "worker"], name
        assert len(command) == 3, name
        assert command[2] in ROLES, name
        assert command[2] == role, name
    api = _command(services["api"])
    assert api[:2] == ["agentlog", "api"]


def test_the_image_copies_every_package_the_wheel_ships() -> None:
    import tomllib

    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"][
        "wheel"
    ]["packages"]
    copied = {
        line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("COPY ")
    }
    assert set(packages) <= copied, set(packages) - copied


def test_every_worker_role_runs_two_replicas_in_consumer_groups() -> None:
    services = _services()
    for name in WORKERS:
        assert services[name]["deploy"]["replicas"] == 2, name
        assert "container_name" not in services[name], name  # a fixed name allows one container
        env = _environment(services[name])
        assert env["AGENTLOG_CONSUMER_GROUPS"] == "true", name
        assert env["AGENTLOG_KAFKA_IDEMPOTENCE"] == "true", name
        assert "readyz" in " ".join(services[name]["healthcheck"]["test"]), name
    variables = set().union(*(_environment(services[name]) for name in AGENTLOG_SERVICES))
    assert not {v for v in variables if v.endswith(("_INDEX", "_COUNT"))}


def test_every_variable_compose_sets_for_agentlog_is_a_setting() -> None:
    from tests.deploy.manifests import settings_variables

    services = _services()
    for name in AGENTLOG_SERVICES:
        unknown = set(_environment(services[name])) - settings_variables()
        assert not unknown, f"{name}: variables no setting reads: {sorted(unknown)}"


def test_the_tool_executors_share_the_workspace_volume_and_may_sandbox() -> None:
    services = _services()
    tools = services["tool-worker"]
    root = _environment(tools)["AGENTLOG_WORKSPACE_ROOT"]
    mounts = dict(str(v).split(":", 1) for v in tools["volumes"])
    assert mounts["workspaces"] == root
    assert "workspaces" in YAML(typ="safe", pure=True).load(COMPOSE.read_text())["volumes"]
    # What unprivileged bubblewrap needs in Docker (docs/operations.md).
    assert set(tools["security_opt"]) == {
        "seccomp=unconfined",
        "apparmor=unconfined",
        "systempaths=unconfined",
    }
    for name in AGENTLOG_SERVICES - {"tool-worker"}:
        assert "security_opt" not in services[name], name


def test_kafka_keeps_the_log_for_ever() -> None:
    env = _environment(_services()["kafka"])
    assert env["KAFKA_LOG_RETENTION_MS"] == "-1"
    assert env["KAFKA_LOG_RETENTION_BYTES"] == "-1"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    stated = {k: v for k, v in env.items() if "RETENTION" in k}
    assert stated and set(stated.values()) == {"-1"}, stated


def test_the_model_key_reaches_only_what_calls_or_chooses_a_model() -> None:
    services = _services()
    given = {name for name in AGENTLOG_SERVICES if "ANTHROPIC_API_KEY" in _environment(services[name])}
    assert given == {"api", "model-worker", "subagent-worker"}
