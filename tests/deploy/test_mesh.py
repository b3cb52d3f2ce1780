"""The optional Istio mesh (k8s/components/mesh-istio, rendered by k8s/overlays/mesh and on top of
every other overlay): off by default, STRICT mTLS, the ALB through the ingress gateway, canary
weights, limits, probes, the migration Job outside the mesh, NetworkPolicies that let exactly
the mesh's flows through, and Istio's own CRD schemas (vendored, strict)."""

from __future__ import annotations

import copy
import ipaddress
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, by_kind, kustomize, one

import deploycheck

MESH_GROUPS = ("networking.istio.io", "security.istio.io")
SERVICES = {"api-service": ("/api", 5000), "data-ingestion": ("/ingest", 8080)}
VPC_HOST = "10.0.12.34"  # a node (kubelet) or the ALB, inside the placeholder VPC 10.0.0.0/16
ISTIOD = {"namespace": "istio-system", "labels": {"app": "istiod"}, "ports": {}}


def fqdn(svc: str) -> str:
    return f"{svc}.medrobotics.svc.cluster.local"


def with_mesh(overlay: str, tmp_path: Path) -> list[dict]:
    """overlay + the mesh component, as an operator would compose them (in a copy of k8s/:
    kustomize takes relative paths only)."""
    shutil.copytree(ROOT / "k8s", tmp_path / "k8s")
    composed = tmp_path / "k8s" / "overlays" / "composed"
    composed.mkdir()
    (composed / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - ../../{overlay}\ncomponents:\n  - ../../components/mesh-istio\n")
    out = subprocess.run([deploycheck.KUBECTL, "kustomize", str(composed)], capture_output=True, text=True, check=True)
    return deploycheck.load_docs(out.stdout)


@pytest.fixture(scope="module")
def mesh() -> list[dict]:
    return kustomize("overlays/mesh")


def is_mesh(obj: dict) -> bool:
    return obj["apiVersion"].split("/")[0] in MESH_GROUPS


# -------------------------------------------------------------------------------------------
# Off by default


def test_no_overlay_or_chart_scenario_but_the_mesh_one_turns_the_mesh_on(overlay_renders, scenario_renders):
    renders = [(f"k8s/{o}", objs) for o, objs in overlay_renders.items() if o != "overlays/mesh"]
    renders += [(f"helm/{c} {n}", objs) for c, n, objs in scenario_renders]
    for where, objs in renders:
        assert not [o for o in objs if is_mesh(o)], where
        for ns in by_kind(objs, "Namespace"):
            assert "istio-injection" not in ns["metadata"].get("labels", {}), where


# -------------------------------------------------------------------------------------------
# The mesh overlay


def test_strict_mtls_for_the_whole_namespace_without_exceptions(mesh):
    (pa,) = [o for o in mesh if o["kind"] == "PeerAuthentication"]
    assert pa["metadata"]["namespace"] == "medrobotics"
    assert pa["spec"] == {"mtls": {"mode": "STRICT"}}, "namespace-wide (no selector), no portLevelMtls"
    assert one(mesh, "Namespace")["metadata"]["labels"]["istio-injection"] == "enabled"


def test_services_keep_working_under_the_sidecar(mesh):
    for svc in SERVICES:
        dep = one(mesh, "Deployment", svc)
        pod = dep["spec"]["template"]
        notes = pod["metadata"]["annotations"]
        assert notes["sidecar.istio.io/rewriteAppHTTPProbers"] == "true"
        proxy = yaml.safe_load(notes["proxy.istio.io/config"])
        assert proxy["holdApplicationUntilProxyStarts"] is True
        env = {}
        for cm in by_kind(mesh, "ConfigMap"):
            if cm["metadata"]["name"].startswith(svc):
                env = cm["data"]
        drain = int(env["APP_SERVER__DRAIN_DELAY_SECS"]) + int(env["APP_SERVER__SHUTDOWN_TIMEOUT_SECS"])
        proxy_drain = int(proxy["terminationDrainDuration"].rstrip("s"))
        # The proxy outlives the service's drain and shutdown, and the pod's grace covers both.
        assert drain < proxy_drain < pod["spec"]["terminationGracePeriodSeconds"]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert "httpGet" in pod["spec"]["containers"][0][probe], "only HTTP probes are rewritten"
        assert pod["metadata"]["labels"]["medrobotics.io/track"] == "stable"


def test_the_migration_job_runs_without_a_sidecar(mesh):
    job = one(mesh, "Job", "api-service-migrate")
    assert job["spec"]["template"]["metadata"]["labels"]["sidecar.istio.io/inject"] == "false"


def test_the_alb_enters_through_the_gateway_on_the_same_paths(mesh, overlay_renders):
    gw_dep = one(mesh, "Deployment", "medrobotics-gateway")
    gw_svc = one(mesh, "Service", "medrobotics-gateway")
    gateway = one(mesh, "Gateway", "medrobotics-gateway")
    pod_labels = gw_dep["spec"]["template"]["metadata"]["labels"]
    assert gw_dep["spec"]["template"]["metadata"]["annotations"]["inject.istio.io/templates"] == "gateway"
    assert gateway["spec"]["selector"].items() <= pod_labels.items()
    assert gw_svc["spec"]["selector"].items() <= pod_labels.items()
    ports = {p["name"]: p["containerPort"] for p in gw_dep["spec"]["template"]["spec"]["containers"][0]["ports"]}
    (server,) = gateway["spec"]["servers"]
    assert server["port"]["number"] == ports["http"] and server["port"]["protocol"] == "HTTP"
    svc_http = next(p for p in gw_svc["spec"]["ports"] if p["name"] == "http")
    assert svc_http["targetPort"] in ("http", ports["http"])
    (vs,) = by_kind(mesh, "VirtualService")
    assert vs["spec"]["gateways"] == [gateway["metadata"]["name"]]
    routes = {r["match"][0]["uri"]["prefix"]: r for r in vs["spec"]["http"]}
    before = {i["spec"]["rules"][0]["http"]["paths"][0]["path"]: i["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"]
              for i in by_kind(overlay_renders["overlays/external-secrets"], "Ingress")}
    for ingress in by_kind(mesh, "Ingress"):
        path = ingress["spec"]["rules"][0]["http"]["paths"][0]
        assert path["backend"]["service"] == {"name": "medrobotics-gateway", "port": {"name": "http"}}
        notes = ingress["metadata"]["annotations"]
        assert notes["alb.ingress.kubernetes.io/target-type"] == "ip"
        assert int(notes["alb.ingress.kubernetes.io/healthcheck-port"]) == ports["status"]
        assert notes["alb.ingress.kubernetes.io/healthcheck-path"] == "/healthz/ready"
        # The gateway routes the path to the service the Ingress used to.
        dest = routes[path["path"]]["route"][0]["destination"]
        assert dest["host"] == fqdn(before[path["path"]])
    assert set(routes) == set(before)


def test_canary_split_limits_and_outlier_detection(mesh):
    (vs,) = by_kind(mesh, "VirtualService")
    rules = {r["metadata"]["name"]: r for r in by_kind(mesh, "DestinationRule")}
    for svc, (prefix, port) in SERVICES.items():
        route = next(r for r in vs["spec"]["http"] if r["match"][0]["uri"]["prefix"] == prefix)
        weights = {d["destination"]["subset"]: d["weight"] for d in route["route"]}
        assert weights == {"stable": 100, "canary": 0}
        assert all(d["destination"]["host"] == fqdn(svc) and d["destination"]["port"]["number"] == port for d in route["route"])
        # Retries only where the request never reached a service: no POST applied twice.
        assert set(route["retries"]["retryOn"].split(",")) <= {"connect-failure", "refused-stream"}
        assert int(route["timeout"].rstrip("s")) > 30, "above the services' request timeout (30 s)"
        dr = rules[svc]["spec"]
        assert dr["host"] == fqdn(svc)
        assert dr["trafficPolicy"]["tls"]["mode"] == "ISTIO_MUTUAL"
        pool = dr["trafficPolicy"]["connectionPool"]
        assert pool["tcp"]["maxConnections"] > 0 and pool["http"]["http1MaxPendingRequests"] > 0
        od = dr["trafficPolicy"]["outlierDetection"]
        assert 0 < od["maxEjectionPercent"] <= 50, "a shared outage must never eject every pod"
        subsets = {s["name"]: s["labels"] for s in dr["subsets"]}
        assert set(subsets) == set(weights)
        stable_pods = one(mesh, "Deployment", svc)["spec"]["template"]["metadata"]["labels"]
        assert subsets["stable"].items() <= stable_pods.items()
        assert not subsets["canary"].items() <= stable_pods.items()


# -------------------------------------------------------------------------------------------
# NetworkPolicies: a small evaluator of the rendered policies (standard semantics: a pod
# selected by no policy of a direction is open in that direction; otherwise the union).


def _selects(selector: dict, labels: dict) -> bool:
    if not selector:
        return True
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions", []):
        value = labels.get(expr["key"])
        if expr["operator"] == "In" and value not in expr["values"]:
            return False
        if expr["operator"] == "NotIn" and value in expr["values"]:
            return False
        if expr["operator"] == "Exists" and expr["key"] not in labels:
            return False
    return True


def _peer_matches(peer: dict, other: dict, policy_ns: str) -> bool:
    if "ipBlock" in peer:
        return "ip" in other and ipaddress.ip_address(other["ip"]) in ipaddress.ip_network(peer["ipBlock"]["cidr"])
    if "labels" not in other:
        return False
    if "namespaceSelector" in peer:
        ns_ok = _selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": other["namespace"]})
    else:
        ns_ok = other["namespace"] == policy_ns
    return ns_ok and _selects(peer.get("podSelector", {}), other["labels"])


def _port_matches(rule_ports: list | None, port: int, target: dict) -> bool:
    if not rule_ports:
        return True
    for p in rule_ports:
        named = target.get("ports", {}).get(p.get("port")) if isinstance(p.get("port"), str) else p.get("port")
        if named == port and p.get("protocol", "TCP") == "TCP":
            return True
    return False


def allowed(policies: list[dict], src: dict, dst: dict, port: int) -> bool:
    def side(pod: dict, direction: str, peer: dict, key: str) -> bool:
        if "labels" not in pod:
            return True  # outside the cluster's pods: no policy applies
        mine = [p for p in policies if p["metadata"].get("namespace", "medrobotics") == pod["namespace"]
                and _selects(p["spec"]["podSelector"], pod["labels"]) and direction in p["spec"]["policyTypes"]]
        if not mine:
            return True
        rules = [(p, r) for p in mine for r in p["spec"].get(direction.lower(), [])]
        return any(any(_peer_matches(x, peer, p["metadata"].get("namespace", "medrobotics")) for x in r.get(key, [{}]) if x)
                   and _port_matches(r.get("ports"), port, dst) for p, r in rules)

    return side(src, "Egress", dst, "to") and side(dst, "Ingress", src, "from")


def pod_of(objs: list[dict], deployment: str) -> dict:
    dep = one(objs, "Deployment", deployment)
    tpl = dep["spec"]["template"]
    ports = {p["name"]: p["containerPort"] for c in tpl["spec"]["containers"] for p in c.get("ports", [])}
    return {"namespace": "medrobotics", "labels": tpl["metadata"]["labels"], "ports": ports, "ip": "10.0.200.1"}


def test_network_policies_let_the_mesh_flows_through_and_nothing_new(mesh):
    nps = by_kind(mesh, "NetworkPolicy")
    gateway = pod_of(mesh, "medrobotics-gateway")
    outside = {"ip": VPC_HOST}
    internet = {"ip": "203.0.113.9"}
    for svc, (_, port) in SERVICES.items():
        app = pod_of(mesh, svc)
        assert allowed(nps, gateway, app, port), f"gateway -> {svc}:{port}"
        for status in (15020, 15021):
            assert allowed(nps, outside, app, status), f"kubelet -> {svc}:{status} (rewritten probes)"
        assert allowed(nps, app, ISTIOD, 15012), f"{svc} -> istiod:15012"
        assert not allowed(nps, internet, app, 15020)
        assert not allowed(nps, app, gateway, 8080), "services never call the gateway"
        other = next(s for s in SERVICES if s != svc)
        assert not allowed(nps, app, pod_of(mesh, other), SERVICES[other][1]), "the services do not talk to each other"
    assert allowed(nps, outside, gateway, 8080) and allowed(nps, outside, gateway, 15021), "ALB -> gateway"
    assert not allowed(nps, internet, gateway, 8080)
    assert allowed(nps, gateway, ISTIOD, 15012)
    assert not allowed(nps, gateway, {"ip": "198.51.100.7"}, 443), "the gateway has no way out but to the services"


def test_the_same_flows_are_closed_without_the_mesh_policies(mesh):
    """The evaluator can say no: drop the mesh's two policies and the gateway cannot reach the
    services nor the kubelet the rewritten probe port."""
    nps = [p for p in by_kind(mesh, "NetworkPolicy") if p["metadata"]["name"] not in ("mesh-workloads", "medrobotics-gateway")]
    gateway = pod_of(mesh, "medrobotics-gateway")
    app = pod_of(mesh, "api-service")
    assert not allowed(nps, gateway, app, 5000)
    assert not allowed(nps, {"ip": VPC_HOST}, app, 15020)
    assert not allowed(nps, app, ISTIOD, 15012)


@pytest.mark.parametrize("overlay", ["overlays/dev", "overlays/prod", "overlays/external-secrets"])
def test_the_component_composes_with_every_overlay_and_validates(overlay, tmp_path):
    objs = with_mesh(overlay, tmp_path)
    mesh_objs = [o for o in objs if is_mesh(o)]
    assert {o["kind"] for o in mesh_objs} == {"PeerAuthentication", "DestinationRule", "VirtualService", "Gateway"}
    for obj in mesh_objs:
        validator = deploycheck.istio_validator(obj["apiVersion"], obj["kind"])
        assert validator is not None
        assert not list(validator.iter_errors(obj)), obj["metadata"]["name"]
    for ingress in by_kind(objs, "Ingress"):
        assert ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == "medrobotics-gateway"


# -------------------------------------------------------------------------------------------
# The schema check can fail


@pytest.mark.parametrize("mutate,where", [
    (lambda o: o["spec"]["mtls"].update(mode="STRICTLY"), "PeerAuthentication"),
    (lambda o: o["spec"].update(mtsl={"mode": "STRICT"}), "PeerAuthentication"),
    (lambda o: o["spec"]["trafficPolicy"]["outlierDetection"].update(interval="10 seconds"), "DestinationRule"),
    (lambda o: o["spec"]["trafficPolicy"].update(outlierDetction={}), "DestinationRule"),
    (lambda o: o["spec"]["http"][0]["route"][0].update(weight="100"), "VirtualService"),
    (lambda o: o["spec"]["http"][0].update(timeout="0s"), "VirtualService"),
    (lambda o: o["spec"]["servers"][0]["port"].update(protocl="HTTP"), "Gateway"),
])
def test_istio_schema_rejects_misspelt_fields_bad_enums_and_durations(mesh, mutate, where):
    obj = copy.deepcopy(next(o for o in mesh if o["kind"] == where))
    validator = deploycheck.istio_validator(obj["apiVersion"], obj["kind"])
    assert not list(validator.iter_errors(obj))
    mutate(obj)
    assert list(validator.iter_errors(obj))
