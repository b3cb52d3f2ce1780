"""k8s/ and helm/ must not drift. k8s/base is the charts rendered with ci/default-values.yaml;
these tests compare them object by object after removing what legitimately differs:
Helm/Argo CD bookkeeping labels and annotations, the ConfigMap name hash kustomize adds,
and environment delivery (the Helm migration hook inlines the ConfigMap because it runs
before the ConfigMap exists; the Argo CD Sync hook can read it)."""

from __future__ import annotations

import copy
import difflib
import functools
import json
import re

import pytest
from conftest import ROOT, kustomize, load_yaml, one

import deploycheck

IGNORED_LABELS = {"helm.sh/chart", "app.kubernetes.io/managed-by"}
IGNORED_ANNOTATION_PREFIXES = ("helm.sh/", "argocd.argoproj.io/", "checksum/")
HASH_SUFFIX = re.compile(r"-[a-z0-9]{10}$")


def clean_meta(meta: dict) -> None:
    labels = meta.get("labels") or {}
    for key in IGNORED_LABELS:
        labels.pop(key, None)
    annotations = meta.get("annotations") or {}
    for key in list(annotations):
        if key.startswith(IGNORED_ANNOTATION_PREFIXES):
            annotations.pop(key)
    if "annotations" in meta and not annotations:
        meta.pop("annotations")


def effective_env(container: dict, configmaps: dict[str, dict]) -> list:
    env = []
    for source in container.pop("envFrom", []):
        ref = source.get("configMapRef")
        assert ref, f"unexpected envFrom source {source}"
        for key, value in sorted(configmaps[ref["name"]].items()):
            env.append({"name": key, "value": value})
    env.extend(container.pop("env", []))
    return sorted(env, key=lambda e: e["name"])


def normalise(objs: list[dict]) -> dict[tuple[str, str], dict]:
    objs = copy.deepcopy(objs)
    configmaps = {}
    for o in objs:
        if o["kind"] == "ConfigMap":
            o["metadata"]["name"] = HASH_SUFFIX.sub("", o["metadata"]["name"])
            configmaps[o["metadata"]["name"]] = o["data"]
    out = {}
    for o in objs:
        clean_meta(o["metadata"])
        template = o.get("spec", {}).get("template")
        if template:
            clean_meta(template["metadata"])
            for c in template["spec"]["containers"]:
                for source in c.get("envFrom", []):
                    if "configMapRef" in source:
                        source["configMapRef"]["name"] = HASH_SUFFIX.sub("", source["configMapRef"]["name"])
                c["effectiveEnv"] = effective_env(c, configmaps)
        out[(o["kind"], o["metadata"]["name"])] = o
    return out


@functools.cache
def helm_side() -> dict:
    objs = []
    for chart in deploycheck.CHARTS:
        values = load_yaml(f"helm/{chart}/ci/default-values.yaml")
        for o in deploycheck.chart_objects(chart, values):
            if o["metadata"].get("annotations", {}).get("helm.sh/hook") == "test":
                continue  # helm test pod and its policy: Helm only
            objs.append(o)
    return normalise(objs)


@functools.cache
def kustomize_side() -> dict:
    namespace_objs = {(o["kind"], o["metadata"]["name"]) for o in kustomize("namespace")}
    return {k: v for k, v in normalise(kustomize("base")).items() if k not in namespace_objs}


def diff(a: dict, b: dict) -> str:
    left = json.dumps(a, indent=1, sort_keys=True).splitlines()
    right = json.dumps(b, indent=1, sort_keys=True).splitlines()
    return "\n".join(difflib.unified_diff(left, right, "helm", "k8s/base", lineterm="", n=2))


def test_same_objects_on_both_sides():
    assert sorted(helm_side()) == sorted(kustomize_side())


@pytest.mark.parametrize("key", sorted(helm_side()), ids=lambda k: f"{k[0]}/{k[1]}")
def test_object_is_identical(key):
    helm_obj, k8s_obj = copy.deepcopy(helm_side()[key]), copy.deepcopy(kustomize_side().get(key))
    assert k8s_obj is not None, f"{key} missing from k8s/base"
    assert helm_obj == k8s_obj, diff(helm_obj, k8s_obj)


def _project(objs: list[dict], chart: str) -> dict:
    """What an environment changes: HPA bounds, resources, config (minus endpoints), ALB scheme."""
    norm = normalise([o for o in objs if o["metadata"]["name"].startswith(chart)])
    dep = norm[("Deployment", chart)]["spec"]["template"]["spec"]["containers"][0]
    hpa = norm[("HorizontalPodAutoscaler", chart)]["spec"]
    config = {e["name"]: e.get("value") for e in dep["effectiveEnv"] if "value" in e}
    for endpoint in ("RDS_HOST", "S3_RAW_BUCKET"):
        config.pop(endpoint)
    return {
        "hpa": (hpa["minReplicas"], hpa["maxReplicas"]),
        "resources": dep["resources"],
        "config": config,
        "scheme": norm[("Ingress", chart)]["metadata"]["annotations"]["alb.ingress.kubernetes.io/scheme"],
    }


@pytest.mark.parametrize("env", ["dev", "prod"])
@pytest.mark.parametrize("chart", deploycheck.CHARTS)
def test_overlay_matches_the_environment_values_file(env, chart):
    values = deploycheck.deep_merge(load_yaml(f"helm/{chart}/values-{env}.yaml"), deploycheck.injected(chart))
    helm_view = _project(deploycheck.chart_objects(chart, values), chart)
    k8s_view = _project(kustomize(f"overlays/{env}"), chart)
    assert helm_view == k8s_view


def test_namespace_has_the_alb_readiness_gate_and_restricted_pod_security():
    ns = one(kustomize("namespace"), "Namespace")
    labels = ns["metadata"]["labels"]
    assert labels["elbv2.k8s.aws/pod-readiness-gate-inject"] == "enabled"
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    deny = one(kustomize("namespace"), "NetworkPolicy")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def test_argocd_application_points_at_an_overlay_that_exists():
    app = one(kustomize("overlays/argocd"), "Application", "medrobotics")
    path = app["spec"]["source"]["path"]
    assert (ROOT / path / "kustomization.yaml").exists()
    assert app["spec"]["destination"]["namespace"] == "medrobotics"
    assert app["spec"]["project"] == one(kustomize("overlays/argocd"), "AppProject")["metadata"]["name"]


def test_external_secrets_overlay_produces_the_secrets_the_workloads_read():
    objs = kustomize("overlays/external-secrets")
    db = one(objs, "ExternalSecret", "medrobotics-db")
    keys = one(objs, "ExternalSecret", "medrobotics-api-keys")
    store = one(objs, "SecretStore")
    for es in (db, keys):
        assert es["spec"]["secretStoreRef"] == {"name": store["metadata"]["name"], "kind": "SecretStore"}
    sa = store["spec"]["provider"]["aws"]["auth"]["jwt"]["serviceAccountRef"]["name"]
    assert one(objs, "ServiceAccount", sa)["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith("external-secrets")
    (item,) = keys["spec"]["data"]
    for dep in [o for o in objs if o["kind"] == "Deployment"]:
        pod = dep["spec"]["template"]["spec"]
        refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in pod["containers"][0]["env"]}
        assert refs == {db["spec"]["target"]["name"]}
        (volume,) = [v for v in pod["volumes"] if "secret" in v]
        assert volume["secret"]["secretName"] == keys["spec"]["target"]["name"]
        assert [i["key"] for i in volume["secret"]["items"]] == [item["secretKey"]]
