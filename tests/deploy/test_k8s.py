"""deploy/k8s, checked offline: each overlay builds with `kubectl kustomize`, every core object
validates against the Kubernetes API's schema (kubernetes-validate, strict) and every custom
resource against its operator's CRD (deploy/schemas/crds, check-jsonschema); what the manifests
set and run is what agentlog knows; the autoscaling, the topics and the network policies say
what docs/operations.md promises."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import promql_parser
import pytest

from eventstore.log import KEEP_EVERYTHING
from observe.metrics import exported_names
from processors.model_worker import ModelWorker
from processors.projector import CONSUMER as PROJECTOR
from processors.reactor_worker import ReactorWorker
from processors.subagent_worker import SubagentWorker
from processors.tool_worker import ToolWorker
from tests.deploy.manifests import (
    KUBERNETES,
    OVERLAYS,
    build,
    command,
    config,
    kustomize_missing,
    named,
    of_kind,
    pod_specs,
    schema_for,
    settings_variables,
    worker_roles,
)

pytestmark = pytest.mark.skipif(kustomize_missing() is not None, reason=str(kustomize_missing()))

# The consumer label each role's lag is exported under (processors/*: `consumer`).
CONSUMERS = {
    "reactor": ReactorWorker.consumer,
    "model": ModelWorker.consumer,
    "tools": ToolWorker.consumer,
    "subagents": SubagentWorker.consumer,
    "projector": PROJECTOR,
}
EVENTS_TOPIC = "agentlog.events"
WORKSPACE_ROOT = "/var/lib/agentlog/workspaces"


def _role(pod: dict[str, Any]) -> tuple[str, ...]:
    """What the pod's agentlog container runs, after `agentlog`: ("worker", ROLE), ("api",), ..."""
    container = next(c for c in pod["containers"] if c["name"] == "agentlog")
    argv = command(container.get("command", []) + container.get("args", []))
    assert argv[0] == "agentlog", argv
    return tuple(argv[1:3]) if argv[1] == "worker" else (argv[1],)


def _workers(objects: tuple[dict[str, Any], ...]) -> Iterator[tuple[str, dict[str, Any]]]:
    for workload, pod in pod_specs(objects):
        what = _role(pod)
        if what[0] == "worker":
            yield what[1], workload


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    return dict(next(c for c in pod["containers"] if c["name"] == "agentlog"))


# Building and validating --------------------------------------------------------------------


@pytest.mark.parametrize("overlay", ["base", *OVERLAYS])
def test_the_overlay_builds(overlay: str) -> None:
    objects = build(overlay)
    assert objects
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "Service", "ConfigMap", "NetworkPolicy", "Kafka", "KafkaTopic", "Cluster"} <= kinds


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_is_namespaced_in_the_overlays_namespace(overlay: str) -> None:
    objects = build(overlay)
    namespaces = of_kind(objects, "Namespace")
    assert len(namespaces) == 1
    namespace = namespaces[0]["metadata"]["name"]
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == namespace, (obj["kind"], obj["metadata"]["name"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_core_object_validates_against_the_kubernetes_api(overlay: str) -> None:
    failures = []
    for obj in build(overlay):
        if schema_for(obj) is not None:
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES, strict=True)
        except kubernetes_validate.SchemaNotFoundError as exc:
            failures.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message} (no CRD schema either)")
        except kubernetes_validate.ValidationError as exc:
            failures.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message} at {list(exc.path)}")
    assert not failures, "\n".join(failures)


