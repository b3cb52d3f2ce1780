"""Monitoring artifacts: every alert is unit-tested both ways, queries only use metrics the
services export (or kube-state-metrics/cAdvisor/Prometheus ones), and the stack values keep
the design's retention, volume and secret-sourced Grafana password."""

from __future__ import annotations

import json
import re

from conftest import ROOT, load_yaml, one, render

import deploycheck

# The services' metrics contract (names without the histogram suffixes).
SERVICE_METRICS = {
    "http_requests_total", "http_request_duration_seconds",
    "db_pool_connections", "db_pool_max_connections", "db_pool_acquire_duration_seconds", "db_pool_acquire_errors_total",
    "process_resident_memory_bytes", "process_cpu_seconds_total", "process_start_time_seconds",
    "ingest_records_total", "ingest_objects_written_total", "ingest_object_records", "ingest_group_requests",
    "ingest_put_duration_seconds", "ingest_put_failures_total", "ingest_pending_bytes",
    "ingest_idempotent_replays_total", "ingest_overload_rejections_total",
    # The shared names other helpers export (/work BRIEF: docs/operations.md, "Monitoring").
    "ingest_requests_total", "ingest_idempotency_db_failures_total", "ingest_idempotency_fenced_total",
    "http_requests_shed_total", "auth_requests_total", "auth_keys_loaded", "auth_keys_reload_errors_total",
    "auth_keys_last_reload_success_timestamp_seconds",
}
PLATFORM_METRICS = {"up", "kube_deployment_spec_replicas", "kube_deployment_status_replicas_available",
                    "kube_pod_container_status_restarts_total", "kube_horizontalpodautoscaler_status_current_replicas",
                    "kube_horizontalpodautoscaler_spec_max_replicas", "kube_pod_container_resource_limits",
                    "kube_pod_container_resource_requests"}
PROMQL_WORDS = {"sum", "by", "without", "rate", "increase", "histogram_quantile", "max", "min", "avg", "and", "or",
                "unless", "absent", "label_replace", "time", "on", "ignoring", "group_left", "group_right", "bool", "count", "offset"}

RULE = load_yaml("k8s/monitoring/prometheusrule.yaml")
TEST_FILES = sorted((ROOT / "k8s/monitoring/tests").glob("*.test.yaml"))
TESTS = {"tests": [case for f in TEST_FILES for case in load_yaml(f)["tests"]]}


def metric_names(expr: str) -> set[str]:
    expr = re.sub(r'"[^"]*"', '""', expr)          # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)           # matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)          # ranges
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr)) - PROMQL_WORDS
    names = {n for n in names if not re.fullmatch(r"(le|job|namespace|pod|route|status|state|method|deployment|outcome|reason|container|resource|horizontalpodautoscaler|key|cause|op|e|w|[0-9.]+)", n)}
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}


def recorded() -> set[str]:
    return {r["record"] for g in RULE["spec"]["groups"] for r in g["rules"] if "record" in r}


def alerts() -> dict[str, dict]:
    return {r["alert"]: r for g in RULE["spec"]["groups"] for r in g["rules"] if "alert" in r}


def test_every_alert_fires_in_a_test_and_stays_quiet_in_another():
    fired, quiet = set(), set()
    for case in TESTS["tests"]:
        for t in case.get("alert_rule_test", []):
            (fired if t.get("exp_alerts") else quiet).add(t["alertname"])
    names = set(alerts())
    assert names <= fired, f"never fired in a test: {names - fired}"
    missing_quiet = names - quiet - {"MedroboticsServiceAbsent"}  # its quiet case is the first test's
    assert "MedroboticsServiceAbsent" in quiet
    assert not missing_quiet, f"never asserted quiet: {missing_quiet}"


def test_alerts_cover_what_on_call_needs():
    expected = {"MedroboticsHighErrorRatio", "MedroboticsHighLatencyP99", "MedroboticsPodsNotReady",
                "MedroboticsPodRestarting", "MedroboticsIngestRejectRatioHigh", "MedroboticsObjectStoreWriteFailures",
                "MedroboticsDbPoolSaturated", "MedroboticsIngestUnavailable", "MedroboticsIdempotencyDbFailures",
                "MedroboticsRevokedKeyInUse", "MedroboticsAuthFailures", "MedroboticsKeysFileReloadFailing",
                "MedroboticsAcceptedRecordsDropped"}
    assert expected <= set(alerts())
    for name, rule in alerts().items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), name


def test_runbook_anchors_exist_in_the_operations_guide():
    doc = (ROOT / "docs" / "operations.md").read_text().lower()
    for name, rule in alerts().items():
        anchor = rule["annotations"]["runbook"].split("#", 1)[1]
        assert anchor.startswith("alert-") and name.lower().removeprefix("medrobotics") in doc, name
        assert f'<a id="{anchor}"></a>' in doc or f"### {name.lower()}" in doc, f"{anchor} missing from docs/operations.md"


