"""Dashboards and alerts as code: the Grafana dashboard and the Prometheus rules are well formed,
every PromQL expression parses (promql-parser, the Rust parser's bindings), and every metric
they query is one the code exports, a recording rule of alerts.yml, or `up`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import promql_parser
import pytest
from ruamel.yaml import YAML

from observe.metrics import exported_names

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
DASHBOARD = DASHBOARDS / "agentlog.json"
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
PROMETHEUS = PROMETHEUS_DIR / "prometheus.yml"
RULES = PROMETHEUS_DIR / "alerts.yml"
COMPOSE = ROOT / "docker-compose.yml"

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SEVERITIES = {"critical", "warning", "info"}
REQUIRED_ALERTS = {
    "AgentlogTurnErrorRateOutlier",
    "AgentlogModelErrorRateOutlier",
    "AgentlogTurnDurationOutlier",
    "AgentlogTurnStepsOutlier",
    "AgentlogConsumerLagHigh",
    "AgentlogProjectionLagHigh",
    "AgentlogDeadLettersIncreasing",
    "AgentlogModelErrorRateHigh",
    "AgentlogInstanceDown",
}
# Grafana's own variables, as a query would see them; dashboard variables become ".*".
GRAFANA_BUILTINS = {
    "__rate_interval": "5m",
    "__interval": "1m",
    "__range": "1h",
    "__interval_ms": "60000",
    "__range_s": "3600",
}
# $name, ${name} and ${name:format}; never $1, which label_replace uses for a capture group.
VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|([A-Za-z_]\w*))")
RECORDED_NAME = re.compile(r"^[a-z_]+:[a-z0-9_]+:[a-z0-9_]+$")


def _yaml(path: Path) -> Any:
    return YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))


def _dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every panel, rows' nested panels included (a collapsed row keeps its panels inside it)."""
    found: list[dict[str, Any]] = []
    for panel in panels:
        found.append(panel)
        found.extend(_panels(panel.get("panels", [])))
    return found


def _query_panels() -> list[dict[str, Any]]:
    return [p for p in _panels(_dashboard()["panels"]) if p["type"] != "row"]


def _variables() -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in _dashboard()["templating"]["list"]}


def _rules() -> list[dict[str, Any]]:
    return [rule for group in _yaml(RULES)["groups"] for rule in group["rules"]]


def _recorded() -> set[str]:
    return {str(rule["record"]) for rule in _rules() if "record" in rule}


def substitute(expr: str, variables: set[str]) -> str:
    """The expression as Prometheus receives it: Grafana's intervals, and every variable as `.*`."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name in GRAFANA_BUILTINS:
            return GRAFANA_BUILTINS[name]
        if name not in variables:
            raise ValueError(f"undefined Grafana variable ${name} in {expr!r}")
        return ".*"

    return VARIABLE.sub(value, expr)


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (raises ValueError where PromQL does not parse)."""
    names: set[str] = set()

    def visit(node: promql_parser.Expr) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            groups = [node.matchers.matchers, *node.matchers.or_matchers]
            for matcher in (m for group in groups for m in group if m.name == "__name__"):
                if matcher.op != promql_parser.MatchOp.Equal:
                    raise ValueError(f"a __name__ regex cannot be checked: {expr!r}")
                names.add(matcher.value)
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def unknown_metrics(expr: str, known: set[str]) -> set[str]:
    """The names an expression selects that nothing defines."""
    return metric_names(expr) - known


def _known() -> set[str]:
    return exported_names() | _recorded() | {"up"}


def _raw_dashboard_exprs() -> list[tuple[str, str]]:
    """Each dashboard query as Grafana holds it, Grafana variables unsubstituted."""
    exprs = [
        (f"panel {panel['id']} {target['refId']}", str(target["expr"]))
        for panel in _query_panels()
        for target in panel["targets"]
    ]
    for name, variable in _variables().items():
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            inner = re.fullmatch(r"label_values\((.+),\s*\w+\)", query)
            assert inner, f"variable {name}: expected label_values(SELECTOR, LABEL), got {query!r}"
            exprs.append((f"variable {name}", inner.group(1)))
    return exprs


def _dashboard_exprs() -> list[tuple[str, str]]:
    variables = set(_variables())
    return [(where, substitute(expr, variables)) for where, expr in _raw_dashboard_exprs()]


def _rule_exprs() -> list[tuple[str, str]]:
    return [(f"rule {rule.get('record') or rule['alert']}", str(rule["expr"])) for rule in _rules()]


def _all_exprs() -> list[tuple[str, str]]:
    """Every expression to check; a file that cannot be read fails a test, not the collection."""
    try:
        return _raw_dashboard_exprs() + _rule_exprs()
    except Exception as error:
        return [(f"unreadable: {type(error).__name__}", "")]


ALL_EXPRS = _all_exprs()


# The checker itself ---------------------------------------------------------------------


