"""GitOps with Argo CD: the applications, the sync order (secrets, config, migration, rollout,
routes), rollout health, and promotion dev -> prod by digest only."""

from __future__ import annotations

import re

import pytest
import yaml
from conftest import ROOT, by_kind, kustomize, one

ARGO = "argocd.argoproj.io"
# Overlay each application deploys, and the overlay release.yml pins for it.
APPS = {"medrobotics": "overlays/external-secrets", "medrobotics-dev": "overlays/dev"}
PINNED_BY = {"medrobotics": "overlays/prod", "medrobotics-dev": "overlays/dev"}
DIGEST_IMAGE = re.compile(r"^[a-z0-9.-]+/medrobotics/(api-service|data-ingestion)@sha256:[0-9a-f]{64}$")


def wave(obj: dict) -> int:
    return int(obj["metadata"].get("annotations", {}).get(f"{ARGO}/sync-wave", "0"))


def apps() -> dict[str, dict]:
    return {a["metadata"]["name"]: a for a in by_kind(kustomize("overlays/argocd"), "Application")}


def includes(overlay: str, other: str) -> bool:
    """Whether k8s/<overlay> builds on k8s/<other> (through its resources, transitively)."""
    if overlay == other:
        return True
    doc = yaml.safe_load((ROOT / "k8s" / overlay / "kustomization.yaml").read_text())
    for res in doc.get("resources", []):
        path = (ROOT / "k8s" / overlay / res).resolve()
        if path.is_dir() and includes(str(path.relative_to(ROOT / "k8s")), other):
            return True
    return False


def test_one_application_per_environment_each_on_main_and_self_healing():
    found = apps()
    assert set(found) == set(APPS)
    project = one(kustomize("overlays/argocd"), "AppProject")
    allowed = [(d.get("server"), d.get("name"), d["namespace"]) for d in project["spec"]["destinations"]]
    for name, overlay in APPS.items():
        spec = found[name]["spec"]
        assert spec["source"]["path"] == f"k8s/{overlay}"
        assert spec["source"]["targetRevision"] == "main"
        assert spec["project"] == project["metadata"]["name"]
        dest = spec["destination"]
        assert (dest.get("server"), dest.get("name"), dest["namespace"]) in allowed
        assert spec["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
        assert spec["syncPolicy"]["retry"]["limit"] >= 3
        assert "RespectIgnoreDifferences=true" in spec["syncPolicy"]["syncOptions"]
    # The two environments are different clusters.
    assert found["medrobotics"]["spec"]["destination"] != found["medrobotics-dev"]["spec"]["destination"]


@pytest.mark.parametrize("app", sorted(APPS))
def test_the_project_allows_every_kind_the_application_renders(app):
    project = one(kustomize("overlays/argocd"), "AppProject")["spec"]
    namespaced = {(w["group"], w["kind"]) for w in project["namespaceResourceWhitelist"]}
    cluster = {(w["group"], w["kind"]) for w in project["clusterResourceWhitelist"]}
    for obj in kustomize(APPS[app]):
        group = obj["apiVersion"].split("/")[0] if "/" in obj["apiVersion"] else ""
        assert (group, obj["kind"]) in (cluster if obj["kind"] == "Namespace" else namespaced), \
            f"{app}: {obj['kind']} ({group or 'core'}) is not in the AppProject whitelist: the sync would fail"


@pytest.mark.parametrize("app", sorted(APPS))
def test_sync_waves_run_secrets_config_migration_rollout_routes_in_that_order(app):
    objs = kustomize(APPS[app])
    job = one(objs, "Job", "api-service-migrate")
    notes = job["metadata"]["annotations"]
    assert notes[f"{ARGO}/hook"] == "Sync" and notes[f"{ARGO}/hook-delete-policy"] == "BeforeHookCreation"
    deployments = by_kind(objs, "Deployment")
    assert len(deployments) == 2
    # Everything the migration reads exists first: its ConfigMap, Secrets, NetworkPolicy.
    reads = {e["configMapRef"]["name"] for c in job["spec"]["template"]["spec"]["containers"] for e in c["envFrom"]}
    for cm in by_kind(objs, "ConfigMap"):
        if cm["metadata"]["name"] in reads:
            assert wave(cm) < wave(job)
    assert wave(one(objs, "NetworkPolicy", "api-service-migrate")) < wave(job)
    for kind in ("ExternalSecret", "SecretStore"):
        for obj in by_kind(objs, kind):
            assert wave(obj) < wave(job), obj["metadata"]["name"]
    for sa in by_kind(objs, "ServiceAccount"):
        assert all(wave(sa) < wave(s) for s in by_kind(objs, "SecretStore"))
        assert wave(sa) < min(wave(d) for d in deployments)
    # The schema is migrated before any new pod starts; routes and scraping follow the rollout.
    assert all(wave(job) < wave(d) for d in deployments)
    later = by_kind(objs, "Ingress") + by_kind(objs, "ServiceMonitor")
    assert later and all(wave(o) > max(wave(d) for d in deployments) for o in later)
    assert wave(one(objs, "Namespace")) == min(wave(o) for o in objs)


@pytest.mark.parametrize("app", sorted(APPS))
def test_a_rollout_that_stalls_turns_the_application_degraded(app):
    for dep in by_kind(kustomize(APPS[app]), "Deployment"):
        spec = dep["spec"]
        # Argo CD's Deployment health: Progressing until every replica is updated and
        # available, Degraded once progressDeadlineSeconds passes without progress.
        assert 60 <= spec["progressDeadlineSeconds"] <= 900
        assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


@pytest.mark.parametrize("app", sorted(APPS))
def test_argo_managed_environments_run_images_by_digest_only(app):
    images = {c["image"] for d in by_kind(kustomize(APPS[app]), "Deployment") + by_kind(kustomize(APPS[app]), "Job")
              for c in d["spec"]["template"]["spec"]["containers"]}
    assert images and all(DIGEST_IMAGE.match(i) for i in images), images


def test_release_promotion_pins_the_overlays_the_applications_deploy():
    workflow = (ROOT / ".github" / "workflows" / "release.yml").read_text()
    for app, pinned in PINNED_BY.items():
        assert f"deploy/promote.sh k8s/{pinned} " in workflow
        assert includes(APPS[app], pinned), f"{app} deploys k8s/{APPS[app]}, which does not build on k8s/{pinned}"
    # dev and prod pull the same repositories: promotion moves a digest, never a rebuild.
    repos = {}
    for env in ("overlays/dev", "overlays/prod"):
        doc = yaml.safe_load((ROOT / "k8s" / env / "kustomization.yaml").read_text())
        repos[env] = {i["name"]: i["newName"] for i in doc["images"]}
        assert all("newTag" not in i and i["digest"].startswith("sha256:") for i in doc["images"])
    assert repos["overlays/dev"] == repos["overlays/prod"]