def _check_jsonschema(schema: Path, instances: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--schemafile", str(schema), *map(str, instances)],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_custom_resource_validates_against_its_crd(overlay: str, tmp_path: Path) -> None:
    by_schema: dict[Path, list[Path]] = {}
    for i, obj in enumerate(build(overlay)):
        schema = schema_for(obj)
        if schema is None:
            continue
        path = tmp_path / f"{i:03}-{obj['kind']}-{obj['metadata']['name']}.json"
        path.write_text(json.dumps(obj), encoding="utf-8")
        by_schema.setdefault(schema, []).append(path)
    kinds = {schema.stem for schema in by_schema}
    assert {"kafka_v1", "kafkatopic_v1", "kafkanodepool_v1", "cluster_v1", "servicemonitor_v1"} <= kinds
    if overlay == "prod":
        assert {"scaledobject_v1alpha1", "scheduledbackup_v1", "objectstore_v1"} <= kinds
    for schema, instances in by_schema.items():
        result = _check_jsonschema(schema, instances)
        assert result.returncode == 0, f"{schema.name}:\n{result.stdout}\n{result.stderr}"


def test_the_crd_schemas_refuse_a_misspelt_field(tmp_path: Path) -> None:
    """Strict: a field the operator does not know is an error (the API server would drop it)."""
    scaled = dict(named(build("prod"), "ScaledObject", "agentlog-reactor"))
    scaled["spec"] = {**scaled["spec"], "minReplicas": 2}
    path = tmp_path / "scaledobject.json"
    path.write_text(json.dumps(scaled), encoding="utf-8")
    schema = schema_for(scaled)
    assert schema is not None
    result = _check_jsonschema(schema, [path])
    assert result.returncode != 0 and "minReplicas" in result.stdout
    deployment = json.loads(json.dumps(named(build("prod"), "Deployment", "agentlog-api")))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)


# What agentlog knows ------------------------------------------------------------------------


def _set_variables(objects: tuple[dict[str, Any], ...]) -> dict[str, str]:
    """Every environment variable the manifests give agentlog, with its value where it is known."""
    found: dict[str, str] = dict(config(objects))
    for secret in of_kind(objects, "Secret"):
        if secret.get("type") == "kubernetes.io/basic-auth":
            continue  # a database login (agentlog-pg-api), read by the operator, not as variables
        found.update({k: "<secret>" for k in [*secret.get("data", {}), *secret.get("stringData", {})]})
    for _, pod in pod_specs(objects):
        for container in pod["containers"]:
            for env in container.get("env", []):
                found.setdefault(env["name"], str(env.get("value", "<from a reference>")))
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_variable_the_manifests_set_is_a_setting(overlay: str) -> None:
    variables = _set_variables(build(overlay))
    assert "AGENTLOG_DATABASE_URL" in variables and "AGENTLOG_KAFKA_BOOTSTRAP" in variables
    unknown = set(variables) - settings_variables()
    assert not unknown, f"variables no setting reads: {sorted(unknown)}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_settings_parse_as_agentlog_reads_them(overlay: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from eventstore.settings import Settings

    for name, value in config(build(overlay)).items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.kafka_idempotence, "real Kafka: the producer is idempotent"
    assert settings.consumer_groups, "each worker role is a consumer group"
    assert not settings.kafka_static_membership, "Deployments' pods have no stable instance name"
    assert str(settings.workspace_root) == WORKSPACE_ROOT
    assert settings.metrics_host == "0.0.0.0" and settings.metrics_port == 9464


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_partition_split_or_static_membership_is_configured(overlay: str) -> None:
    """The consumer groups share the partitions: the *_INDEX/*_COUNT split is gone."""
    for name in _set_variables(build(overlay)):
        assert not re.search(r"_(INDEX|COUNT)$", name), name
        assert name not in ("AGENTLOG_KAFKA_STATIC_MEMBERSHIP", "AGENTLOG_INSTANCE"), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_reach_only_the_roles_that_use_them(overlay: str) -> None:
    """The model key to what calls or chooses a model; never to the pods that run tools. The
    master key to every role that reads the log (each opens sealed records), not to migrate."""
    objects = build(overlay)
    given: dict[tuple[str, ...], set[str]] = {}
    for _, pod in pod_specs(objects):
        container = _container(pod)
        assert not [e for e in container.get("envFrom", []) if "secretRef" in e], "secrets by name only"
        refs = {
            e["name"]: e["valueFrom"]["secretKeyRef"] for e in container.get("env", []) if "valueFrom" in e
        }
        given[_role(pod)] = {name for name, ref in refs.items() if ref["name"] == "agentlog-secrets"}
        for name, ref in refs.items():
            assert ref["key"] == name or ref["name"] in ("agentlog-pg-app", "agentlog-pg-api"), name
    key = "AGENTLOG_MASTER_KEY"
    assert given[("worker", "tools")] == {"AGENTLOG_SERVICE_TOKEN", key}
    assert given[("api",)] == {"ANTHROPIC_API_KEY", "AGENTLOG_SERVICE_TOKEN", key}
    assert given[("worker", "model")] == given[("worker", "subagents")] == {"ANTHROPIC_API_KEY", key}
    for role in (("worker", "reactor"), ("worker", "projector")):
        assert given[role] == {key}, role
    assert given[("migrate",)] == set()
    secrets = [s for s in of_kind(objects, "Secret") if s["metadata"]["name"] == "agentlog-secrets"]
    if overlay == "dev":  # made here; in production it is the operator's (docs/operations.md)
        assert set(secrets[0]["data"]) == set().union(*given.values())
    else:
        assert not of_kind(objects, "Secret"), "production secrets are never in the repository"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_process_runs_a_role_or_command_the_cli_has(overlay: str) -> None:
    from tests.deploy.manifests import cli_commands

    run = {_role(pod) for _, pod in pod_specs(build(overlay))}
    for what in run:
        assert what[0] in cli_commands(), what
        if what[0] == "worker":
            assert what[1] in worker_roles(), what
    assert {("worker", role) for role in worker_roles()} <= run
    assert {("api",), ("migrate",)} <= run


