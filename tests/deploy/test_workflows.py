"""The GitHub Actions workflows (.github/workflows) and the release IAM template: least privilege,
pinned actions, CI equal to the README's test command, and the release's shell steps run here
(promotion by digest against a copy of the repository, the image gate against a stand-in AWS CLI:
AWS is the one boundary nothing here can reach)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

import deploycheck
from test_cloudformation import CfnLoader

WORKFLOWS = {p.name: p for p in sorted((ROOT / ".github" / "workflows").glob("*.yml"))}
SHA_PIN = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_./-]+@[0-9a-f]{40}$")
# Write scopes a job may hold, by (workflow, job); every other scope of every job is read/none.
WRITE_SCOPES = {
    ("release.yml", "images"): {"id-token"},
    ("release.yml", "promote-dev"): {"contents", "pull-requests"},
    ("release.yml", "promote-prod"): {"contents", "pull-requests"},
}
DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64
REGISTRY = "111122223333.dkr.ecr.us-east-1.amazonaws.com"


def load(name: str) -> dict:
    doc = yaml.safe_load(WORKFLOWS[name].read_text())
    # YAML 1.1 reads the key `on` as true.
    doc["on"] = doc.pop(True, doc.get("on"))
    return doc


def steps(name: str):
    for job_id, job in load(name)["jobs"].items():
        for step in job.get("steps", []):
            yield job_id, step


def step_named(workflow: str, job: str, name: str) -> dict:
    (found,) = [s for j, s in steps(workflow) if j == job and s.get("name") == name]
    return found


def test_the_pipeline_has_both_workflows():
    assert set(WORKFLOWS) == {"ci.yml", "release.yml"}


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_every_action_is_pinned_to_a_full_commit_sha_with_its_tag_noted(name):
    lines = WORKFLOWS[name].read_text().splitlines()
    uses = [(i, line) for i, line in enumerate(lines, 1) if re.match(r"^\s*(- )?uses:", line)]
    assert uses
    for lineno, line in uses:
        ref = line.split("uses:", 1)[1].split("#", 1)[0].strip()
        if ref.startswith("./"):
            continue  # a workflow of this repository, at this commit
        assert SHA_PIN.match(ref), f"{name}:{lineno}: {ref} is not pinned to a 40-hex commit"
        assert re.search(r"#\s*v\d+\.\d+\.\d+\s*$", line), f"{name}:{lineno}: note the tag the SHA came from"


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_permissions_default_to_none_and_each_job_declares_the_minimum(name):
    doc = load(name)
    assert doc["permissions"] == {}, "top-level permissions: {} (jobs opt in)"
    for job_id, job in doc["jobs"].items():
        assert "permissions" in job, f"{name} job {job_id} has no permissions: block"
        perms = job["permissions"]
        assert isinstance(perms, dict), f"{name} job {job_id}: permissions must list scopes"
        writes = {scope for scope, level in perms.items() if level == "write"}
        assert writes == WRITE_SCOPES.get((name, job_id), set()), f"{name} job {job_id} writes {writes}"
        assert set(perms.values()) <= {"read", "write", "none"}


def test_only_the_image_job_can_mint_an_oidc_token_and_only_in_its_environment():
    holders = [(n, j) for n in WORKFLOWS for j, job in load(n)["jobs"].items()
               if job.get("permissions", {}).get("id-token") == "write"]
    assert holders == [("release.yml", "images")]
    images = load("release.yml")["jobs"]["images"]
    assert images["environment"] == TEMPLATE["Parameters"]["ReleaseEnvironment"]["Default"]
    creds = [s for _, s in steps("release.yml") if "configure-aws-credentials" in s.get("uses", "")]
    assert len(creds) == 1 and set(creds[0]["with"]) >= {"role-to-assume", "aws-region"}
    text = "\n".join(p.read_text() for p in WORKFLOWS.values())
    assert "aws-access-key-id" not in text and "aws-secret-access-key" not in text


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_no_privileged_triggers_no_expression_in_shell_and_no_persisted_token(name):
    doc = load(name)
    triggers = doc["on"] if isinstance(doc["on"], (dict, list)) else [doc["on"]]
    assert "pull_request_target" not in triggers and "workflow_run" not in triggers
    for job_id, step in steps(name):
        if "run" in step:
            # ${{ }} inside a script is a template-injection hole: values come in through env.
            assert "${{" not in step["run"], f"{name} {job_id} {step.get('name')}: expression in run:"
        if "actions/checkout" in step.get("uses", ""):
            assert step["with"]["persist-credentials"] is False, f"{name} {job_id}: checkout keeps the token"


def test_release_runs_on_version_tags_only_after_ci():
    doc = load("release.yml")
    assert doc["on"] == {"push": {"tags": ["v[0-9]+.[0-9]+.[0-9]+"]}}
    jobs = doc["jobs"]
    assert jobs["ci"]["uses"] == "./.github/workflows/ci.yml"
    assert "workflow_call" in load("ci.yml")["on"]
    assert jobs["images"]["needs"] == "ci"
    assert set(jobs["promote-prod"]["needs"]) == {"images", "promote-dev"}
    assert (jobs["promote-dev"]["environment"], jobs["promote-prod"]["environment"]) == ("dev", "prod")


def test_release_builds_amd64_with_cache_sbom_and_provenance():
    builds = [s for _, s in steps("release.yml") if "build-push-action" in s.get("uses", "")]
    assert {re.search(r"SERVICE=(\S+)", s["with"]["build-args"]).group(1) for s in builds} == {"api-service", "data-ingestion"}
    for s in builds:
        w = s["with"]
        assert w["platforms"] == "linux/amd64" and w["push"] is True
        assert w["sbom"] is True and w["provenance"] == "mode=max"
        assert w["cache-from"].startswith("type=gha") and w["cache-to"].startswith("type=gha")


def test_ci_runs_every_step_of_the_readme_test_command():
    """CI is `scripts/test`, step by step: every step it defines runs in some job, and each
    job's command is one scripts/test accepts."""
    script = (ROOT / "scripts" / "test").read_text()
    defined = set(re.findall(r"^wanted (\w+) && ", script, re.M)) | {"build"}
    ran = set()
    for _, step in steps("ci.yml"):
        if "run" in step:
            m = re.fullmatch(r"scripts/test --only (\w+)", step["run"].strip())
            assert m, f"ci.yml runs {step['run']!r}: use scripts/test"
            ran.add(m.group(1))
    assert ran <= defined
    # build runs inside test/validate/resilience (they need the binaries).
    assert ran | {"build"} == defined, f"not run in CI: {defined - ran - {'build'}}"


