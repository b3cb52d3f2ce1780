"""Tracing on the cluster: the services get the collector's endpoint and may reach it (charts:
ci/tracing-values.yaml; kustomize: k8s/components/tracing), and nothing exports by default."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml
from conftest import ROOT, by_kind, load_yaml
from test_mesh import allowed, pod_of

import deploycheck

ENDPOINT = "http://otel-collector.monitoring.svc.cluster.local:4318"
COLLECTOR = {"namespace": "monitoring", "labels": {"app.kubernetes.io/name": "opentelemetry-collector"}, "ports": {}}


def env_of(objs: list[dict], deployment: str) -> dict:
    dep = next(o for o in by_kind(objs, "Deployment") if o["metadata"]["name"] == deployment)
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    for src in c.get("envFrom", []):
        name = src.get("configMapRef", {}).get("name")
        for cm in by_kind(objs, "ConfigMap"):
            if cm["metadata"]["name"] == name:
                env |= cm.get("data", {})
    return env


def with_tracing(tmp_path) -> list[dict]:
    shutil.copytree(ROOT / "k8s", tmp_path / "k8s")
    composed = tmp_path / "k8s" / "overlays" / "composed"
    composed.mkdir()
    (composed / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources:\n  - ../prod\ncomponents:\n  - ../../components/tracing\n")
    out = subprocess.run([deploycheck.KUBECTL, "kustomize", str(composed)], capture_output=True, text=True, check=True)
    return deploycheck.load_docs(out.stdout)


def test_nothing_exports_traces_by_default(overlay_renders, scenario_renders):
    renders = list(overlay_renders.items()) + [(f"{c} {n}", o) for c, n, o in scenario_renders if n != "ci-tracing-values"]
    for where, objs in renders:
        for svc in deploycheck.CHARTS:
            if any(d["metadata"]["name"] == svc for d in by_kind(objs, "Deployment")):
                assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env_of(objs, svc), where


@pytest.mark.parametrize("chart", deploycheck.CHARTS)
def test_chart_tracing_values_point_at_the_collector_and_open_its_port(chart):
    values = load_yaml(f"helm/{chart}/ci/tracing-values.yaml")
    objs = deploycheck.chart_objects(chart, values)
    assert env_of(objs, chart)["OTEL_EXPORTER_OTLP_ENDPOINT"] == ENDPOINT
    nps = by_kind(objs, "NetworkPolicy")
    app = pod_of(objs, chart)
    assert allowed(nps, app, COLLECTOR, 4318)
    # The evaluator says no without the extra rule.
    plain = deploycheck.chart_objects(chart, {k: v for k, v in values.items() if k not in ("extraEnv", "networkPolicy")})
    assert not allowed(by_kind(plain, "NetworkPolicy"), pod_of(plain, chart), COLLECTOR, 4318)


def test_kustomize_tracing_component_sets_the_endpoint_and_opens_the_port(tmp_path):
    objs = with_tracing(tmp_path)
    nps = by_kind(objs, "NetworkPolicy")
    for svc in deploycheck.CHARTS:
        assert env_of(objs, svc)["OTEL_EXPORTER_OTLP_ENDPOINT"] == ENDPOINT
        assert allowed(nps, pod_of(objs, svc), COLLECTOR, 4318)
        assert not allowed(nps, pod_of(objs, svc), COLLECTOR, 4317), "OTLP/HTTP only"


def test_collector_values_receive_otlp_http_and_send_traces_on():
    values = yaml.safe_load((ROOT / "k8s" / "monitoring" / "otel-collector-values.yaml").read_text())
    assert values["fullnameOverride"] == "otel-collector"  # the Service name in ENDPOINT
    assert values["ports"]["otlp-http"]["enabled"] is True
    cfg = values["config"]
    assert cfg["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    pipeline = cfg["service"]["pipelines"]["traces"]
    assert pipeline["receivers"] == ["otlp"] and "memory_limiter" in pipeline["processors"]
    assert all(e in cfg["exporters"] for e in pipeline["exporters"])