# Pods ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_as_non_root_with_limits_and_probes(overlay: str) -> None:
    objects = build(overlay)
    for workload, pod in pod_specs(objects):
        name = workload["metadata"]["name"]
        context = pod.get("securityContext", {})
        assert context.get("runAsNonRoot") is True and context.get("runAsUser", 0) > 0, name
        container = _container(pod)
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], name
        resources = container["resources"]
        assert set(resources["requests"]) >= {"cpu", "memory"}, name
        assert set(resources["limits"]) >= {"cpu", "memory"}, name
        if workload["kind"] != "Deployment":
            continue
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["metrics"] == 9464, name
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        assert container["startupProbe"]["httpGet"]["path"] == "/healthz", name
        probed = container["readinessProbe"]["httpGet"]["port"]
        assert probed == ("http" if _role(pod) == ("api",) else "metrics"), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_deployment_has_a_disruption_budget(overlay: str) -> None:
    objects = build(overlay)
    budgets = [b["spec"]["selector"]["matchLabels"] for b in of_kind(objects, "PodDisruptionBudget")]
    for deployment in of_kind(objects, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        covering = [b for b in budgets if b.items() <= labels.items()]
        assert len(covering) == 1, deployment["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_tool_executors_share_one_workspace_volume_and_may_sandbox(overlay: str) -> None:
    objects = build(overlay)
    tools = [w for role, w in _workers(objects) if role == "tools"]
    assert len(tools) == 1
    pod = tools[0]["spec"]["template"]["spec"]
    container = _container(pod)
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["workspaces"] == WORKSPACE_ROOT == config(objects)["AGENTLOG_WORKSPACE_ROOT"]
    volume = next(v for v in pod["volumes"] if v["name"] == "workspaces")
    claim = named(objects, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    if overlay == "prod":
        assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
        assert claim["spec"].get("storageClassName")
    # What unprivileged bubblewrap needs (docs/operations.md, "The Bash sandbox in a container").
    assert pod["hostUsers"] is False
    context = container["securityContext"]
    assert context["procMount"] == "Unmasked"
    assert context["seccompProfile"]["type"] in ("Unconfined", "Localhost")
    assert context["appArmorProfile"]["type"] in ("Unconfined", "Localhost")
    # ... and nobody else gets it.
    for workload, other in pod_specs(objects):
        if workload is not tools[0]:
            assert "hostUsers" not in other and "procMount" not in _container(other)["securityContext"]
            assert other["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"


# Kafka, topics, autoscaling -----------------------------------------------------------------


def _topic(objects: tuple[dict[str, Any], ...], name: str) -> dict[str, Any]:
    topics = [t for t in of_kind(objects, "KafkaTopic") if t["spec"].get("topicName") == name]
    assert len(topics) == 1, name
    return topics[0]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_topics_keep_everything_wherever_retention_is_stated(overlay: str) -> None:
    objects = build(overlay)
    assert KEEP_EVERYTHING["retention.ms"] == KEEP_EVERYTHING["retention.bytes"] == "-1"
    for name in (EVENTS_TOPIC, f"{EVENTS_TOPIC}.dlq"):
        topic_config = _topic(objects, name)["spec"]["config"]
        assert str(topic_config["retention.ms"]) == str(topic_config["retention.bytes"]) == "-1", name
        assert topic_config["cleanup.policy"] == KEEP_EVERYTHING["cleanup.policy"], name
    stated = list(_retention(objects))
    assert len(stated) >= 6
    for where, value in stated:
        assert str(value) == "-1", f"{where} = {value}"


def _retention(node: Any, where: str = "") -> Iterator[tuple[str, Any]]:
    """Every retention setting stated anywhere in the objects, with its path."""
    if isinstance(node, dict):
        for key, value in node.items():
            if re.fullmatch(r"(log\.)?retention\.(ms|bytes|hours|minutes)", str(key)):
                yield f"{where}.{key}", value
            yield from _retention(value, f"{where}.{key}")
    elif isinstance(node, list | tuple):
        for i, value in enumerate(node):
            yield from _retention(value, f"{where}[{i}]")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_replication_agrees_between_kafka_the_topics_and_agentlog(overlay: str) -> None:
    objects = build(overlay)
    settings = config(objects)
    kafka = named(objects, "Kafka", "agentlog")["spec"]["kafka"]["config"]
    brokers = sum(
        pool["spec"]["replicas"]
        for pool in of_kind(objects, "KafkaNodePool")
        if "broker" in pool["spec"]["roles"]
    )
    factor = int(settings["AGENTLOG_KAFKA_REPLICATION_FACTOR"])
    assert factor == int(kafka["default.replication.factor"]) <= brokers
    for topic in of_kind(objects, "KafkaTopic"):
        assert topic["spec"]["replicas"] == factor
        assert topic["spec"]["partitions"] == int(settings["AGENTLOG_PARTITIONS"])
        assert int(topic["spec"]["config"]["min.insync.replicas"]) == int(kafka["min.insync.replicas"])
    assert settings["AGENTLOG_KAFKA_BOOTSTRAP"] == "agentlog-kafka-bootstrap:9092"
    if overlay == "prod":
        assert brokers == 3 and factor == 3 and int(kafka["min.insync.replicas"]) == 2
        controllers = [p for p in of_kind(objects, "KafkaNodePool") if p["spec"]["roles"] == ["controller"]]
        assert sum(p["spec"]["replicas"] for p in controllers) == 3


def _selectors(query: str) -> list[promql_parser.VectorSelector]:
    found: list[promql_parser.VectorSelector] = []

    def visit(node: promql_parser.Expr) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)
        return True

    promql_parser.walk(promql_parser.parse(query), visit)
    return found


def _matchers(selector: promql_parser.VectorSelector) -> dict[str, str]:
    return {m.name: m.value for m in selector.matchers.matchers if m.op == promql_parser.MatchOp.Equal}


def test_every_worker_role_scales_on_its_lag_up_to_the_partition_count() -> None:
    objects = build("prod")
    namespace = of_kind(objects, "Namespace")[0]["metadata"]["name"]
    partitions = int(config(objects)["AGENTLOG_PARTITIONS"])
    scaled = {s["spec"]["scaleTargetRef"]["name"]: s for s in of_kind(objects, "ScaledObject")}
    workers = dict(_workers(objects))
    assert set(workers) == set(CONSUMERS)
    assert len(scaled) == len(workers)
    for role, deployment in workers.items():
        name = deployment["metadata"]["name"]
        assert "replicas" not in deployment["spec"], f"{name}: KEDA owns the count"
        spec = scaled[name]["spec"]
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] == partitions, name
        lag = [t for t in spec["triggers"] if t.get("name") == "lag"]
        assert len(lag) == 1 and lag[0]["type"] == "prometheus", name
        selectors = _selectors(lag[0]["metadata"]["query"])
        assert [s.name for s in selectors] == ["agentlog_consumer_lag_records"], name
        assert _matchers(selectors[0]) == {"namespace": namespace, "consumer": CONSUMERS[role]}, name
        assert float(lag[0]["metadata"]["threshold"]) > 0
        for trigger in spec["triggers"]:
            for selector in _selectors(trigger["metadata"]["query"]):
                assert selector.name in exported_names(), selector.name
                assert _matchers(selector).get("namespace") == namespace
    model = scaled[workers["model"]["metadata"]["name"]]["spec"]["triggers"]
    in_flight = [t for t in model if t.get("name") == "in-flight"]
    assert len(in_flight) == 1
    assert [s.name for s in _selectors(in_flight[0]["metadata"]["query"])] == [
        "agentlog_model_calls_in_flight"
    ]


def test_the_dev_overlay_runs_one_replica_per_role_without_keda() -> None:
    objects = build("dev")
    assert not of_kind(objects, "ScaledObject")
    for _, deployment in _workers(objects):
        assert deployment["spec"].get("replicas", 1) == 1


def test_the_metrics_are_scraped_as_the_dashboards_and_alerts_expect() -> None:
    objects = build("prod")
    monitor = named(objects, "ServiceMonitor", "agentlog")
    service = named(objects, "Service", "agentlog-metrics")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    # job="agentlog", as deploy/prometheus/alerts.yml and the dashboard select.
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "agentlog"
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    assert service["spec"]["ports"][0]["port"] == int(config(objects)["AGENTLOG_METRICS_PORT"])


# Postgres -----------------------------------------------------------------------------------


def test_postgres_is_replicated_and_backed_up() -> None:
    objects = build("prod")
    cluster = named(objects, "Cluster", "agentlog-pg")["spec"]
    assert cluster["instances"] >= 3
    assert cluster["bootstrap"]["initdb"]["database"] == "agentlog"
    archiver = [p for p in cluster["plugins"] if p.get("isWALArchiver")]
    assert len(archiver) == 1
    store = named(objects, "ObjectStore", archiver[0]["parameters"]["barmanObjectName"])
    assert store["spec"]["retentionPolicy"]
    backup = of_kind(objects, "ScheduledBackup")
    assert len(backup) == 1 and backup[0]["spec"]["cluster"]["name"] == "agentlog-pg"
    assert backup[0]["spec"]["pluginConfiguration"]["name"] == archiver[0]["name"]
    # Every agentlog pod but the api reads the database URL CloudNativePG writes for the owner;
    # the api logs in as its own role, which the cluster manages (migration 0015).
    for _, pod in pod_specs(objects):
        env = {e["name"]: e for e in _container(pod).get("env", [])}
        ref = env["AGENTLOG_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
        owner = {"name": "agentlog-pg-app", "key": "uri"}
        assert ref == ({"name": "agentlog-pg-api", "key": "uri"} if _role(pod) == ("api",) else owner)
    roles = {r["name"]: r for r in cluster["managed"]["roles"]}
    api = roles["agentlog_api"]
    assert api["login"] and not api["superuser"] and not api["bypassrls"]
    assert api["passwordSecret"]["name"] == "agentlog-pg-api"


# Network policies ---------------------------------------------------------------------------


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, selector  # the policies here use labels only
    return bool(selector.get("matchLabels", {}).items() <= labels.items())


def _open_to_anyone(rule: dict[str, Any]) -> bool:
    """An ingress rule that admits sources outside the cluster: no `from`, or an ipBlock."""
    peers = rule.get("from") or []
    return not peers or any("ipBlock" in peer for peer in peers)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_api_is_reachable_from_outside(overlay: str) -> None:
    objects = build(overlay)
    policies = of_kind(objects, "NetworkPolicy")
    pods = {
        workload["metadata"]["name"]: (workload["spec"]["template"]["metadata"]["labels"], _role(pod))
        for workload, pod in pod_specs(objects)
    }
    for name, (labels, what) in pods.items():
        applying = [p for p in policies if _selects(p["spec"]["podSelector"], labels)]
        # Denied unless allowed: a policy selects the pod for both directions.
        assert any({"Ingress", "Egress"} <= set(p["spec"]["policyTypes"]) for p in applying), name
        ingress = [
            rule
            for p in applying
            if "Ingress" in p["spec"]["policyTypes"]
            for rule in p["spec"].get("ingress", [])
        ]
        open_rules = [rule for rule in ingress if _open_to_anyone(rule)]
        if what == ("api",):
            assert open_rules, "the api is reachable"
            assert all([port["port"] for port in rule["ports"]] == [8000] for rule in open_rules)
        else:
            assert not open_rules, f"{name} is reachable from outside: {open_rules}"
            for rule in ingress:  # Prometheus, on the metrics port only
                assert [port["port"] for port in rule["ports"]] == [9464], name
    # Workers reach Kafka, Postgres and DNS; only the model workers the model API.
    egress_anywhere = {
        p["metadata"]["name"]
        for p in policies
        for rule in p["spec"].get("egress", [])
        if any("ipBlock" in peer for peer in rule.get("to", []))
    }
    components = {
        p["metadata"]["name"]: p["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/component")
        for p in policies
    }
    assert {components[name] for name in egress_anywhere} == {"model-worker", "tool-worker"}
    kafka = named(objects, "Kafka", "agentlog")["spec"]["kafka"]["listeners"]
    assert all(listener["networkPolicyPeers"] for listener in kafka)