def test_the_name_extractor_finds_what_a_bad_query_would_hide() -> None:
    known = {"agentlog_turns_total", "agentlog:turns:rate5m"}
    query = substitute(
        'sum by (instance) (rate(agentlog_not_exported_total{instance=~"$instance"}[$__rate_interval]))'
        " / on() group_left() agentlog:no_such:rule"
        ' + on(instance) sum by (instance) (rate({__name__="agentlog_neither_total"}[5m]))'
        ' + sum by (instance) (label_replace(agentlog:turns:rate5m, "x", "$1", "instance", "(.*)"))'
        " + sum by (instance) (agentlog_turns_total)",
        {"instance"},
    )
    assert '"$1"' in query and "[5m]" in query and '=~".*"' in query
    assert unknown_metrics(query, known) == {
        "agentlog_not_exported_total",
        "agentlog:no_such:rule",
        "agentlog_neither_total",
    }
    assert unknown_metrics("sum(rate(agentlog_turns_total[5m]))", known) == set()
    with pytest.raises(ValueError):
        metric_names('{__name__=~"agentlog_.*"}')
    with pytest.raises(ValueError):
        metric_names("sum(rate(agentlog_turns_total[5m])")
    with pytest.raises(ValueError, match="undefined Grafana variable"):
        substitute('up{instance=~"$nosuch"}', {"instance"})


def test_every_exported_metric_is_in_the_catalogue_the_test_reads() -> None:
    names = exported_names()
    assert "agentlog_turns_total" in names and "agentlog_turn_duration_seconds_bucket" in names
    assert "agentlog_not_exported_total" not in names


# PromQL ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("where", "expr"), ALL_EXPRS, ids=[where for where, _ in ALL_EXPRS])
def test_every_expression_parses_and_queries_known_metrics(where: str, expr: str) -> None:
    if where.startswith(("panel", "variable")):
        expr = substitute(expr, set(_variables()))
    names = metric_names(expr)
    assert names, f"{where} selects no metric: {expr}"
    unknown = names - _known()
    assert not unknown, f"{where} queries metrics nothing exports or records: {sorted(unknown)}"


def test_every_exported_metric_has_a_panel() -> None:
    used = set().union(*(metric_names(expr) for _, expr in _dashboard_exprs()))
    families = {re.sub(r"_(bucket|sum|count)$", "", name) for name in exported_names()}
    missing = {f for f in families if not any(n == f or n.startswith(f + "_") for n in used)}
    assert not missing, f"exported but on no panel: {sorted(missing)}"


# The dashboard --------------------------------------------------------------------------


def test_dashboard_has_the_datasource_and_instance_variables() -> None:
    dashboard = _dashboard()
    assert dashboard["schemaVersion"] >= 39
    assert dashboard["uid"] and dashboard["title"]
    variables = _variables()
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    instance = variables["instance"]
    assert instance["type"] == "query" and instance["multi"] is True and instance["includeAll"] is True
    assert instance["datasource"] == DATASOURCE


def test_every_panel_has_a_datasource_targets_and_a_place() -> None:
    panels = _panels(_dashboard()["panels"])
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: dict[tuple[int, int], int] = {}
    for panel in panels:
        grid = panel["gridPos"]
        x, y, w, h = (grid[key] for key in ("x", "y", "w", "h"))
        assert all(isinstance(v, int) for v in (x, y, w, h)), panel["id"]
        assert 0 <= x and 0 < w and x + w <= 24 and 0 <= y and 0 < h, panel["id"]
        for cell in ((cx, cy) for cx in range(x, x + w) for cy in range(y, y + h)):
            assert cell not in cells, f"panels {cells[cell]} and {panel['id']} overlap"
            cells[cell] = panel["id"]
        if panel["type"] == "row":
            continue
        assert panel["title"], panel["id"]
        assert panel["datasource"] == DATASOURCE, panel["id"]
        targets = panel["targets"]
        assert targets, panel["id"]
        ref_ids = [target["refId"] for target in targets]
        assert len(ref_ids) == len(set(ref_ids)), panel["id"]
        for target in targets:
            assert isinstance(target["expr"], str) and target["expr"].strip(), panel["id"]
            assert target.get("datasource", DATASOURCE) == DATASOURCE, panel["id"]


def test_per_instance_panels_sit_beside_fleet_panels() -> None:
    panels = _query_panels()
    per_instance = [p for p in panels if any("$instance" in t["expr"] for t in p["targets"])]
    fleet = [p for p in panels if not any("$instance" in t["expr"] for t in p["targets"])]
    assert len(per_instance) >= 10 and len(fleet) >= 5
    for title in ("Turn error rate", "Turn duration", "Steps per turn"):
        pair = [p for p in panels if p["title"].startswith(title)]
        assert {p["gridPos"]["x"] for p in pair} == {0, 12}, title
        assert len({p["gridPos"]["y"] for p in pair}) == 1, title
        assert any(p in per_instance for p in pair) and any(p in fleet for p in pair), title
    exprs = " ".join(t["expr"] for p in panels for t in p["targets"])
    assert (
        "histogram_quantile(0.95, sum by (instance, le) (rate(agentlog_turn_duration_seconds_bucket" in exprs
    )
    assert "rate(agentlog_turn_steps_sum" in exprs and "rate(agentlog_turn_steps_count" in exprs