def test_rule_and_dashboard_queries_use_only_known_metrics():
    known = SERVICE_METRICS | PLATFORM_METRICS | recorded()
    exprs = [r["expr"] for g in RULE["spec"]["groups"] for r in g["rules"]]
    for dash in (ROOT / "k8s/monitoring/dashboards").glob("*.json"):
        exprs += [e for _, e in deploycheck.dashboard_queries(dash)]
    for expr in exprs:
        unknown = metric_names(expr.replace("$__rate_interval", "5m")) - known
        assert not unknown, f"{unknown} in {expr}"


def test_dashboard_covers_red_ingestion_pool_memory():
    dash = json.loads((ROOT / "k8s/monitoring/dashboards/medrobotics-services.json").read_text())
    rows = [p["title"] for p in dash["panels"] if p["type"] == "row"]
    assert rows == ["Overview", "RED per route (probes excluded)", "Ingestion", "Database pool", "Authentication",
                    "Process resources"]
    used = set()
    for _, expr in deploycheck.dashboard_queries(ROOT / "k8s/monitoring/dashboards/medrobotics-services.json"):
        used |= metric_names(expr.replace("$__rate_interval", "5m"))
    assert SERVICE_METRICS <= used, f"metrics without a panel: {SERVICE_METRICS - used}"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


def test_alert_ratios_count_one_unit_and_tell_clients_from_the_service():
    rules = alerts()
    reject = rules["MedroboticsIngestRejectRatioHigh"]["expr"]
    # Records over records: no request counter on either side of the ratio.
    assert metric_names(reject) == {"ingest_records_total"}
    assert 'outcome="rejected"' in reject and "unavailable" not in reject
    assert 'outcome="unavailable"' in rules["MedroboticsIngestUnavailable"]["expr"]
    # The storage alert reads PUT failures only; the database has its own.
    assert metric_names(rules["MedroboticsObjectStoreWriteFailures"]["expr"]) == {
        "ingest_put_failures_total", "ingest_objects_written_total"}
    assert metric_names(rules["MedroboticsIdempotencyDbFailures"]["expr"]) == {"ingest_idempotency_db_failures_total"}


def test_dashboard_names_shed_requests_for_what_they_are():
    dash = json.loads((ROOT / "k8s/monitoring/dashboards/medrobotics-services.json").read_text())
    by_title = {p["title"]: p for p in dash["panels"]}
    for title, panel in by_title.items():
        exprs = " ".join(t["expr"] for t in panel.get("targets", []))
        if 'route="unmatched"' in exprs:
            assert "shed" not in title.lower() and "unknown paths" in title, title
    shed = [p for p in dash["panels"] if any("http_requests_shed_total" in t["expr"] for t in p.get("targets", []))]
    assert len(shed) == 1 and "by (job, cause)" in shed[0]["targets"][0]["expr"]


def test_dashboard_configmap_is_picked_up_by_the_grafana_sidecar(overlay_renders):
    cm = one(overlay_renders["monitoring"], "ConfigMap")
    values = load_yaml("k8s/monitoring/kube-prometheus-stack-values.yaml")
    sidecar = values["grafana"]["sidecar"]["dashboards"]
    assert cm["metadata"]["labels"][sidecar["label"]] == sidecar["labelValue"]
    assert sidecar["searchNamespace"] == "ALL" or cm["metadata"]["namespace"] == "monitoring"
    json.loads(cm["data"]["medrobotics-services.json"])


def test_rules_and_monitors_are_selected_by_the_prometheus_release(overlay_renders):
    rule = one(overlay_renders["monitoring"], "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    for sm in [o for o in overlay_renders["base"] if o["kind"] == "ServiceMonitor"]:
        assert sm["metadata"]["labels"]["release"] == "prometheus"
        assert sm["spec"]["endpoints"][0]["interval"] == "30s"


def test_kube_prometheus_stack_values_follow_the_design():
    values = load_yaml("k8s/monitoring/kube-prometheus-stack-values.yaml")
    spec = values["prometheus"]["prometheusSpec"]
    assert spec["retention"] == "15d"
    claim = spec["storageSpec"]["volumeClaimTemplate"]["spec"]
    assert claim["resources"]["requests"]["storage"] == "50Gi"
    assert claim["storageClassName"] == "gp3"
    assert values["grafana"]["admin"]["existingSecret"] == "grafana-admin"
    text = (ROOT / "k8s/monitoring/kube-prometheus-stack-values.yaml").read_text()
    assert "changeme" not in text and "adminPassword" not in text


def test_network_policy_lets_this_prometheus_scrape():
    # kube-prometheus-stack's Prometheus pods carry app.kubernetes.io/name=prometheus in "monitoring".
    np = one(render("api-service"), "NetworkPolicy", "api-service")
    sources = [src for rule in np["spec"]["ingress"] for src in rule["from"]]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}} in sources