def test_ci_caches_cargo_keyed_on_the_lock_file():
    for job_id, step in steps("ci.yml"):
        if "actions/cache" in step.get("uses", "") and "target" in step["with"]["path"]:
            assert "hashFiles('Cargo.lock'" in step["with"]["key"], job_id


# -------------------------------------------------------------------------------------------
# The release's shell steps, run here.


def run_step(step: dict, cwd: Path, env: dict, path_prefix: Path | None = None,
             extra: dict | None = None) -> subprocess.CompletedProcess:
    """As the runner does: bash -eo pipefail with the step's env (values given by the test,
    since `${{ }}` are the runner's), GITHUB_OUTPUT in a file."""
    assert set(env) == set(step.get("env", {})), f"the step's env is {sorted(step.get('env', {}))}"
    full = dict(os.environ, **env, **(extra or {}), GITHUB_OUTPUT=str(cwd / ".github-output"))
    if path_prefix:
        full["PATH"] = f"{path_prefix}:{full['PATH']}"
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
                          cwd=cwd, env=full, capture_output=True, text=True, check=False)


@pytest.fixture
def repo_copy(tmp_path) -> Path:
    dst = tmp_path / "repo"
    for part in ["k8s", "deploy"]:
        shutil.copytree(ROOT / part, dst / part)
    subprocess.run(["git", "init", "-q", "-b", "main", str(dst)], check=True)
    subprocess.run(["git", "-C", str(dst), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(dst), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base"], check=True)
    return dst


def kustomize(path: Path) -> list[dict]:
    out = subprocess.run([deploycheck.KUBECTL, "kustomize", str(path)], capture_output=True, text=True, check=True)
    return deploycheck.load_docs(out.stdout)


def images_of(objs: list[dict]) -> set[str]:
    out = set()
    for o in objs:
        spec = o.get("spec", {}).get("template", {}).get("spec", {})
        out |= {c["image"] for c in spec.get("containers", [])}
    return out


@pytest.mark.parametrize("target", ["dev", "prod"])
def test_promotion_steps_pin_the_overlay_by_digest_and_commit_only_it(repo_copy, target):
    job = f"promote-{target}"
    pin = step_named("release.yml", job, f"Pin the {target} overlay to the release digests")
    env = {"VERSION": "v1.2.3", "REGISTRY": REGISTRY, "API_DIGEST": DIGEST_A, "INGEST_DIGEST": DIGEST_B}
    proc = run_step(pin, repo_copy, env)
    assert proc.returncode == 0, proc.stderr
    rendered = kustomize(repo_copy / "k8s" / "overlays" / target)
    assert images_of(rendered) == {f"{REGISTRY}/medrobotics/api-service@{DIGEST_A}",
                                   f"{REGISTRY}/medrobotics/data-ingestion@{DIGEST_B}"}
    # The other environment is untouched.
    other = "prod" if target == "dev" else "dev"
    assert images_of(kustomize(repo_copy / "k8s" / "overlays" / other)) == images_of(kustomize(ROOT / "k8s" / "overlays" / other))

    pr = step_named("release.yml", job, "Open the promotion pull request")
    env = {"GH_TOKEN": "unused", "VERSION": "v1.2.3", "BASE": "main", "TARGET": target}
    # DRY_RUN: stop before `gh` pushes and opens the pull request (GitHub is not reachable here).
    proc = run_step(pr, repo_copy, env, extra={"DRY_RUN": "1"})
    assert proc.returncode == 0, proc.stderr
    git = lambda *a: subprocess.run(["git", "-C", str(repo_copy), *a], capture_output=True, text=True, check=True).stdout.strip()  # noqa: E731
    assert git("rev-parse", "--abbrev-ref", "HEAD") == f"promote/{target}-v1.2.3"
    assert git("diff", "--name-only", "main", "HEAD").splitlines() == [f"k8s/overlays/{target}/kustomization.yaml"]
    assert git("status", "--porcelain") == ""


def test_promotion_refuses_tags_unknown_images_and_bad_digests_changing_nothing(repo_copy):
    overlay = repo_copy / "k8s" / "overlays" / "dev" / "kustomization.yaml"
    before = overlay.read_text()
    bad = [
        [f"medrobotics/api-service={REGISTRY}/medrobotics/api-service:1.2.3"],  # a tag, no digest
        [f"medrobotics/api-service={REGISTRY}/medrobotics/api-service@sha256:abc"],  # short digest
        [f"medrobotics/api-service={REGISTRY}/medrobotics/api-service@{DIGEST_A}",
         f"medrobotics/unknown={REGISTRY}/medrobotics/unknown@{DIGEST_B}"],  # second one unknown
        [f"medrobotics/api-service={REGISTRY}/medrobotics/api-service:latest@{DIGEST_A}"],
    ]
    for args in bad:
        proc = subprocess.run([str(repo_copy / "deploy" / "promote.sh"), str(overlay.parent), "v1.2.3", *args],
                              capture_output=True, text=True, check=False)
        assert proc.returncode != 0, args
        assert overlay.read_text() == before, f"{args} changed the overlay"


def test_prod_promotion_from_dev_copies_the_digests_dev_runs(repo_copy):
    dev, prod = (repo_copy / "k8s" / "overlays" / e for e in ("dev", "prod"))
    promote = str(repo_copy / "deploy" / "promote.sh")
    # dev still holds the placeholder digest, or a tag: refuse rather than promote either.
    before = (prod / "kustomization.yaml").read_text()
    assert subprocess.run([promote, "--from", str(dev), str(prod)], capture_output=True, check=False).returncode != 0
    tagged = (dev / "kustomization.yaml").read_text().replace(f"digest: sha256:{'0' * 64}", "newTag: 1.0.0", 1)
    (dev / "kustomization.yaml").write_text(tagged)
    assert subprocess.run([promote, "--from", str(dev), str(prod)], capture_output=True, check=False).returncode != 0
    assert (prod / "kustomization.yaml").read_text() == before
    subprocess.run([promote, str(dev), "v2.0.0", f"medrobotics/api-service={REGISTRY}/medrobotics/api-service@{DIGEST_A}",
                    f"medrobotics/data-ingestion={REGISTRY}/medrobotics/data-ingestion@{DIGEST_B}"], check=True, capture_output=True)
    subprocess.run([promote, "--from", str(dev), str(prod)], check=True, capture_output=True)
    assert images_of(kustomize(prod)) == images_of(kustomize(dev))
    assert "# release v2.0.0" in (prod / "kustomization.yaml").read_text()


FAKE_AWS = r"""#!/usr/bin/env bash
# Stand-in for the AWS CLI: answers the ECR calls of deploy/verify-image.sh from FAKE_* files.
echo "$*" >>"$FAKE_LOG"
case "$1 $2" in
  "ecr describe-images") cat "$FAKE_DIR/tag-digest" ;;
  "ecr batch-get-image") cat "$FAKE_DIR/manifest" ;;
  "ecr wait") exit "$(cat "$FAKE_DIR/wait-rc")" ;;
  "ecr describe-image-scan-findings") cat "$FAKE_DIR/counts" ;;
  *) echo "unexpected: $*" >&2; exit 99 ;;
esac
"""


@pytest.fixture
def fake_aws(tmp_path):
    bindir, state = tmp_path / "bin", tmp_path / "state"
    bindir.mkdir()
    state.mkdir()
    (bindir / "aws").write_text(FAKE_AWS)
    (bindir / "aws").chmod(0o755)
    platform = "sha256:" + "c" * 64
    index = {"manifests": [
        {"digest": platform, "platform": {"os": "linux", "architecture": "amd64"}},
        {"digest": "sha256:" + "d" * 64, "platform": {"os": "unknown", "architecture": "unknown"},
         "annotations": {"vnd.docker.reference.type": "attestation-manifest"}},
    ]}
    files = {"tag-digest": DIGEST_A, "manifest": json.dumps(index), "wait-rc": "0", "counts": json.dumps({"LOW": 3, "MEDIUM": 1})}
    for k, v in files.items():
        (state / k).write_text(v)
    return {"bin": bindir, "state": state, "log": tmp_path / "aws.log", "platform": platform}


def run_verify(fake, tmp_path) -> subprocess.CompletedProcess:
    step = step_named("release.yml", "images", "Verify and scan api-service")
    cwd = tmp_path / "repo"
    cwd.mkdir(exist_ok=True)
    shutil.copytree(ROOT / "deploy", cwd / "deploy", dirs_exist_ok=True)
    return run_step(step, cwd, {"TAG": "v1.2.3", "DIGEST": DIGEST_A}, fake["bin"],
                    extra={"FAKE_DIR": str(fake["state"]), "FAKE_LOG": str(fake["log"])})


def test_image_gate_passes_a_clean_image_and_records_both_digests(fake_aws, tmp_path):
    proc = run_verify(fake_aws, tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = (tmp_path / "repo" / ".github-output").read_text().splitlines()
    assert out == [f"digest={DIGEST_A}", f"platform-digest={fake_aws['platform']}"]
    calls = fake_aws["log"].read_text()
    # The scan is read for the amd64 image, not for the index or the attestation manifest.
    assert f"imageDigest={fake_aws['platform']}" in calls.split("wait", 1)[1]
    assert "medrobotics/api-service" in calls


@pytest.mark.parametrize("change,why", [
    ({"tag-digest": DIGEST_B}, "is sha256:bbbb"),
    ({"counts": json.dumps({"CRITICAL": 1, "LOW": 2})}, "CRITICAL=1"),
    ({"counts": json.dumps({"HIGH": 4})}, "HIGH=4"),
    ({"wait-rc": "255"}, "scan did not complete"),
    ({"manifest": json.dumps({"manifests": [{"digest": DIGEST_B, "platform": {"os": "linux", "architecture": "arm64"}}]})},
     "linux/amd64"),
])
def test_image_gate_fails_the_release(fake_aws, tmp_path, change, why):
    for k, v in change.items():
        (fake_aws["state"] / k).write_text(v)
    proc = run_verify(fake_aws, tmp_path)
    assert proc.returncode != 0
    assert why in proc.stderr
    assert "digest=" not in (tmp_path / "repo" / ".github-output").read_text()


# -------------------------------------------------------------------------------------------
# deploy/cloudformation/github-oidc.yaml

TEMPLATE = yaml.load((ROOT / "deploy/cloudformation/github-oidc.yaml").read_text(), Loader=CfnLoader)  # noqa: S506


def test_release_role_trusts_one_repository_environment_only():
    role = TEMPLATE["Resources"]["ReleaseRole"]["Properties"]
    (stmt,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert stmt["Action"] == "sts:AssumeRoleWithWebIdentity"
    cond = stmt["Condition"]
    assert set(cond) == {"StringEquals"}, "no StringLike: no wildcard subject"
    eq = cond["StringEquals"]
    assert eq["token.actions.githubusercontent.com:aud"] == "sts.amazonaws.com"
    assert eq["token.actions.githubusercontent.com:sub"] == {"Fn::Sub": "repo:${GitHubRepository}:environment:${ReleaseEnvironment}"}
    assert "Default" not in TEMPLATE["Parameters"]["GitHubRepository"], "the repository must be given"
    assert re.fullmatch(TEMPLATE["Parameters"]["GitHubRepository"]["AllowedPattern"], "acme/medrobotics")
    assert not re.fullmatch(TEMPLATE["Parameters"]["GitHubRepository"]["AllowedPattern"], "acme/*")


def test_release_role_may_only_push_to_the_two_service_repositories():
    (policy,) = TEMPLATE["Resources"]["ReleaseRole"]["Properties"]["Policies"]
    stmts = policy["PolicyDocument"]["Statement"]
    assert all(s["Effect"] == "Allow" for s in stmts)
    star = [s for s in stmts if s["Resource"] == "*"]
    assert [s["Action"] for s in star] == ["ecr:GetAuthorizationToken"]
    (repo_stmt,) = [s for s in stmts if s["Resource"] != "*"]
    assert all(a.startswith("ecr:") and "*" not in a for a in repo_stmt["Action"])
    assert not {"ecr:DeleteRepository", "ecr:BatchDeleteImage", "ecr:SetRepositoryPolicy", "ecr:PutLifecyclePolicy"} & set(repo_stmt["Action"])
    arns = [r["Fn::Sub"] for r in repo_stmt["Resource"]]
    assert sorted(a.rsplit("/", 1)[1] for a in arns) == ["api-service", "data-ingestion"]
    assert all(":repository/${RepositoryPrefix}/" in a for a in arns)
