"""The chart logic: render-time guards, the design's numbers, and invariants that must hold
in every scenario (probes, security, labels, /metrics never routed)."""

from __future__ import annotations

import json
import re

import pytest
from conftest import REQUIRED, ROOT, by_kind, is_hook, load_yaml, one, render, render_raw

import deploycheck

CHARTS = deploycheck.CHARTS
PORTS = {"api-service": 5000, "data-ingestion": 8080}
PREFIX = {"api-service": "/api", "data-ingestion": "/ingest"}


def render_error(chart: str, values: dict) -> str:
    with pytest.raises(Exception) as exc:  # noqa: PT011 (helm raises HelmRenderError / HelmValuesError)
        render_raw(chart, values)
    return str(exc.value)


# --- guards ------------------------------------------------------------------------------


@pytest.mark.parametrize("chart", CHARTS)
def test_rendering_without_the_database_secret_fails_with_a_clear_message(chart):
    message = render_error(chart, {"database": {"host": "db"}, "storage": {"rawBucket": "raw-bucket"}})
    assert "database credentials are required" in message
    assert "database.existingSecret" in message and "externalSecret.enabled" in message


@pytest.mark.parametrize("chart", CHARTS)
def test_default_values_alone_refuse_to_render(chart):
    assert "database credentials are required" in render_error(chart, {})


@pytest.mark.parametrize("chart", CHARTS)
def test_missing_database_host_and_bucket_are_named(chart):
    auth = {"existingSecret": "k"}
    assert "database.host" in render_error(chart, {"database": {"existingSecret": "s"}, "storage": {"rawBucket": "raw-bucket"}, "auth": auth})
    assert "storage.rawBucket" in render_error(chart, {"database": {"existingSecret": "s", "host": "db"}, "auth": auth})


@pytest.mark.parametrize(("chart", "max_replicas", "pool", "budget"), [("api-service", 15, 20, 200), ("data-ingestion", 10, 14, 150)])
def test_pool_size_times_max_pods_over_the_budget_refuses_to_render(chart, max_replicas, pool, budget):
    message = render_error(chart, deploycheck.deep_merge(REQUIRED, {"database": {"maxConnections": pool}}))
    needed = (max_replicas + 1) * (pool + 1)  # each pod: its pool plus the readiness connection
    assert "connection budget exceeded" in message
    assert f"= {needed} connections > database.connectionBudget {budget}" in message


@pytest.mark.parametrize("chart", CHARTS)
def test_connection_budget_counts_the_surge_and_fits_exactly(chart):
    # (maxReplicas + maxSurge) x (pool + 1) == budget renders; one connection less does not.
    values = {"autoscaling": {"maxReplicas": 9}, "strategy": {"maxSurge": 1}, "database": {"maxConnections": 9, "connectionBudget": 100}}
    assert one(render(chart, values), "Deployment")
    values["database"]["connectionBudget"] = 99
    assert "connection budget exceeded" in render_error(chart, deploycheck.deep_merge(REQUIRED, values))


@pytest.mark.parametrize("chart", CHARTS)
def test_percentage_surge_is_rounded_up_like_the_deployment_controller(chart):
    # 10 pods + ceil(10 x 25%) = 13 pods x (9 + 1) = 130 connections.
    values = {"autoscaling": {"maxReplicas": 10}, "strategy": {"maxSurge": "25%"}, "database": {"maxConnections": 9, "connectionBudget": 129}}
    assert "13 pods at most" in render_error(chart, deploycheck.deep_merge(REQUIRED, values))
    values["database"]["connectionBudget"] = 130
    assert one(render(chart, values), "Deployment")


@pytest.mark.parametrize("chart", CHARTS)
def test_fixed_replicas_count_in_the_budget_when_the_hpa_is_off(chart):
    values = {"autoscaling": {"enabled": False}, "replicaCount": 20, "database": {"maxConnections": 10, "connectionBudget": 200}}
    assert "replicaCount 20" in render_error(chart, deploycheck.deep_merge(REQUIRED, values))


@pytest.mark.parametrize("chart", CHARTS)
@pytest.mark.parametrize(
    ("grace", "drain", "timeout"),
    [(35, 15, 20), (30, 15, 20), (45, 30, 20), (20, 0, 20)],
)
def test_grace_period_must_exceed_drain_delay_plus_shutdown_timeout(chart, grace, drain, timeout):
    values = {"terminationGracePeriodSeconds": grace, "server": {"drainDelaySeconds": drain, "shutdownTimeoutSeconds": timeout}}
    message = render_error(chart, deploycheck.deep_merge(REQUIRED, values))
    assert (
        f"terminationGracePeriodSeconds ({grace}) must exceed server.drainDelaySeconds + server.shutdownTimeoutSeconds "
        f"({drain} + {timeout} = {drain + timeout})"
    ) in message
    assert "final flush" in message


