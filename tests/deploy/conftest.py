"""Shared helpers for the deployment tests (run by scripts/validate inside .cache/validate/venv)."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "validate.d"))

import deploycheck  # noqa: E402

# The minimum every install provides (ci/default-values.yaml).
REQUIRED = {
    "database": {"host": "db.example.internal", "existingSecret": "medrobotics-db"},
    "storage": {"rawBucket": "medrobotics-raw-example"},
    "auth": {"existingSecret": "medrobotics-api-keys"},
}


def render(chart: str, values: dict | None = None, **kw) -> list[dict]:
    return deploycheck.chart_objects(chart, deploycheck.deep_merge(REQUIRED, values or {}), **kw)


def render_raw(chart: str, values: dict) -> list[dict]:
    """Render with exactly these values (no REQUIRED defaults)."""
    return deploycheck.chart_objects(chart, values)


def by_kind(objs: list[dict], kind: str) -> list[dict]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in by_kind(objs, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def is_hook(obj: dict) -> bool:
    return "helm.sh/hook" in obj["metadata"].get("annotations", {})


@functools.cache
def _kustomize_text(overlay: str) -> str:
    import subprocess

    return subprocess.run([deploycheck.KUBECTL, "kustomize", str(ROOT / "k8s" / overlay)],
                          capture_output=True, text=True, check=True).stdout


def kustomize(overlay: str) -> list[dict]:
    return deploycheck.load_docs(_kustomize_text(overlay))


def all_scenario_renders():
    for chart in deploycheck.CHARTS:
        for name, values in deploycheck.scenarios(chart):
            yield chart, name, deploycheck.chart_objects(chart, values)


@pytest.fixture(scope="session")
def scenario_renders():
    return list(all_scenario_renders())


@pytest.fixture(scope="session")
def overlay_renders():
    return {o: kustomize(o) for o in deploycheck.OVERLAYS}


def load_yaml(path: str | Path):
    return yaml.safe_load((ROOT / path).read_text())
