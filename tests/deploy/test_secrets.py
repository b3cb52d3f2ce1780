"""No secret value in any rendered manifest, ConfigMap or values file: secrets reach the pods
only as references to Secrets (secretKeyRef, a Secret volume), which nothing in this
repository creates. Scanned: every chart scenario, every kustomize overlay, every values file
(charts, ci/ scenarios, environment files, add-on and monitoring values) and the kustomize
environment files and literals. The scanner itself is tested against planted secrets, so a
clean result means something."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from conftest import ROOT

import deploycheck

# Variable or value names that hold secrets.
SECRET_NAME = re.compile(r"(?i)(password|passwd|secret|token|credential|private.?key|access.?key|api.?key|database.?url|^APP_AUTH__KEYS$)")
# Values that are secrets, wherever they appear.
SECRET_VALUES = {
    "API key (mrk_...)": re.compile(r"mrk_[A-Za-z0-9_-]{20,}"),
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "URL with a password": re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:[^/\s@'\"]+@"),
    "bearer token": re.compile(r"Bearer\s+[A-Za-z0-9._~+/-]{16,}"),
}
# Where a key hash may hide: ConfigMap data, env values, values files. (Image digests,
# `sha256:<hex>`, and the checksum/config annotation are hashes of public content and are
# neither of those; a hash preceded by ':' is a digest.)
KEY_HASH = re.compile(r"(?<![0-9A-Fa-f:])[0-9A-Fa-f]{64}(?![0-9A-Fa-f])")
# Keys whose value names a Secret or a key inside one (a reference, not a secret): camelCase
# *Key / *Keys (secretKey, passwordKey), existingSecret, secretName, ... Case-sensitive, so
# that APP_AUTH__KEYS is not taken for one.
REFERENCE_KEY = re.compile(r"([a-z](Key|Keys)|existingSecret|secretName|secretStoreRef|configSecret)$")
REFERENCE_PARENTS = {"secretKeys", "secretKeyRef", "secretStoreRef", "secretRef"}
# Lists of Secret names the Prometheus operator mounts (kube-prometheus-stack values).
REFERENCE_LISTS = {("alertmanagerSpec", "secrets"), ("prometheusSpec", "secrets")}


def value_findings(text: str, *, hashes: bool) -> list[str]:
    found = [name for name, pattern in SECRET_VALUES.items() if pattern.search(text)]
    if hashes and KEY_HASH.search(text):
        found.append("key hash (64 hex characters)")
    return found


def walk(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from walk(v, (*path, str(k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, (*path, str(i)))
    else:
        yield path, node


def values_findings(doc: Any) -> list[str]:
    """Secret-named keys with a literal value, and secret-looking values, in a values tree."""
    out = []
    for path, value in walk(doc):
        if value in (None, "", [], {}) or isinstance(value, bool):
            continue
        key = next((p for p in reversed(path) if not p.isdigit()), "")
        where = ".".join(path)
        is_reference = (REFERENCE_KEY.search(key) or REFERENCE_PARENTS & set(path)
                        or any(tuple(path[i:i + 2]) in REFERENCE_LISTS for i in range(len(path) - 1)))
        if SECRET_NAME.search(key) and not is_reference:
            out.append(f"{where}: secret-named value")
        # An env list entry {name: RDS_PASSWORD, value: ...} carries its name one level up.
        if key == "value" and len(path) >= 2:
            parent = doc
            for p in path[:-1]:
                parent = parent[int(p)] if isinstance(parent, list) else parent[p]
            if isinstance(parent, dict) and SECRET_NAME.search(str(parent.get("name", ""))):
                out.append(f"{where}: literal value of {parent['name']}")
        for finding in value_findings(str(value), hashes=True):
            out.append(f"{where}: {finding}")
    return out


def env_file_findings(text: str, where: str) -> list[str]:
    out = []
    for line in text.splitlines():
        line = line.strip().removeprefix("- ")
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, value = line.split("=", 1)
        if SECRET_NAME.search(name):
            out.append(f"{where}: {name} is secret-named")
        out.extend(f"{where}: {name}: {f}" for f in value_findings(value, hashes=True))
    return out


def containers(obj: dict) -> list[dict]:
    spec = obj.get("spec", {})
    if obj["kind"] in ("Deployment", "Job"):
        spec = spec["template"]["spec"]
    elif obj["kind"] != "Pod":
        return []
    return spec.get("containers", []) + spec.get("initContainers", [])


def pod_spec(obj: dict) -> dict | None:
    if obj["kind"] in ("Deployment", "Job"):
        return obj["spec"]["template"]["spec"]
    return obj["spec"] if obj["kind"] == "Pod" else None


def object_findings(obj: dict) -> list[str]:
    """Secrets in one rendered object: a Secret at all, secret names or values in a ConfigMap,
    literal secret env values, AWS keys, and secret-looking text anywhere."""
    out = []
    name = f"{obj['kind']}/{obj['metadata'].get('name')}"
    if obj["kind"] == "Secret":
        out.append(f"{name}: a Secret is rendered (secrets must be referenced, never created from the repository)")
    if obj["kind"] == "ConfigMap":
        for key, value in (obj.get("data") or {}).items():
            if SECRET_NAME.search(key):
                out.append(f"{name}: {key} is secret-named")
            out.extend(f"{name}: {key}: {f}" for f in value_findings(str(value), hashes=True))
    for c in containers(obj):
        for e in c.get("env", []):
            if e["name"] in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
                out.append(f"{name}: {e['name']} (the pods use IRSA, never static AWS keys)")
            elif SECRET_NAME.search(e["name"]) and "secretKeyRef" not in e.get("valueFrom", {}):
                out.append(f"{name}: {e['name']} is not read from a Secret")
            if "value" in e:
                out.extend(f"{name}: {e['name']}: {f}" for f in value_findings(str(e["value"]), hashes=True))
    out.extend(f"{name}: {f}" for f in value_findings(yaml.safe_dump(obj), hashes=False))
    return out


def secret_references(obj: dict) -> set[str]:
    refs = set()
    spec = pod_spec(obj)
    if spec is None:
        return refs
    for c in containers(obj):
        for e in c.get("env", []):
            if "secretKeyRef" in e.get("valueFrom", {}):
                refs.add(e["valueFrom"]["secretKeyRef"]["name"])
        for source in c.get("envFrom", []):
            if "secretRef" in source:
                refs.add(source["secretRef"]["name"])
    for v in spec.get("volumes", []):
        if "secret" in v:
            refs.add(v["secret"]["secretName"])
    return refs


def every_rendering(scenario_renders, overlay_renders) -> Iterator[tuple[str, list[dict]]]:
    for chart, name, objs in scenario_renders:
        yield f"helm/{chart} {name}", objs
    for overlay, objs in overlay_renders.items():
        yield f"k8s/{overlay}", objs


def values_files() -> list[Path]:
    files = []
    for chart in deploycheck.CHARTS:
        files += sorted((ROOT / "helm" / chart).glob("values*.yaml")) + sorted((ROOT / "helm" / chart / "ci").glob("*.yaml"))
    files += sorted((ROOT / "deploy" / "addons").glob("*-values.yaml"))
    files += [ROOT / "k8s" / "monitoring" / "kube-prometheus-stack-values.yaml"]
    return files


# --- the scans ---------------------------------------------------------------------------------


def test_no_rendered_manifest_holds_a_secret(scenario_renders, overlay_renders):
    findings, objects = [], 0
    for where, objs in every_rendering(scenario_renders, overlay_renders):
        for obj in objs:
            objects += 1
            findings += [f"{where}: {f}" for f in object_findings(obj)]
    assert objects > 200
    assert not findings, "\n".join(findings)


def test_secrets_reach_the_pods_only_as_references_to_the_expected_secrets(scenario_renders, overlay_renders):
    for where, objs in every_rendering(scenario_renders, overlay_renders):
        synced = {o["spec"]["target"]["name"] for o in objs if o["kind"] == "ExternalSecret"}
        for obj in objs:
            for ref in secret_references(obj):
                assert ref in {"medrobotics-db", "medrobotics-api-keys"} | synced, (where, obj["metadata"]["name"], ref)


def test_every_service_pod_reads_its_database_password_and_api_keys_from_secrets(scenario_renders, overlay_renders):
    for where, objs in every_rendering(scenario_renders, overlay_renders):
        configmaps = {o["metadata"]["name"]: o.get("data", {}) for o in objs if o["kind"] == "ConfigMap"}
        for dep in [o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] in deploycheck.CHARTS]:
            (c,) = containers(dep)
            env = {e["name"]: e for e in c.get("env", [])}
            assert {"RDS_PASSWORD", "DATABASE_URL"} & set(env), where
            data = {}
            for source in c.get("envFrom", []):
                data.update(next((v for k, v in configmaps.items() if k.startswith(source["configMapRef"]["name"])), {}))
            if data.get("APP_AUTH__ENABLED") == "true":
                assert "APP_AUTH__KEYS" not in data and "APP_AUTH__KEYS" not in env, where
                assert any("secret" in v for v in dep["spec"]["template"]["spec"]["volumes"]), where


def test_no_values_file_holds_a_secret():
    findings, files = [], values_files()
    assert len(files) >= 18
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            findings += [f"{path.relative_to(ROOT)}: {f}" for f in values_findings(doc)]
    assert not findings, "\n".join(findings)


def test_no_kustomize_environment_holds_a_secret():
    findings, seen = [], 0
    for path in sorted((ROOT / "k8s").rglob("*.env")):
        seen += 1
        findings += env_file_findings(path.read_text(), str(path.relative_to(ROOT)))
    for path in sorted((ROOT / "k8s").rglob("kustomization.yaml")):
        doc = yaml.safe_load(path.read_text())
        for gen in doc.get("configMapGenerator", []) + doc.get("secretGenerator", []):
            seen += 1
            findings += env_file_findings("\n".join(gen.get("literals", [])), f"{path.relative_to(ROOT)} {gen['name']}")
        assert not doc.get("secretGenerator"), f"{path}: a secretGenerator puts secret material in git"
    assert seen >= 4
    assert not findings, "\n".join(findings)


# --- the scanner finds what it must -----------------------------------------------------------

KEY_ENTRY = '[{"name": "dashboard", "scopes": ["read"], "sha256": "' + "3f" * 32 + '"}]'


@pytest.mark.parametrize(("obj", "expected"), [
    ({"kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"APP_AUTH__KEYS": KEY_ENTRY}}, "secret-named"),
    ({"kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"KEYS": KEY_ENTRY}}, "key hash"),
    ({"kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"RDS_PASSWORD": "hunter2"}}, "secret-named"),
    ({"kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"DB": "postgres://app:hunter2@db:5432/x"}}, "URL with a password"),
    ({"kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"K": "mrk_" + "a" * 43}}, "API key"),
    ({"kind": "Secret", "metadata": {"name": "x"}, "stringData": {"password": "x"}}, "a Secret is rendered"),
    ({"kind": "Deployment", "metadata": {"name": "x"}, "spec": {"template": {"spec": {"containers": [
        {"name": "c", "env": [{"name": "RDS_PASSWORD", "value": "hunter2"}]}]}}}}, "not read from a Secret"),
    ({"kind": "Deployment", "metadata": {"name": "x"}, "spec": {"template": {"spec": {"containers": [
        {"name": "c", "env": [{"name": "AWS_ACCESS_KEY_ID", "value": "AKIAABCDEFGHIJKLMNOP"}]}]}}}}, "IRSA"),
    ({"kind": "Pod", "metadata": {"name": "x", "annotations": {"a": "Authorization: Bearer mrk_" + "b" * 43}}, "spec": {}}, "bearer token"),
])
def test_the_scanner_finds_planted_secrets_in_objects(obj, expected):
    assert any(expected in f for f in object_findings(obj)), object_findings(obj)


def test_the_scanner_finds_planted_secrets_in_values_and_env_files():
    assert values_findings({"database": {"password": "hunter2"}})
    assert values_findings({"auth": {"keys": KEY_ENTRY}})
    assert values_findings({"extraEnv": [{"name": "DATABASE_URL", "value": "postgres://u:p@h/d"}]})
    assert values_findings({"config": {"extra": {"APP_AUTH__KEYS": "[]"}}})
    assert env_file_findings("APP_AUTH__KEYS=" + KEY_ENTRY, "f")
    assert env_file_findings("RDS_PASSWORD=hunter2", "f")


def test_the_scanner_accepts_references_and_digests():
    values = {"database": {"existingSecret": "medrobotics-db", "secretKeys": {"password": "password", "databaseUrl": ""}},
              "auth": {"existingSecret": "medrobotics-api-keys", "secretKey": "keys.json"},
              "grafana": {"admin": {"existingSecret": "grafana-admin", "passwordKey": "admin-password"}},
              "image": {"digest": "sha256:" + "0123456789abcdef" * 4}}
    assert values_findings(values) == []
    dep = {"kind": "Deployment", "metadata": {"name": "x", "annotations": {"checksum/config": "ab" * 32}},
           "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "r/x@sha256:" + "cd" * 32, "env": [
               {"name": "RDS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "medrobotics-db", "key": "password"}}}]}]}}}}
    assert object_findings(dep) == []
