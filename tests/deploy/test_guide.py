"""docs/operations.md cannot drift from what it documents: every shell block and inline command
passes shellcheck, every deploy.sh/cleanup.sh invocation it shows runs (as a dry run), every
Helm key it names exists in the charts, every deploy setting it lists is read by the scripts,
and every pod it asks you to create is admitted by the namespace's `restricted` profile."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess

import pytest
import yaml
from conftest import ROOT, load_yaml

GUIDE = (ROOT / "docs" / "operations.md").read_text()
ENV = {"RAW_BUCKET": "medrobotics-raw-111122223333", "RDS_HOST": "db.example.internal",
       "PUBLIC_ACCESS_CIDRS": "203.0.113.0/24", "AWS_REGION": "eu-west-1", "CLUSTER_NAME": "medrobotics-cluster"}
# What the guide writes for "fill this in": <pod>, <account>, <previous rev>, ...
PLACEHOLDER = re.compile(r"<[a-z][a-z0-9 _-]*>")
COMMANDS = ("kubectl ", "helm ", "aws ", "deploy/", "curl ", "docker ", "scripts/", "git ", "argocd ")


def fenced(lang: str) -> list[str]:
    return [m.group(1) for m in re.finditer(rf"^ *```{lang}\n(.*?)^ *```$", GUIDE, re.S | re.M)]


def dedent(block: str) -> str:
    lines = block.splitlines()
    indent = min((len(line) - len(line.lstrip()) for line in lines if line.strip()), default=0)
    return "\n".join(line[indent:] for line in lines) + "\n"


def inline_commands() -> list[str]:
    prose = re.sub(r"^ *```.*?^ *```$", "", GUIDE, flags=re.S | re.M)
    spans = re.findall(r"`([^`\n]+)`", prose.replace("\n  ", " "))
    # A command has arguments (`deploy/addons/` is a path); it may start with VAR=value settings.
    return [s for s in spans if " " in s and re.sub(r"^(?:[A-Z_]+=\S+ )+", "", s).startswith(COMMANDS)]


def shell_snippets() -> list[str]:
    return [dedent(b) for b in fenced("bash")] + [c + "\n" for c in inline_commands()]


def test_the_guide_has_commands_to_check():
    assert len(fenced("bash")) >= 8 and len(inline_commands()) >= 40


def test_every_shell_snippet_passes_shellcheck(tmp_path):
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is needed (scripts/validate installs it)"
    failures = []
    for i, snippet in enumerate(shell_snippets()):
        path = tmp_path / f"snippet{i}.sh"
        path.write_text("#!/usr/bin/env bash\n" + PLACEHOLDER.sub("PLACEHOLDER", snippet))
        # SC2016: `sh -c '... $VAR ...'` run inside a pod expands there, on purpose.
        proc = subprocess.run([shellcheck, "--format=gcc", "--exclude=SC2016", str(path)],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            failures.append(f"{snippet.strip()}\n{proc.stdout}")
    assert not failures, "\n\n".join(failures)


def test_port_forward_never_blocks_the_command_after_it():
    # `kubectl port-forward` stays in the foreground: `port-forward ... && curl` never reaches curl.
    for snippet in shell_snippets():
        for line in snippet.splitlines():
            if "port-forward" in line:
                after = line.split("port-forward", 1)[1]
                assert not re.search(r"&&|;|\|", after) or re.search(r"&\s*$", after.split("#")[0]), line


def test_debug_pods_pass_the_restricted_pod_security_standard():
    for snippet in shell_snippets():
        for line in snippet.splitlines():
            if re.search(r"kubectl (-n \S+ )?debug ", line):
                assert "--profile=restricted" in line, line
            if re.search(r"kubectl (-n \S+ )?run .*--image", line):
                pytest.fail(f"kubectl run makes a pod the restricted namespace refuses: {line}")
    pods = [d for block in fenced("yaml") for d in yaml.safe_load_all(dedent(block)) if d and d.get("kind") == "Pod"]
    assert pods, "the guide shows a debug pod manifest"
    for pod in pods:
        spec = pod["spec"]
        psc = spec.get("securityContext", {})
        for c in spec["containers"]:
            sc = c.get("securityContext", {})
            assert sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True
            assert sc.get("runAsUser", psc.get("runAsUser", 0)) != 0
            assert sc.get("allowPrivilegeEscalation") is False
            assert sc.get("capabilities", {}).get("drop") == ["ALL"]
            assert sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type") == "RuntimeDefault"
            assert c["resources"]["limits"]


def script_invocations() -> list[list[str]]:
    out = []
    for snippet in shell_snippets():
        for line in snippet.splitlines():
            line = line.split(" #", 1)[0].strip()
            m = re.search(r"((?:[A-Z_]+=\S+ )*deploy/(?:deploy|cleanup)\.sh[^;&|`]*)", line)
            if m and not PLACEHOLDER.search(m.group(1)):
                out.append(shlex.split(m.group(1)))
    return out


# The files the guide has the operator fetch or make before the commands that name them, as
# they sit in the operator's working directory: the RDS CA bundle ("Database TLS": get it)
# and the API keys file ("API keys": create-key entries). Contents of the right shape only.
OPERATOR_FILES = {
    "global-bundle.pem": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    "keys.json": '[{"name": "dashboard", "scopes": ["read"], "sha256": "' + "ab" * 32 + '"}]\n',
}


def test_every_script_invocation_in_the_guide_runs_as_a_dry_run(tmp_path):
    invocations = script_invocations()
    assert any("--keep-cluster" in i for i in invocations) and any("workloads" in i for i in invocations)
    # Run where an operator following the guide runs them: a directory holding the files the
    # guide told them to prepare (a dry run still checks a named file is there and readable).
    for name, content in OPERATOR_FILES.items():
        (tmp_path / name).write_text(content)
    for argv in invocations:
        env = dict(ENV)
        while "=" in argv[0]:
            key, value = argv.pop(0).split("=", 1)
            env[key] = value
        args = [a for a in argv[1:] if a != "--dry-run"]
        proc = subprocess.run([str(ROOT / argv[0]), "--dry-run", *args], capture_output=True, text=True,
                              env={**os.environ, **env}, cwd=tmp_path, check=False, timeout=60)
        assert proc.returncode == 0, (argv, proc.stderr[-2000:])


@pytest.mark.parametrize("script", ["deploy/deploy.sh", "deploy/cleanup.sh", "scripts/validate"])
def test_help_forms_run_and_name_every_flag_the_guide_uses(script):
    proc = subprocess.run([str(ROOT / script), "--help"], capture_output=True, text=True, check=False, timeout=30)
    assert proc.returncode == 0 and proc.stdout.strip()
    name = script.split("/")[-1]
    used = set()
    for snippet in shell_snippets():
        for line in snippet.splitlines():
            if f"{script} " in line or line.strip().endswith(script):
                used |= set(re.findall(r"\s(--[a-z][a-z-]+)", line.split(script, 1)[1].split(" #")[0]))
    for flag in used:
        assert flag in proc.stdout, f"{name} --help does not mention {flag}, which docs/operations.md uses"


def _paths(tree: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in tree.items():
        out.add(prefix + key)
        if isinstance(value, dict):
            out |= _paths(value, prefix + key + ".")
    return out


def test_every_helm_key_the_guide_names_exists():
    known, top = set(), set()
    for chart in ("api-service", "data-ingestion"):
        values = load_yaml(f"helm/{chart}/values.yaml")
        known |= _paths(values)
        top |= set(values)
    named = set(re.findall(r"`([a-z][A-Za-z0-9]*(?:\.[A-Za-z0-9]+)+)", GUIDE))
    named |= set(re.findall(r"--set \"?([a-z][A-Za-z0-9.]+)=", GUIDE))
    keys = {k for k in named if k.split(".")[0] in top}
    assert {"server.drainDelaySeconds", "auth.existingSecret", "autoscaling.minReplicas"} <= keys
    unknown = sorted(k for k in keys if k not in known)
    assert not unknown, f"docs/operations.md names Helm keys the charts do not have: {unknown}"


def test_every_deploy_setting_in_the_table_is_read_by_the_scripts():
    scripts = "".join((ROOT / "deploy" / f).read_text() for f in ("lib.sh", "deploy.sh", "cleanup.sh"))
    table = GUIDE[GUIDE.index("| setting | default | meaning |"):]
    table = table[:table.index("\n\n")]
    names = set(re.findall(r"^\| `([A-Z_]+)`(?: / `([A-Z_]+)`|, `([A-Z_]+)`)?", table, re.M))
    settings = {n for row in names for n in row if n}
    assert {"DB_SECRET_NAME", "NODE_MAX_SIZE", "ALLOW_TLS_REMOVAL", "AWS_REGION"} <= settings
    for name in settings:
        assert re.search(rf"\b{name}\b", scripts), f"{name} is documented but no deploy script reads it"
    assert "AWS_DEFAULT_REGION" in table and "AWS_DEFAULT_REGION" in (ROOT / "deploy/lib.sh").read_text()


def test_json_and_yaml_blocks_parse():
    import json

    for block in fenced("json"):
        json.loads(block)
    for block in fenced("yaml"):
        list(yaml.safe_load_all(dedent(block)))