@pytest.mark.parametrize("chart", CHARTS)
def test_grace_period_one_second_above_the_shutdown_renders(chart):
    values = {"terminationGracePeriodSeconds": 36, "server": {"drainDelaySeconds": 15, "shutdownTimeoutSeconds": 20}}
    assert one(render(chart, values), "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 36


@pytest.mark.parametrize("chart", CHARTS)
@pytest.mark.parametrize("path", ["/", "/metrics", "/api/metrics"])
def test_ingress_refuses_paths_that_expose_metrics(chart, path):
    assert "would expose /metrics" in render_error(chart, deploycheck.deep_merge(REQUIRED, {"ingress": {"path": path}}))


@pytest.mark.parametrize("chart", CHARTS)
def test_kms_encryption_needs_a_key(chart):
    assert "storage.kmsKeyId is empty" in render_error(chart, deploycheck.deep_merge(REQUIRED, {"storage": {"sse": "aws:kms"}}))


@pytest.mark.parametrize("chart", CHARTS)
def test_schema_rejects_unknown_keys_and_latest_tag(chart):
    assert "additional properties" in render_error(chart, deploycheck.deep_merge(REQUIRED, {"replicas": 3})).lower()
    assert "image/tag" in render_error(chart, deploycheck.deep_merge(REQUIRED, {"image": {"tag": "latest"}}))


# --- the design's numbers ------------------------------------------------------------------


@pytest.mark.parametrize(("chart", "lo", "hi"), [("api-service", 3, 15), ("data-ingestion", 2, 10)])
def test_hpa_follows_the_design(chart, lo, hi):
    hpa = one(render(chart), "HorizontalPodAutoscaler")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (lo, hi)
    targets = {m["resource"]["name"]: m["resource"]["target"]["averageUtilization"] for m in hpa["metrics"]}
    assert targets == {"cpu": 70, "memory": 80}
    up, down = hpa["behavior"]["scaleUp"], hpa["behavior"]["scaleDown"]
    assert up["policies"] == [{"type": "Percent", "value": 100, "periodSeconds": 30}]
    assert down["stabilizationWindowSeconds"] == 300
    assert down["policies"] == [{"type": "Percent", "value": 50, "periodSeconds": 60}]


@pytest.mark.parametrize("chart", CHARTS)
def test_memory_signal_can_be_switched_off(chart):
    hpa = one(render(chart, {"autoscaling": {"targetMemoryUtilizationPercentage": None}}), "HorizontalPodAutoscaler")
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]


@pytest.mark.parametrize("chart", CHARTS)
def test_replicas_absent_when_hpa_on_and_present_when_off(chart):
    assert "replicas" not in one(render(chart), "Deployment")["spec"]
    objs = render(chart, {"autoscaling": {"enabled": False}, "replicaCount": 4})
    assert one(objs, "Deployment")["spec"]["replicas"] == 4
    assert not by_kind(objs, "HorizontalPodAutoscaler")