def test_the_instances_table_highlights_outliers() -> None:
    tables = [p for p in _query_panels() if p["type"] == "table"]
    assert len(tables) == 1
    table = tables[0]
    assert any("outlier_score" in t["expr"] for t in table["targets"])
    assert any("agentlog_instance_info" in t["expr"] for t in table["targets"])
    cell_types = [
        prop["value"]["type"]
        for override in table["fieldConfig"]["overrides"]
        for prop in override["properties"]
        if prop["id"] == "custom.cellOptions"
    ]
    assert "color-background" in cell_types


# The rules ------------------------------------------------------------------------------


def test_rules_are_recordings_or_complete_alerts() -> None:
    groups = _yaml(RULES)["groups"]
    assert groups and len({g["name"] for g in groups}) == len(groups)
    alerts: set[str] = set()
    for group in groups:
        assert group["rules"], group["name"]
        for rule in group["rules"]:
            assert ("record" in rule) != ("alert" in rule), rule
            assert isinstance(rule["expr"], str) and rule["expr"].strip(), rule
            if "record" in rule:
                assert RECORDED_NAME.match(rule["record"]), rule["record"]
                continue
            alerts.add(rule["alert"])
            promql_parser.parse_duration(rule["for"])
            assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
            assert rule["annotations"]["summary"].strip(), rule["alert"]
            assert rule["annotations"]["description"].strip(), rule["alert"]
    assert alerts >= REQUIRED_ALERTS, sorted(REQUIRED_ALERTS - alerts)


def test_recording_rules_come_before_the_rules_that_use_them() -> None:
    """Rules of a group run in order: a rule reading a later one would see the last evaluation's."""
    recorded = _recorded()
    for group in _yaml(RULES)["groups"]:
        seen: set[str] = set()
        for rule in group["rules"]:
            name = rule.get("record") or rule["alert"]
            late = (metric_names(rule["expr"]) & recorded) - seen
            assert not late, f"{name} uses {sorted(late)} before they are recorded"
            if "record" in rule:
                seen.add(rule["record"])


def test_outliers_compare_with_the_fleet_median_and_mad() -> None:
    exprs = {rule.get("record") or rule["alert"]: rule["expr"] for rule in _rules()}
    for signal in ("turn_error_rate", "model_error_rate", "turn_duration_p95", "turn_steps_mean"):
        assert exprs[f"agentlog:{signal}:fleet_median"].startswith("quantile(0.5,")
        mad = exprs[f"agentlog:{signal}:fleet_mad"]
        assert mad.startswith("quantile(0.5,") and "abs(" in mad
    assert "up" in metric_names(exprs["AgentlogInstanceDown"])


# Wiring: Prometheus, Grafana provisioning, docker-compose -------------------------------


def test_prometheus_scrapes_file_sd_targets_and_loads_the_rules() -> None:
    config = _yaml(PROMETHEUS)
    assert [PROMETHEUS_DIR / f for f in config["rule_files"]] == [RULES]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    patterns = [f for sd in jobs["agentlog"]["file_sd_configs"] for f in sd["files"]]
    assert patterns == ["targets/*.json"]
    files = sorted(PROMETHEUS_DIR.glob(patterns[0]))
    assert files
    for path in files:
        groups = json.loads(path.read_text(encoding="utf-8"))
        assert all(isinstance(t, str) and ":" in t for group in groups for t in group["targets"]), path
    assert "agentlog top" in PROMETHEUS.read_text(encoding="utf-8")


def test_grafana_and_prometheus_services_mount_these_files() -> None:
    services = _yaml(COMPOSE)["services"]
    provider = _yaml(PROVISIONING / "dashboards" / "agentlog.yml")["providers"][0]
    datasource = _yaml(PROVISIONING / "datasources" / "prometheus.yml")["datasources"][0]
    assert provider["type"] == "file" and datasource["type"] == "prometheus"
    grafana, prometheus = services["grafana"], services["prometheus"]
    for service in (grafana, prometheus):
        assert service["profiles"] == ["observability"]
    mounts = {src: dst.removesuffix(":ro") for src, _, dst in (v.partition(":") for v in grafana["volumes"])}
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert datasource["url"] == "http://prometheus:9090"
    targets = {
        t
        for p in PROMETHEUS_DIR.glob("targets/*.json")
        for g in json.loads(p.read_text())
        for t in g["targets"]
    }
    for target in targets:
        assert target.partition(":")[0] in services, target


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Prometheus) is not installed")
def test_promtool_accepts_the_config_and_the_rules() -> None:
    for args in (["check", "config", str(PROMETHEUS)], ["check", "rules", str(RULES)]):
        result = subprocess.run(["promtool", *args], capture_output=True, text=True, check=False)
        assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