@pytest.mark.parametrize(("chart", "replicas"), [("api-service", 3), ("data-ingestion", 2)])
def test_deployment_follows_the_design(chart, replicas):
    values = load_yaml(f"helm/{chart}/values.yaml")
    assert values["replicaCount"] == replicas
    dep = one(render(chart), "Deployment")["spec"]
    assert dep["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    pod = dep["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["requests"] == {"cpu": "250m", "memory": "512Mi"}
    assert container["ports"] == [{"name": "http", "containerPort": PORTS[chart], "protocol": "TCP"}]
    assert {c["topologyKey"] for c in pod["topologySpreadConstraints"]} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    assert pod["terminationGracePeriodSeconds"] == 90


@pytest.mark.parametrize("chart", CHARTS)
def test_ingress_is_an_internet_facing_alb_with_ip_targets_and_15s_health_checks(chart):
    ing = one(render(chart), "Ingress")
    ann = ing["metadata"]["annotations"]
    assert ing["spec"]["ingressClassName"] == "alb"
    assert ann["alb.ingress.kubernetes.io/scheme"] == "internet-facing"
    assert ann["alb.ingress.kubernetes.io/target-type"] == "ip"
    assert ann["alb.ingress.kubernetes.io/healthcheck-interval-seconds"] == "15"
    assert ann["alb.ingress.kubernetes.io/group.name"] == "medrobotics"
    (rule,) = ing["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    assert path["path"] == PREFIX[chart]
    assert path["backend"]["service"] == {"name": chart, "port": {"name": "http"}}
    # Deregistration finishes inside the grace period.
    delay = int(ann["alb.ingress.kubernetes.io/target-group-attributes"].split("=")[1])
    assert delay < 45


CERT = "arn:aws:acm:us-east-1:111122223333:certificate/11111111-2222-3333-4444-555555555555"
WAF = "arn:aws:wafv2:us-east-1:111122223333:regional/webacl/medrobotics/a1b2c3d4-5678-90ab-cdef-111122223333"
ALB = "alb.ingress.kubernetes.io/"


def ingress_annotations(chart: str, ingress: dict | None = None) -> dict:
    return one(render(chart, {"ingress": ingress or {}}), "Ingress")["metadata"]["annotations"]


@pytest.mark.parametrize("chart", CHARTS)
def test_https_with_redirect_and_a_current_tls_policy_when_a_certificate_is_given(chart):
    ann = ingress_annotations(chart, {"certificateArn": CERT})
    assert ann[ALB + "certificate-arn"] == CERT
    assert json.loads(ann[ALB + "listen-ports"]) == [{"HTTP": 80}, {"HTTPS": 443}]
    assert ann[ALB + "ssl-redirect"] == "443"
    assert ann[ALB + "ssl-policy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"
    assert ALB + "wafv2-acl-arn" not in ann


@pytest.mark.parametrize("chart", CHARTS)
def test_http_only_without_a_certificate(chart):
    ann = ingress_annotations(chart)
    assert json.loads(ann[ALB + "listen-ports"]) == [{"HTTP": 80}]
    for key in ("certificate-arn", "ssl-redirect", "ssl-policy", "wafv2-acl-arn"):
        assert ALB + key not in ann, key


@pytest.mark.parametrize("chart", CHARTS)
def test_waf_acl_is_attached_when_given_with_or_without_tls(chart):
    assert ingress_annotations(chart, {"wafAclArn": WAF})[ALB + "wafv2-acl-arn"] == WAF
    ann = ingress_annotations(chart, {"wafAclArn": WAF, "certificateArn": CERT, "sslPolicy": "ELBSecurityPolicy-TLS13-1-3-2021-06"})
    assert ann[ALB + "wafv2-acl-arn"] == WAF and ann[ALB + "ssl-policy"] == "ELBSecurityPolicy-TLS13-1-3-2021-06"


@pytest.mark.parametrize("chart", CHARTS)
@pytest.mark.parametrize(("ingress", "where"), [
    ({"sslPolicy": "ELBSecurityPolicy-2016-08"}, "ingress/sslPolicy"),           # allows TLS 1.0
    ({"sslPolicy": "ELBSecurityPolicy-TLS-1-1-2017-01"}, "ingress/sslPolicy"),   # allows TLS 1.1
    ({"sslPolicy": "ELBSecurityPolicy-TLS13-1-1-2021-06"}, "ingress/sslPolicy"),
    ({"certificateArn": "arn:aws:iam::111122223333:server-certificate/x"}, "ingress/certificateArn"),
    ({"wafAclArn": "arn:aws:waf-regional:us-east-1:111122223333:webacl/x"}, "ingress/wafAclArn"),
])
def test_schema_refuses_old_tls_policies_and_malformed_arns(chart, ingress, where):
    assert where in render_error(chart, deploycheck.deep_merge(REQUIRED, {"ingress": ingress}))


@pytest.mark.parametrize("chart", CHARTS)
@pytest.mark.parametrize("key", ["listen-ports", "certificate-arn", "ssl-redirect", "wafv2-acl-arn", "scheme"])
def test_listener_tls_and_waf_annotations_come_only_from_the_values(chart, key):
    message = render_error(chart, deploycheck.deep_merge(REQUIRED, {"ingress": {"annotations": {ALB + key: "x"}}}))
    assert f"ingress.annotations.{ALB}{key} is set by the chart" in message


@pytest.mark.parametrize("chart", CHARTS)
def test_metrics_stays_unrouted_with_https_and_waf(chart):
    ing = one(render(chart, {"ingress": {"certificateArn": CERT, "wafAclArn": WAF, "host": "robots.example.org"}}), "Ingress")
    assert [p["path"] for r in ing["spec"]["rules"] for p in r["http"]["paths"]] == [PREFIX[chart]]


# --- API keys ----------------------------------------------------------------------------------


def without_auth_secret() -> dict:
    values = deploycheck.deep_merge(REQUIRED, {})
    values.pop("auth")
    return values


def pod(objs: list[dict]) -> dict:
    return one(objs, "Deployment")["spec"]["template"]["spec"]


@pytest.mark.parametrize("chart", CHARTS)
def test_rendering_without_the_api_keys_secret_fails_with_a_clear_message(chart):
    message = render_error(chart, without_auth_secret())
    assert f"{chart}: API keys are required (auth.enabled is true)" in message
    for hint in ("auth.existingSecret", '"keys.json" (auth.secretKey)', f"{chart} create-key",
                 "auth.externalSecret.enabled=true", "auth.enabled=false"):
        assert hint in message, hint


@pytest.mark.parametrize("chart", CHARTS)
def test_auth_is_on_by_default_with_the_keys_file_mounted_read_only_from_the_secret(chart):
    assert load_yaml(f"helm/{chart}/values.yaml")["auth"]["enabled"] is True
    objs = render(chart)
    data = one(objs, "ConfigMap")["data"]
    assert data["APP_AUTH__ENABLED"] == "true"
    assert data["APP_AUTH__KEYS_FILE"] == "/etc/medrobotics/auth/keys.json"
    assert (data["APP_AUTH__RELOAD_SECS"], data["APP_AUTH__RATE_LIMIT_PER_SEC"], data["APP_AUTH__RATE_LIMIT_BURST"]) == ("10", "100", "200")
    assert "APP_AUTH__KEYS" not in data
    spec = pod(objs)
    (volume,) = [v for v in spec["volumes"] if v["name"] == "api-keys"]
    assert volume["secret"] == {"secretName": "medrobotics-api-keys", "items": [{"key": "keys.json", "path": "keys.json"}],
                                "defaultMode": 0o440}
    (mount,) = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "api-keys"]
    # No subPath: the kubelet refreshes the file when the Secret changes (rotation without restart).
    assert mount == {"name": "api-keys", "mountPath": "/etc/medrobotics/auth", "readOnly": True}
    assert data["APP_AUTH__KEYS_FILE"] == f"{mount['mountPath']}/{volume['secret']['items'][0]['path']}"
    # The key material never comes from values: the chart creates no Secret.
    assert not by_kind(objs, "Secret")


@pytest.mark.parametrize("chart", CHARTS)
def test_secret_key_mount_path_reload_and_rate_limits_are_values(chart):
    objs = render(chart, {"auth": {"secretKey": "api-keys.json", "mountPath": "/var/run/keys", "reloadSeconds": 30,
                                   "rateLimit": {"perSecond": 2.5, "burst": 5}}})
    data = one(objs, "ConfigMap")["data"]
    assert data["APP_AUTH__KEYS_FILE"] == "/var/run/keys/keys.json"
    assert (data["APP_AUTH__RELOAD_SECS"], data["APP_AUTH__RATE_LIMIT_PER_SEC"], data["APP_AUTH__RATE_LIMIT_BURST"]) == ("30", "2.5", "5")
    (volume,) = [v for v in pod(objs)["volumes"] if v["name"] == "api-keys"]
    assert volume["secret"]["items"] == [{"key": "api-keys.json", "path": "keys.json"}]
    assert one(render(chart, {"auth": {"rateLimit": {"perSecond": 0}}}), "ConfigMap")["data"]["APP_AUTH__RATE_LIMIT_PER_SEC"] == "0"


@pytest.mark.parametrize("chart", CHARTS)
def test_auth_disabled_explicitly_renders_without_a_secret_and_notes_warn(chart):
    values = deploycheck.deep_merge(without_auth_secret(), {"auth": {"enabled": False}})
    objs = render_raw(chart, values)
    data = one(objs, "ConfigMap")["data"]
    assert data["APP_AUTH__ENABLED"] == "false"
    assert not [k for k in data if k.startswith("APP_AUTH__") and k != "APP_AUTH__ENABLED"]
    assert not [v for v in pod(objs)["volumes"] if v["name"] == "api-keys"]
    notes = deploycheck.render_chart(chart, values, include_notes=True)[f"{chart}/templates/NOTES.txt"]
    assert "WARNING: auth.enabled is false: API key authentication is OFF" in notes
    assert "(through the internet-facing ALB)" in notes


@pytest.mark.parametrize("chart", CHARTS)
def test_notes_name_the_keys_secret_and_warn_about_keys_over_plain_http(chart):
    notes = deploycheck.render_chart(chart, REQUIRED, include_notes=True)[f"{chart}/templates/NOTES.txt"]
    assert 'Secret "medrobotics-api-keys", key "keys.json"' in notes
    assert f"{chart} create-key --name <client> --scope {'read' if chart == 'api-service' else 'ingest'}" in notes
    assert "API keys cross the internet in clear text" in notes
    notes = deploycheck.render_chart(chart, deploycheck.deep_merge(REQUIRED, {"ingress": {"certificateArn": CERT}}),
                                     include_notes=True)[f"{chart}/templates/NOTES.txt"]
    assert "clear text" not in notes and f"curl https://<that address>{PREFIX[chart]}/health" in notes
    assert "WARNING: auth" not in notes


@pytest.mark.parametrize("chart", CHARTS)
def test_api_keys_external_secret_feeds_the_volume(chart):
    keys_arn = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:medrobotics/api-keys-AbCdEf"
    values = deploycheck.deep_merge(without_auth_secret(), {"auth": {"externalSecret": {"enabled": True, "remoteKey": keys_arn}}})
    objs = render_raw(chart, values)
    es = one(objs, "ExternalSecret", f"{chart}-api-keys")
    assert not is_hook(es)
    assert es["spec"]["target"] == {"name": f"{chart}-api-keys", "creationPolicy": "Owner", "deletionPolicy": "Retain"}
    assert es["spec"]["data"] == [{"secretKey": "keys.json", "remoteRef": {"key": keys_arn}}]
    assert es["spec"]["secretStoreRef"] == {"name": "aws-secretsmanager", "kind": "SecretStore"}
    (volume,) = [v for v in pod(objs)["volumes"] if v["name"] == "api-keys"]
    assert volume["secret"]["secretName"] == f"{chart}-api-keys"
    # With auth.existingSecret both releases would render the same object: refused.
    message = render_error(chart, {**REQUIRED, "auth": {"existingSecret": "keys", "externalSecret": {"enabled": True, "remoteKey": keys_arn}}})
    assert 'auth.existingSecret ("keys") and auth.externalSecret.enabled exclude each other' in message
    assert "second install would fail on ownership" in message and "k8s/overlays/external-secrets" in message
    # Off by default, and never without authentication.
    assert not [o for o in by_kind(render(chart), "ExternalSecret")]
    off = deploycheck.deep_merge(values, {"auth": {"enabled": False}})
    assert not by_kind(render_raw(chart, off), "ExternalSecret")


def test_the_migration_job_needs_no_api_keys():
    job = one(render("api-service"), "Job")["spec"]["template"]["spec"]
    assert [v["name"] for v in job.get("volumes", [])] == ["tmp"]


@pytest.mark.parametrize("chart", CHARTS)
@pytest.mark.parametrize(("values", "message"), [
    ({"config": {"extra": {"APP_AUTH__ENABLED": "false"}}}, "config.extra.APP_AUTH__ENABLED: authentication is configured with the auth values"),
    ({"config": {"extra": {"APP_AUTH__KEYS": "[]"}}}, "config.extra.APP_AUTH__KEYS: authentication is configured with the auth values"),
    ({"extraEnv": [{"name": "APP_AUTH__ENABLED", "value": "false"}]}, "extraEnv APP_AUTH__ENABLED: authentication is configured"),
    ({"extraEnv": [{"name": "APP_AUTH__KEYS", "valueFrom": {"secretKeyRef": {"name": "k", "key": "k"}}}]}, "extraEnv APP_AUTH__KEYS"),
    ({"config": {"extra": {"RDS_PASSWORD": "hunter2"}}}, "config.extra.RDS_PASSWORD looks like a secret"),
    ({"config": {"extra": {"DATABASE_URL": "postgres://u:p@h/d"}}}, "config.extra.DATABASE_URL looks like a secret"),
    ({"config": {"extra": {"AWS_SECRET_ACCESS_KEY": "x"}}}, "config.extra.AWS_SECRET_ACCESS_KEY looks like a secret"),
    ({"config": {"extra": {"RUST_LOG": "debug"}}}, "config.extra.RUST_LOG is set by the chart"),
    ({"extraEnv": [{"name": "RDS_PASSWORD", "value": "hunter2"}]}, "extraEnv RDS_PASSWORD has a literal value"),
    ({"auth": {"mountPath": "/tmp"}}, "auth.mountPath must not be /tmp"),
])
def test_secrets_and_auth_settings_cannot_bypass_the_values(chart, values, message):
    assert message in render_error(chart, deploycheck.deep_merge(REQUIRED, values))


@pytest.mark.parametrize("chart", CHARTS)
def test_secrets_may_come_through_extra_env_from_a_secret(chart):
    ref = {"name": "OTHER_API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "other", "key": "token"}}}
    env = {e["name"]: e for e in pod(render(chart, {"extraEnv": [ref]}))["containers"][0]["env"]}
    assert env["OTHER_API_TOKEN"] == ref


def test_auth_is_on_everywhere_unless_a_scenario_disables_it(scenario_renders, overlay_renders):
    seen = 0
    for chart, name, objs in scenario_renders:
        values = dict(deploycheck.scenarios(chart))[name]
        enabled = values.get("auth", {}).get("enabled", True)
        assert one(objs, "ConfigMap")["data"]["APP_AUTH__ENABLED"] == str(enabled).lower(), (chart, name)
        assert bool([v for v in pod(objs).get("volumes", []) if v["name"] == "api-keys"]) == enabled, (chart, name)
        seen += 1
    assert [n for c, n, _ in scenario_renders if c == "api-service" and dict(deploycheck.scenarios(c))[n].get("auth", {}).get("enabled") is False] == ["ci-minimal-values"]
    for overlay, objs in overlay_renders.items():
        for dep in [o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] in deploycheck.CHARTS]:
            seen += 1
            cm = next(o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith(dep["metadata"]["name"]))
            assert cm["data"]["APP_AUTH__ENABLED"] == "true", overlay
            assert cm["data"]["APP_AUTH__KEYS_FILE"] == "/etc/medrobotics/auth/keys.json", overlay
            (mount,) = [m for m in dep["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] if m["name"] == "api-keys"]
            assert mount["readOnly"] is True and "subPath" not in mount, overlay
    assert seen >= 20


# --- invariants over every scenario and overlay -------------------------------------------------


def every_object(scenario_renders, overlay_renders):
    for chart, name, objs in scenario_renders:
        for o in objs:
            yield f"helm/{chart} {name}", o
    for overlay, objs in overlay_renders.items():
        for o in objs:
            yield f"k8s/{overlay}", o


def test_metrics_is_never_routed_by_any_ingress(scenario_renders, overlay_renders):
    paths = []
    for where, obj in every_object(scenario_renders, overlay_renders):
        if obj["kind"] != "Ingress":
            continue
        for rule in obj["spec"]["rules"]:
            for p in rule["http"]["paths"]:
                paths.append((where, p["path"]))
                assert p["path"] != "/", where
                assert "metrics" not in p["path"], where
                assert p["path"] in ("/api", "/ingest"), (where, p["path"])
    assert paths, "no Ingress rendered at all"


def long_running_containers(scenario_renders, overlay_renders):
    """The services' containers (not the optional mesh gateway's proxy: test_mesh.py)."""
    for where, obj in every_object(scenario_renders, overlay_renders):
        if obj["kind"] == "Deployment" and obj["metadata"]["name"] in deploycheck.CHARTS:
            for c in obj["spec"]["template"]["spec"]["containers"]:
                yield where, obj, c


def test_every_service_container_has_the_three_probes_on_the_named_port(scenario_renders, overlay_renders):
    seen = 0
    for where, _, c in long_running_containers(scenario_renders, overlay_renders):
        seen += 1
        assert c["startupProbe"]["httpGet"] == {"path": "/health", "port": "http"}, where
        assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}, where
        assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}, where
    assert seen >= 20


def test_every_container_is_locked_down(scenario_renders, overlay_renders):
    for where, obj in every_object(scenario_renders, overlay_renders):
        spec = None
        if obj["kind"] in ("Deployment", "Job"):
            spec = obj["spec"]["template"]["spec"]
        elif obj["kind"] == "Pod":
            spec = obj["spec"]
        if spec is None:
            continue
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert spec["automountServiceAccountToken"] is False, where
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], where


def test_grace_period_exceeds_the_configured_drain_everywhere(scenario_renders, overlay_renders):
    for chart, name, objs in scenario_renders:
        data = one(objs, "ConfigMap")["data"]
        drain = int(data["APP_SERVER__DRAIN_DELAY_SECS"]) + int(data["APP_SERVER__SHUTDOWN_TIMEOUT_SECS"])
        assert one(objs, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > drain, (chart, name)


def test_selectors_use_only_name_and_instance_and_objects_carry_recommended_labels(scenario_renders):
    recommended = {"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                   "app.kubernetes.io/component", "app.kubernetes.io/part-of", "app.kubernetes.io/managed-by", "helm.sh/chart"}
    for chart, name, objs in scenario_renders:
        for o in objs:
            if o["kind"] == "Pod":
                continue  # the helm test pod carries its own, non-selected name
            assert recommended <= set(o["metadata"]["labels"]), (chart, name, o["kind"])
        dep = one(objs, "Deployment")
        assert set(dep["spec"]["selector"]["matchLabels"]) == {"app.kubernetes.io/name", "app.kubernetes.io/instance"}
        svc = one(objs, "Service")
        assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]


def test_hook_pods_are_never_selected_by_the_service_or_the_pdb(scenario_renders):
    for chart, name, objs in scenario_renders:
        selector = one(objs, "Service")["spec"]["selector"]
        for o in objs:
            labels = None
            if o["kind"] == "Job":
                labels = o["spec"]["template"]["metadata"]["labels"]
            elif o["kind"] == "Pod":
                labels = o["metadata"]["labels"]
            if labels is not None:
                assert not all(labels.get(k) == v for k, v in selector.items()), (chart, name, o["kind"])


def test_checksum_annotation_follows_the_config(tmp_path):
    a = one(render("api-service"), "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    b = one(render("api-service", {"config": {"rustLog": "debug"}}), "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    c = one(render("api-service"), "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    assert a == c != b


@pytest.mark.parametrize("chart", CHARTS)
def test_configmap_carries_the_contract_environment(chart):
    data = one(render(chart), "ConfigMap")["data"]
    assert data["PORT"] == str(PORTS[chart])
    assert data["APP_DATABASE__MIGRATE_ON_START"] == "false"
    assert data["APP_LOG__FORMAT"] == "json"
    assert data["APP_DATABASE__SSL_MODE"] == "require"
    for key in ("RDS_HOST", "RDS_PORT", "RDS_DBNAME", "S3_RAW_BUCKET", "AWS_REGION", "APP_STORAGE__SSE",
                "APP_DATABASE__MAX_CONNECTIONS", "APP_DATABASE__ACQUIRE_TIMEOUT_MS", "APP_DATABASE__STATEMENT_TIMEOUT_MS",
                "RUST_LOG", "APP_SERVER__DRAIN_DELAY_SECS", "APP_SERVER__SHUTDOWN_TIMEOUT_SECS"):
        assert key in data, key
    assert not [k for k in data if "PASSWORD" in k or k == "DATABASE_URL"], "secrets must not be in the ConfigMap"
    assert not [k for k in data if k.startswith("AWS_") and k != "AWS_REGION"], "no AWS keys anywhere"


def test_ingest_settings_only_when_set():
    assert not [k for k in one(render("data-ingestion"), "ConfigMap")["data"] if k.startswith("APP_INGEST__")]
    data = one(render("data-ingestion", {"ingest": {"groupWindowMs": 250, "maxPendingBytes": 1024}}), "ConfigMap")["data"]
    assert data["APP_INGEST__GROUP_WINDOW_MS"] == "250"
    assert data["APP_INGEST__MAX_PENDING_BYTES"] == "1024"


@pytest.mark.parametrize("chart", CHARTS)
def test_secrets_come_from_the_secret_and_database_url_is_optional(chart):
    env = {e["name"]: e for e in one(render(chart), "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["RDS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "medrobotics-db", "key": "password"}
    assert "DATABASE_URL" not in env
    objs = render(chart, {"database": {"host": "", "secretKeys": {"password": "", "username": "", "databaseUrl": "url"}}})
    env = {e["name"]: e for e in one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "url"


@pytest.mark.parametrize("chart", CHARTS)
def test_irsa_role_annotation_and_no_token(chart):
    arn = "arn:aws:iam::111122223333:role/medrobotics-cluster-x"
    sa = one(render(chart, {"serviceAccount": {"roleArn": arn}}), "ServiceAccount")
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == arn
    assert sa["automountServiceAccountToken"] is False


def test_migration_job_runs_before_install_and_upgrade_in_api_service_only():
    objs = render("api-service")
    job = one(objs, "Job")
    ann = job["metadata"]["annotations"]
    assert ann["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]
    # It runs before the ConfigMap exists: the environment is inline.
    env = {e["name"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert {"RDS_HOST", "RDS_PASSWORD", "APP_DATABASE__SSL_MODE"} <= env
    netpol = one(objs, "NetworkPolicy", "api-service-migrate")
    assert int(netpol["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(ann["helm.sh/hook-weight"])
    assert not by_kind(render("data-ingestion"), "Job")


@pytest.mark.parametrize("chart", CHARTS)
def test_external_secret_is_created_before_the_migration_and_named_in_the_env(chart):
    values = {"database": {"existingSecret": ""}, "externalSecret": {"enabled": True, "remoteKey": "arn:aws:secretsmanager:eu-west-1:111122223333:secret:medrobotics/rds-AbCdEf"}}
    objs = render(chart, values)
    es = one(objs, "ExternalSecret")
    assert es["spec"]["dataFrom"] == [{"extract": {"key": "arn:aws:secretsmanager:eu-west-1:111122223333:secret:medrobotics/rds-AbCdEf"}}]
    assert es["metadata"]["annotations"]["helm.sh/hook-weight"] == "-10"
    assert es["spec"]["target"]["creationPolicy"] == "Orphan"
    env = {e["name"]: e for e in one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["RDS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == es["spec"]["target"]["name"] == f"{chart}-db"


@pytest.mark.parametrize("chart", CHARTS)
def test_helm_test_pod_checks_probes_and_prefixed_health_through_the_service(chart):
    objs = render(chart)
    pod = one(objs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    urls = [a for a in pod["spec"]["containers"][0]["args"] if a.startswith("http://")]
    base = f"http://{chart}:{PORTS[chart]}"
    assert urls == [f"{base}/health", f"{base}/ready", f"{base}{PREFIX[chart]}/health", f"{base}/metrics"]
    assert one(objs, "NetworkPolicy", f"{chart}-test")["metadata"]["annotations"]["helm.sh/hook"] == "test"


@pytest.mark.parametrize("chart", CHARTS)
def test_network_policy_allows_alb_prometheus_dns_postgres_https_only(chart):
    np = one(render(chart), "NetworkPolicy", chart)["spec"]
    assert np["policyTypes"] == ["Ingress", "Egress"]
    egress_ports = sorted({(p["port"], p["protocol"]) for rule in np["egress"] for p in rule["ports"]})
    assert egress_ports == [(53, "TCP"), (53, "UDP"), (443, "TCP"), (5432, "TCP")]
    ingress_ports = {p["port"] for rule in np["ingress"] for p in rule["ports"]}
    assert ingress_ports == {"http"}


@pytest.mark.parametrize("chart", CHARTS)
def test_service_monitor_scrapes_the_service_port_every_30s_for_release_prometheus(chart):
    sm = one(render(chart), "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    (ep,) = sm["spec"]["endpoints"]
    assert (ep["port"], ep["path"], ep["interval"]) == ("http", "/metrics", "30s")


@pytest.mark.parametrize("chart", CHARTS)
def test_notes_render(chart):
    notes = deploycheck.render_chart(chart, REQUIRED, include_notes=True)[f"{chart}/templates/NOTES.txt"]
    assert f"helm test {chart}" in notes
    assert "/metrics is not routed" in notes


# --- chart files -----------------------------------------------------------------------------


@pytest.mark.parametrize("chart", CHARTS)
def test_every_value_is_documented(chart):
    """Every value (a key with a scalar or list) has a comment right above it, or one of its
    enclosing keys has (documenting the whole block, e.g. resources)."""
    lines = (ROOT / "helm" / chart / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, bool]] = []  # (indent, documented) of enclosing keys
    undocumented = []
    for i, line in enumerate(lines):
        m = re.match(r"^( *)([A-Za-z0-9_.\"/-]+):(.*)$", line)
        if not m:
            continue
        indent, rest = len(m.group(1)), m.group(3).strip()
        stack = [(d, doc) for d, doc in stack if d < indent]
        documented = i > 0 and lines[i - 1].strip().startswith("#")
        following = next((ln for ln in lines[i + 1:] if ln.strip() and not ln.strip().startswith("#")), "")
        is_list = following.strip().startswith("- ") and len(following) - len(following.lstrip()) >= indent
        is_leaf = bool(rest) or is_list
        if is_leaf and not documented and not any(doc for _, doc in stack):
            undocumented.append(f"{i + 1}: {line.strip()}")
        stack.append((indent, documented))
    assert not undocumented, "undocumented values:\n" + "\n".join(undocumented)


def test_both_schemas_agree_except_for_the_ingest_block():
    a = json.loads((ROOT / "helm/api-service/values.schema.json").read_text())
    b = json.loads((ROOT / "helm/data-ingestion/values.schema.json").read_text())
    ingest = b["properties"].pop("ingest")
    b["required"].remove("ingest")
    a.pop("title"), b.pop("title")
    assert a == b
    assert set(ingest["properties"]) == {"groupWindowMs", "groupMaxRecords", "groupMaxBytes", "maxPendingBytes", "idempotencyTtlSecs"}


@pytest.mark.parametrize("chart", CHARTS)
def test_chart_metadata(chart):
    meta = load_yaml(f"helm/{chart}/Chart.yaml")
    lib = load_yaml("helm/medrobotics-lib/Chart.yaml")
    assert meta["apiVersion"] == "v2" and meta["type"] == "application"
    (dep,) = meta["dependencies"]
    assert dep == {"name": "medrobotics-lib", "version": lib["version"], "repository": "file://../medrobotics-lib"}
    assert lib["type"] == "library"
    assert sorted(p.name for p in (ROOT / "helm" / chart / "ci").glob("*-values.yaml")) == sorted(
        ["default-values.yaml", "external-secret-values.yaml", "full-values.yaml", "hpa-off-values.yaml", "minimal-values.yaml", "tracing-values.yaml"])


def test_rendering_includes_the_library(scenario_renders):
    # A declared-but-missing library would render nothing for these templates.
    for chart, name, objs in scenario_renders:
        assert by_kind(objs, "Deployment") and by_kind(objs, "ConfigMap"), (chart, name)


def test_hooks_are_only_the_expected_kinds(scenario_renders):
    for chart, name, objs in scenario_renders:
        kinds = sorted({o["kind"] for o in objs if is_hook(o)})
        assert set(kinds) <= {"ExternalSecret", "Job", "NetworkPolicy", "Pod"}, (chart, name, kinds)


@pytest.mark.parametrize("chart", CHARTS)
def test_certificate_verification_needs_the_rds_ca_bundle(chart):
    message = render_error(chart, deploycheck.deep_merge(REQUIRED, {"database": {"sslMode": "verify-full"}}))
    assert "database.sslRootCert" in message
    data = one(render(chart, {"database": {"sslMode": "verify-full", "sslRootCert": "/etc/rds-ca/global-bundle.pem"}}), "ConfigMap")["data"]
    assert data["APP_DATABASE__SSL_ROOT_CERT"] == "/etc/rds-ca/global-bundle.pem"


def _drain_timing(objs: list[dict]) -> tuple[int, int, int, int]:
    """(drain delay, ALB deregistration delay, ALB health-check detection, grace) of one render."""
    data = one(objs, "ConfigMap")["data"]
    ann = one(objs, "Ingress")["metadata"]["annotations"]
    dereg = int(re.search(r"deregistration_delay\.timeout_seconds=(\d+)", ann["alb.ingress.kubernetes.io/target-group-attributes"]).group(1))
    detect = int(ann["alb.ingress.kubernetes.io/unhealthy-threshold-count"]) * int(ann["alb.ingress.kubernetes.io/healthcheck-interval-seconds"])
    grace = one(objs, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    return int(data["APP_SERVER__DRAIN_DELAY_SECS"]), dereg, detect, grace


def test_drain_outlasts_the_alb_everywhere(scenario_renders, overlay_renders):
    # README and values.yaml: the pod keeps accepting while the ALB may still route to it (until
    # its health checks fail) and while requests it sent may still run (deregistration delay).
    renders = [(f"{chart}/{name}", objs) for chart, name, objs in scenario_renders if by_kind(objs, "Ingress")]
    renders += [(f"{o}/{svc}", [x for x in objs if x["metadata"]["name"].startswith(svc)])
                for o, objs in overlay_renders.items() if by_kind(objs, "Ingress") for svc in CHARTS]
    assert len(renders) > 10
    for where, objs in renders:
        drain, dereg, detect, grace = _drain_timing(objs)
        assert drain > dereg and drain > detect, (where, drain, dereg, detect)
        # The final flush's bound fits in what is left: at least 15 s beyond drain + shutdown.
        shutdown = int(one(objs, "ConfigMap")["data"]["APP_SERVER__SHUTDOWN_TIMEOUT_SECS"])
        assert grace >= drain + shutdown + 15, (where, grace, drain, shutdown)


def test_readme_and_guide_state_the_chart_drain_numbers():
    values = load_yaml("helm/data-ingestion/values.yaml")
    drain, shutdown = values["server"]["drainDelaySeconds"], values["server"]["shutdownTimeoutSeconds"]
    dereg, grace = values["ingress"]["deregistrationDelaySeconds"], values["terminationGracePeriodSeconds"]
    for doc in ("README.md", "docs/operations.md"):
        text = " ".join((ROOT / doc).read_text().split())
        for fragment in (f"`server.drainDelaySeconds` ({drain} s)", f"deregistration delay {dereg} s",
                         f"`server.shutdownTimeoutSeconds` ({shutdown} s)", f"`terminationGracePeriodSeconds` ({grace})"):
            assert fragment in text, (doc, fragment)


def test_the_two_releases_never_render_the_same_object():
    # helm refuses to install an object another release owns: every non-hook object of one
    # chart must differ from the other's, in every environment and shared ci scenario.
    shared = {}
    for chart in CHARTS:
        for name, values in deploycheck.scenarios(chart):
            shared.setdefault(name, {})[chart] = values
    pairs = [(name, v) for name, v in shared.items() if len(v) == 2]
    assert {"values-prod", "values-dev", "ci-external-secret-values"} <= {n for n, _ in pairs}
    for name, values in pairs:
        owned = [{(o["kind"], o["metadata"]["name"]) for o in deploycheck.chart_objects(chart, values[chart]) if not is_hook(o)}
                 for chart in CHARTS]
        assert not owned[0] & owned[1], (name, owned[0] & owned[1])
    # The production values with the charts' own key sync switched on: refused, not a clash.
    # The contradiction is the first thing said, before remoteKey is asked for: with it
    # resolved (auth.existingSecret kept, the sync off) no remoteKey is needed at all.
    arn = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:medrobotics/api-keys-AbCdEf"
    for chart in CHARTS:
        for sync in ({"enabled": True}, {"enabled": True, "remoteKey": arn}):
            prod = deploycheck.deep_merge(shared["values-prod"][chart], {"auth": {"externalSecret": sync}})
            message = render_error(chart, prod)
            assert "exclude each other" in message and "remoteKey is required" not in message, message
