"""deploy.sh and cleanup.sh, exercised with --dry-run: the ordered list of actions they take
(install: storage and metrics before monitoring, the load balancer controller before any
Ingress; removal in reverse), what they pass to the charts, and their refusals."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT

import deploycheck

ENV = {
    "RAW_BUCKET": "medrobotics-raw-111122223333",
    "RDS_HOST": "db.example.internal",
    "PUBLIC_ACCESS_CIDRS": "203.0.113.0/24",
    "AWS_REGION": "eu-west-1",
}

# Action id -> pattern of a printed command.
ACTIONS = {
    "images-stack": r"^aws cloudformation deploy .*--stack-name medrobotics-images",
    "cluster-stack": r"^aws cloudformation deploy .*--stack-name medrobotics-cluster ",
    "kubeconfig": r"^aws eks update-kubeconfig ",
    "namespace": r"^kubectl apply -k \S+/k8s/namespace$",
    "ebs-csi-active": r"^aws eks wait addon-active .*--addon-name aws-ebs-csi-driver$",
    "storageclass": r"^kubectl apply -f \S+/storageclass-gp3.yaml$",
    "metrics-server": r"^helm upgrade --install metrics-server ",
    "cluster-autoscaler": r"^helm upgrade --install cluster-autoscaler ",
    "lb-controller": r"^helm upgrade --install aws-load-balancer-controller ",
    "external-secrets": r"^helm upgrade --install external-secrets ",
    # The External Secrets objects: k8s/components/external-secrets with this deploy's settings.
    "external-secrets-objects": r"^kubectl apply -k \S+/k8s/\.deploy-external-secrets\.\S+$",
    "grafana-secret": r"^kubectl create secret generic grafana-admin ",
    "monitoring": r"^helm upgrade --install prometheus ",
    "monitoring-objects": r"^kubectl apply -k \S+/k8s/monitoring$",
    "db-secret": r"^kubectl create secret generic medrobotics-db ",
    "api-keys-secret": r"^kubectl create secret generic medrobotics-api-keys ",
    "api-service": r"^helm upgrade --install api-service ",
    "data-ingestion": r"^helm upgrade --install data-ingestion ",
    "helm-test": r"^helm test ",
    "verify": r"^kubectl get hpa ",
    # cleanup
    "uninstall-data-ingestion": r"^helm uninstall data-ingestion ",
    "uninstall-api-service": r"^helm uninstall api-service ",
    "wait-ingress-gone": r"^kubectl wait ingress .*--for=delete",
    "delete-monitoring-objects": r"^kubectl delete -k \S+/k8s/monitoring",
    "uninstall-monitoring": r"^helm uninstall prometheus ",
    "delete-monitoring-volumes": r"^kubectl delete pvc --namespace monitoring",
    "uninstall-external-secrets": r"^helm uninstall external-secrets ",
    "delete-namespace": r"^kubectl delete -k \S+/k8s/namespace",
    "uninstall-lb-controller": r"^helm uninstall aws-load-balancer-controller ",
    "uninstall-cluster-autoscaler": r"^helm uninstall cluster-autoscaler ",
    "uninstall-metrics-server": r"^helm uninstall metrics-server ",
    "delete-storageclass": r"^kubectl delete -f \S+/storageclass-gp3.yaml",
    "delete-cluster-stack": r"^aws cloudformation delete-stack .*--stack-name medrobotics-cluster$",
}


def dry_run(script: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    if env is None:
        return _dry_run_cached(script, args)
    return _dry_run(script, args, env)


@functools.cache
def _dry_run_cached(script: str, args: tuple[str, ...]) -> subprocess.CompletedProcess:
    return _dry_run(script, args, None)


def _dry_run(script: str, args: tuple[str, ...], env: dict | None) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROOT / "deploy" / script), "--dry-run", *args], capture_output=True, text=True,
                          env={**os.environ, **ENV, **(env or {})}, check=False, timeout=60)


def commands(output: str) -> list[str]:
    return [line.removeprefix("[dry-run] ") for line in output.splitlines() if line.startswith("[dry-run] ")]


def actions(output: str) -> list[str]:
    out = []
    for cmd in commands(output):
        for name, pattern in ACTIONS.items():
            if re.search(pattern, cmd) and (not out or out[-1] != name):
                out.append(name)
    return out


def test_deploy_dry_run_takes_every_action_in_order():
    proc = dry_run("deploy.sh")
    assert proc.returncode == 0, proc.stderr
    assert actions(proc.stdout) == [
        "images-stack", "cluster-stack", "ebs-csi-active", "kubeconfig",
        "namespace", "ebs-csi-active", "storageclass", "metrics-server", "cluster-autoscaler", "lb-controller",
        "grafana-secret", "monitoring", "monitoring-objects",
        "db-secret", "api-keys-secret", "api-service", "data-ingestion", "helm-test",
        "verify",
    ]


def test_deploy_with_external_secrets_installs_the_operator_before_the_workloads():
    proc = dry_run("deploy.sh", "--external-secrets")
    assert proc.returncode == 0, proc.stderr
    order = actions(proc.stdout)
    assert order.index("lb-controller") < order.index("external-secrets") < order.index("external-secrets-objects") < order.index("api-service")
    assert "db-secret" not in order
    # Without API_KEYS_SECRET_ARN the API keys stay a Kubernetes Secret.
    assert "api-keys-secret" in order


def test_deploy_syncs_the_api_keys_too_when_their_secret_arn_is_given():
    arn = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:medrobotics/api-keys-AbCdEf"
    proc = dry_run("deploy.sh", "--external-secrets", env={"API_KEYS_SECRET_ARN": arn})
    assert proc.returncode == 0, proc.stderr
    order = actions(proc.stdout)
    assert order.index("external-secrets-objects") < order.index("api-service")
    assert "api-keys-secret" not in order
    assert f"ApiKeysSecretArn={arn}" in proc.stdout


def test_install_order_storage_and_metrics_before_monitoring_controller_before_ingress():
    order = actions(dry_run("deploy.sh").stdout)
    assert order.index("storageclass") < order.index("monitoring")
    assert order.index("metrics-server") < order.index("monitoring")
    # The charts create the Ingresses; the controller (and its webhook) must exist first.
    assert order.index("lb-controller") < order.index("api-service")
    # ServiceMonitors ship with the charts: the operator's CRDs must exist first.
    assert order.index("monitoring") < order.index("api-service")


def test_cleanup_dry_run_removes_in_reverse_order():
    proc = dry_run("cleanup.sh")
    assert proc.returncode == 0, proc.stderr
    assert actions(proc.stdout) == [
        "kubeconfig",
        "uninstall-data-ingestion", "uninstall-api-service", "wait-ingress-gone",
        "delete-monitoring-objects", "uninstall-monitoring", "delete-monitoring-volumes",
        "uninstall-external-secrets", "delete-namespace",
        "uninstall-lb-controller", "uninstall-cluster-autoscaler", "uninstall-metrics-server", "delete-storageclass",
        "delete-cluster-stack",
    ]


def test_cleanup_order_is_the_install_order_reversed():
    order = actions(dry_run("cleanup.sh").stdout)
    # The ALB goes (with its Ingress) while the controller still runs to delete it.
    assert order.index("wait-ingress-gone") < order.index("uninstall-lb-controller")
    # Volumes are deleted while the EBS CSI driver (removed with the cluster) still runs.
    assert order.index("delete-monitoring-volumes") < order.index("delete-storageclass") < order.index("delete-cluster-stack")
    assert order.index("uninstall-monitoring") < order.index("uninstall-metrics-server")


def test_deploy_passes_the_charts_exactly_the_injected_values():
    cmds = [c for c in commands(dry_run("deploy.sh", "workloads").stdout) if c.startswith("helm upgrade --install api-service")]
    (cmd,) = cmds
    keys = re.findall(r"--set ([A-Za-z.]+)=", cmd)
    assert keys == deploycheck.DEPLOY_INJECTED_KEYS
    assert "--values " + str(ROOT / "helm/api-service/values-prod.yaml") in cmd
    assert "--atomic" in cmd and "--wait" in cmd


def test_certificate_and_waf_acl_reach_both_charts_only_when_given():
    cert = "arn:aws:acm:eu-west-1:111122223333:certificate/11111111-2222-3333-4444-555555555555"
    waf = "arn:aws:wafv2:eu-west-1:111122223333:regional/webacl/medrobotics/a1b2c3d4-5678-90ab-cdef-111122223333"
    releases = [c for c in commands(dry_run("deploy.sh", "workloads", env={"CERTIFICATE_ARN": cert, "WAF_ACL_ARN": waf}).stdout)
                if c.startswith("helm upgrade --install ") and "/helm/" in c]
    assert len(releases) == 2
    for cmd in releases:
        assert f"--set ingress.certificateArn={cert}" in cmd and f"--set ingress.wafAclArn={waf}" in cmd
    for cmd in commands(dry_run("deploy.sh", "workloads").stdout):
        assert "ingress.certificateArn" not in cmd and "ingress.wafAclArn" not in cmd


def test_every_external_chart_is_pinned_from_versions_env():
    versions = dict(re.findall(r"^([A-Z_]+)=(.*)$", (ROOT / "deploy/versions.env").read_text(), re.M))
    proc = dry_run("deploy.sh", "--external-secrets")
    installs = [c for c in commands(proc.stdout) if c.startswith("helm upgrade --install")]
    external = [c for c in installs if not c.split()[4].startswith(str(ROOT))]
    assert len(external) == 5
    for cmd in external:
        version = re.search(r"--version (\S+)", cmd)
        assert version and version.group(1) in versions.values(), cmd
    assert "--set image.tag=" + versions["CLUSTER_AUTOSCALER_IMAGE_TAG"] in proc.stdout


def test_commands_are_idempotent_forms():
    out = dry_run("deploy.sh", "--external-secrets").stdout
    for cmd in commands(out):
        assert not cmd.startswith("helm install "), cmd
        if cmd.startswith("aws cloudformation deploy"):
            assert "--no-fail-on-empty-changeset" in cmd
        if cmd.startswith("kubectl create ") and "secret" not in cmd and "namespace" not in cmd:
            pytest.fail(f"non-idempotent create: {cmd}")


def test_public_endpoint_open_to_the_world_is_refused():
    proc = dry_run("deploy.sh", "cluster", env={"PUBLIC_ACCESS_CIDRS": "10.1.0.0/16,0.0.0.0/0"})
    assert proc.returncode != 0
    assert "must not contain 0.0.0.0/0" in proc.stderr


def fake_bin(tmp_path: Path, tools: dict[str, str]) -> str:
    """A PATH with the basic utilities and fake aws/kubectl/helm printing the given versions."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "sed", "sort", "head", "dirname", "cat", "printf", "tr", "grep", "mktemp", "chmod", "rm"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    for tool, output in tools.items():
        script = bin_dir / tool
        script.write_text(f"#!/bin/bash\necho '{output}'\n")
        script.chmod(0o755)
    return str(bin_dir)


def test_preflight_names_missing_and_outdated_tools(tmp_path):
    path = fake_bin(tmp_path, {"aws": "aws-cli/1.18.69 Python/3.8", "helm": "v3.16.2"})
    proc = subprocess.run(["bash", str(ROOT / "deploy/deploy.sh"), "preflight"], capture_output=True, text=True,
                          env={**ENV, "PATH": path, "HOME": str(tmp_path)}, check=False, timeout=60)
    assert proc.returncode != 0
    assert "aws 1.18.69 is too old (need 2.15.0 or newer)" in proc.stderr
    assert "kubectl is not installed (need 1.28.0 or newer)" in proc.stderr
    assert "helm 3.16.2" in proc.stdout


def test_usage_and_unknown_arguments():
    assert "Usage: deploy/deploy.sh" in subprocess.run([str(ROOT / "deploy/deploy.sh"), "--help"], capture_output=True, text=True, check=True).stdout
    proc = subprocess.run([str(ROOT / "deploy/deploy.sh"), "--bogus"], capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and "unknown argument: --bogus" in proc.stderr


def fake_cluster(tmp_path: Path, secrets: set[str]) -> tuple[str, Path]:
    """fake_bin plus aws/kubectl/helm that log every call to calls.log; `kubectl get secret X`
    succeeds only for the Secrets named."""
    bin_dir = Path(fake_bin(tmp_path, {}))
    log = tmp_path / "calls.log"
    for tool in ("cut", "realpath", "sleep", "cp", "mkdir", "ls"):
        found = shutil.which(tool)
        if found and not (bin_dir / tool).exists():
            (bin_dir / tool).symlink_to(found)
    # aws: FAKE_AWS_<n> answers a call whose arguments contain <pattern> (FAKE_AWS_PATTERNS,
    # "|"-separated n:pattern); the account id otherwise.
    (bin_dir / "aws").write_text(
        '#!/bin/bash\necho "aws $*" >>"$CALLS"\n'
        'if [ "$1" = --version ]; then echo "aws-cli/2.17.0 Python/3.12"; exit 0; fi\n'
        'IFS="|" read -ra rules <<<"${FAKE_AWS:-}"\n'
        'for rule in "${rules[@]}"; do pat=${rule%%=>*}; ans=${rule#*=>}\n'
        '  if [[ "$*" == *"$pat"* ]]; then [ "$ans" = FAIL ] && exit 255; printf "%s\\n" "$ans"; exit 0; fi\ndone\n'
        'echo 111122223333\n')
    (bin_dir / "helm").write_text('#!/bin/bash\necho "helm $*" >>"$CALLS"\n'
                                  'if [ "$1" = version ]; then echo v3.16.2; fi\n')
    # kubectl: logs the whole call; `apply -k DIR` keeps DIR as built by the real kubectl
    # (REAL_KUBECTL) next to the log; `get ingress api-service` answers FAKE_ALB_HOST from
    # the FAKE_ALB_AFTER-th call on.
    (bin_dir / "kubectl").write_text(
        '#!/bin/bash\necho "kubectl $*" >>"$CALLS"\n'
        'if [ "$1" = --context ]; then shift 2; fi\n'
        'if [ "$1 $2" = "get secret" ]; then case " $SECRETS " in *" $3 "*) exit 0 ;; *) exit 1 ;; esac; fi\n'
        # The running release, as deploy.sh's guard reads it (empty: not installed).
        'case "$*" in\n'
        '  "get deployment "*) printf "%s" "${DEPLOYED_IMAGE:-}"; exit 0 ;;\n'
        '  "get ingress "*certificate-arn*) printf "%s" "${DEPLOYED_CERT:-}"; exit 0 ;;\n'
        '  "get ingress "*wafv2-acl-arn*) printf "%s" "${DEPLOYED_WAF:-}"; exit 0 ;;\n'
        'esac\n'
        'if [ "$1 $2" = "version --client" ]; then echo "Client Version: v1.31.0"; fi\n'
        'if [ "$1 $2" = "apply -k" ] && [ -n "${REAL_KUBECTL:-}" ]; then n=$(ls "$CALLS".k* 2>/dev/null | wc -l)\n'
        '  "$REAL_KUBECTL" kustomize "$3" >"$CALLS.k$n.yaml" || exit 1; fi\n'
        'if [ "$1 $2 $3" = "get ingress api-service" ]; then echo x >>"$CALLS.ingress"\n'
        '  [ "$(wc -l <"$CALLS.ingress")" -ge "${FAKE_ALB_AFTER:-1}" ] && printf "%s" "${FAKE_ALB_HOST:-}"; fi\n'
        'if [ "$1 $2" = "get hpa" ]; then echo 40; fi\n')
    # curl: /health answers from the FAKE_CURL_AFTER-th call on; data routes 401.
    # (plain http: the 301 redirect to HTTPS).
    (bin_dir / "curl").write_text(
        '#!/bin/bash\necho "curl $*" >>"$CALLS"\nurl=${*: -1}\n'
        'case "$url" in http://*) printf 301 ;;\n'
        '  */health) echo x >>"$CALLS.curl"\n'
        '  [ "$(wc -l <"$CALLS.curl")" -ge "${FAKE_CURL_AFTER:-1}" ] || exit 7; echo ok ;;\n'
        '  *) printf 401 ;; esac\n')
    for tool in ("aws", "helm", "kubectl", "curl"):
        (bin_dir / tool).chmod(0o755)
    for tool in ("wc",):
        found = shutil.which(tool)
        if found and not (bin_dir / tool).exists():
            (bin_dir / tool).symlink_to(found)
    return str(bin_dir), log


CERT = "arn:aws:acm:eu-west-1:111122223333:certificate/11111111-2222-3333-4444-555555555555"


def rds_ca(tmp_path: Path) -> str:
    ca = tmp_path / "rds-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    return str(ca)


def run_steps(tmp_path: Path, steps: list[str], secrets: set[str], env: dict,
              timeout: int = 60) -> tuple[subprocess.CompletedProcess, list[str]]:
    """deploy.sh STEPS (no dry run) against the fake aws/kubectl/helm/curl of fake_cluster."""
    path, log = fake_cluster(tmp_path, secrets)
    proc = subprocess.run(["bash", str(ROOT / "deploy/deploy.sh"), *steps], capture_output=True, text=True,
                          env={**ENV, "CERTIFICATE_ARN": CERT, "RDS_CA_BUNDLE": rds_ca(tmp_path),
                               "REAL_KUBECTL": deploycheck.KUBECTL,
                               "PATH": path, "HOME": str(tmp_path), "CALLS": str(log),
                               "SECRETS": " ".join(sorted(secrets)), **env}, check=False, timeout=timeout)
    return proc, (log.read_text().splitlines() if log.exists() else [])


def run_workloads(tmp_path: Path, secrets: set[str], env: dict) -> tuple[subprocess.CompletedProcess, list[str]]:
    return run_steps(tmp_path, ["workloads"], secrets, env)


def without_context(call: str) -> str:
    return re.sub(r"^(kubectl --context|helm --kube-context) \S+ ", lambda m: m.group(1).split()[0] + " ", call)


def test_workloads_refuse_to_install_without_the_api_keys_secret(tmp_path):
    proc, calls = run_workloads(tmp_path, {"medrobotics-db"}, {})
    assert proc.returncode != 0
    assert "Secret medrobotics/medrobotics-api-keys is missing" in proc.stderr
    assert "create-key" in proc.stderr and "API_KEYS_FILE" in proc.stderr
    assert not [c for c in calls if "upgrade --install" in c]


def test_workloads_refuse_an_api_keys_file_holding_a_plain_key(tmp_path):
    keys = tmp_path / "keys.json"
    keys.write_text('[{"name": "dashboard", "scopes": ["read"], "sha256": "' + "ab" * 32 + '"}, "mrk_' + "A" * 43 + '"]')
    proc, calls = run_workloads(tmp_path, {"medrobotics-db"}, {"API_KEYS_FILE": str(keys)})
    assert proc.returncode != 0 and "contains a plain API key" in proc.stderr
    assert not [c for c in calls if "create secret" in c]


def test_workloads_create_the_api_keys_secret_once_from_the_file_then_keep_it(tmp_path):
    keys = tmp_path / "keys.json"
    keys.write_text('[{"name": "dashboard", "scopes": ["read"], "sha256": "' + "ab" * 32 + '"}]\n')
    proc, calls = run_workloads(tmp_path, {"medrobotics-db"}, {"API_KEYS_FILE": str(keys)})
    assert proc.returncode == 0, proc.stderr
    (create,) = [without_context(c) for c in calls if "create secret" in c]
    assert create == f"kubectl create secret generic medrobotics-api-keys --namespace medrobotics --from-file keys.json={keys}"
    calls = [without_context(c) for c in calls]
    assert calls.index(create) < min(i for i, c in enumerate(calls) if c.startswith("helm upgrade"))
    again = tmp_path / "again"
    again.mkdir()
    proc, calls = run_workloads(again, {"medrobotics-db", "medrobotics-api-keys"}, {"API_KEYS_FILE": str(keys)})
    assert proc.returncode == 0, proc.stderr
    assert "API keys: Secret medrobotics-api-keys exists" in proc.stdout
    assert not [c for c in calls if "create secret" in c]


# --- the release guard: a shell missing a setting must not silently change what runs ------------
# run_steps starts from a shell with what a prod deploy needs (CERTIFICATE_ARN, RDS_CA_BUNDLE):
# prod refuses to run without a certificate at all (issue 14.12), so the guard's refusal to
# drop HTTPS (issue 21.3) is what stops a bare shell on dev, where HTTP-only is allowed. The
# WAF and the image are guarded on both.
WAF = "arn:aws:wafv2:eu-west-1:111122223333:regional/webacl/medrobotics/a1b2c3d4-5678-90ab-cdef-111122223333"
RUNNING = {"DEPLOYED_IMAGE": "111122223333.dkr.ecr.eu-west-1.amazonaws.com/medrobotics/api-service:1.4.2",
           "DEPLOYED_CERT": CERT, "DEPLOYED_WAF": WAF}
SECRETS = {"medrobotics-db", "medrobotics-api-keys"}
# A shell with none of the deploy's settings beyond the basics (ENV), on each environment.
BARE = {"CERTIFICATE_ARN": "", "WAF_ACL_ARN": "", "IMAGE_TAG": "", "RDS_CA_BUNDLE": ""}
DEV = {"ENVIRONMENT": "dev"}
PROD = {"ENVIRONMENT": "prod"}
KEEP = {"CERTIFICATE_ARN": CERT, "WAF_ACL_ARN": WAF, "IMAGE_TAG": "1.4.2"}


def upgrades(calls: list[str]) -> list[str]:
    calls = [without_context(c) for c in calls]
    return [c for c in calls if c.startswith("helm upgrade --install ") and "/helm/" in c]


def test_redeploy_from_a_bare_dev_shell_refuses_to_drop_https_waf_and_image(tmp_path):
    proc, calls = run_workloads(tmp_path, SECRETS, {**RUNNING, **BARE, **DEV})
    assert proc.returncode != 0
    assert "CERTIFICATE_ARN is not set: this deploy would remove HTTPS" in proc.stderr
    assert f"Set CERTIFICATE_ARN={CERT} to keep it, or ALLOW_TLS_REMOVAL=1" in proc.stderr
    assert f"Set WAF_ACL_ARN={WAF} to keep it, or ALLOW_WAF_REMOVAL=1" in proc.stderr
    assert "IMAGE_TAG is not set: this deploy would change it to the chart's default tag 0.1.0" in proc.stderr
    assert "Set IMAGE_TAG=1.4.2 to keep it" in proc.stderr
    assert "refusing to deploy api-service" in proc.stderr
    assert not upgrades(calls), "nothing may be upgraded before the guard passes"


def test_redeploy_from_a_bare_prod_shell_is_refused_for_its_missing_certificate(tmp_path):
    # The prod requirement stops it first (the guard never gets to offer ALLOW_TLS_REMOVAL).
    proc, calls = run_workloads(tmp_path, SECRETS, {**RUNNING, **BARE, **PROD})
    assert proc.returncode != 0
    assert "ENVIRONMENT=prod needs CERTIFICATE_ARN" in proc.stderr
    assert not upgrades(calls)


def test_redeploy_of_prod_with_its_certificate_still_refuses_to_drop_the_waf_and_image(tmp_path):
    proc, calls = run_workloads(tmp_path, SECRETS, {**RUNNING, **PROD, "WAF_ACL_ARN": "", "IMAGE_TAG": ""})
    assert proc.returncode != 0
    assert "would remove HTTPS" not in proc.stderr
    assert f"Set WAF_ACL_ARN={WAF} to keep it" in proc.stderr and "Set IMAGE_TAG=1.4.2 to keep it" in proc.stderr
    assert "refusing to deploy api-service" in proc.stderr
    assert not upgrades(calls)


@pytest.mark.parametrize("environment", ["dev", "prod"])
@pytest.mark.parametrize("missing", ["CERTIFICATE_ARN", "WAF_ACL_ARN", "IMAGE_TAG"])
def test_each_missing_setting_alone_is_refused(tmp_path, environment, missing):
    message = {"CERTIFICATE_ARN": "would remove HTTPS", "WAF_ACL_ARN": "would detach it",
               "IMAGE_TAG": "IMAGE_TAG is not set"}[missing]
    if environment == "prod" and missing == "CERTIFICATE_ARN":
        message = "ENVIRONMENT=prod needs CERTIFICATE_ARN"
    env = {**RUNNING, **KEEP, "ENVIRONMENT": environment, missing: ""}
    proc, calls = run_workloads(tmp_path, SECRETS, env)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr
    assert not upgrades(calls)


@pytest.mark.parametrize("environment", ["dev", "prod"])
def test_redeploy_with_the_same_settings_keeps_them(tmp_path, environment):
    proc, calls = run_workloads(tmp_path, SECRETS, {**RUNNING, **KEEP, "ENVIRONMENT": environment})
    assert proc.returncode == 0, proc.stderr
    assert len(upgrades(calls)) == 2
    for cmd in upgrades(calls):
        assert "--set image.tag=1.4.2" in cmd
        assert f"--set ingress.certificateArn={CERT}" in cmd and f"--set ingress.wafAclArn={WAF}" in cmd


def test_asked_changes_pass_the_guard(tmp_path):
    # A new image is asked for with IMAGE_TAG; HTTPS and the WAF go only when explicitly
    # allowed, and HTTPS only where HTTP-only is allowed at all (dev).
    env = {**RUNNING, **BARE, **DEV, "IMAGE_TAG": "1.4.3", "ALLOW_TLS_REMOVAL": "1", "ALLOW_WAF_REMOVAL": "1"}
    proc, calls = run_workloads(tmp_path, SECRETS, env)
    assert proc.returncode == 0, proc.stderr
    assert len(upgrades(calls)) == 2
    for cmd in upgrades(calls):
        assert "--set image.tag=1.4.3" in cmd
        assert "ingress.certificateArn" not in cmd and "ingress.wafAclArn" not in cmd


def test_allowing_tls_removal_does_not_let_prod_run_without_https(tmp_path):
    env = {**RUNNING, **BARE, **PROD, "RDS_CA_BUNDLE": rds_ca(tmp_path), "IMAGE_TAG": "1.4.2",
           "ALLOW_TLS_REMOVAL": "1", "ALLOW_WAF_REMOVAL": "1"}
    proc, calls = run_workloads(tmp_path, SECRETS, env)
    assert proc.returncode != 0 and "ENVIRONMENT=prod needs CERTIFICATE_ARN" in proc.stderr
    assert not upgrades(calls)


def test_image_pinned_by_digest_counts_as_a_change_without_image_tag(tmp_path):
    env = {"DEPLOYED_IMAGE": "111122223333.dkr.ecr.eu-west-1.amazonaws.com/medrobotics/api-service@sha256:" + "ab" * 32}
    proc, calls = run_workloads(tmp_path, SECRETS, env)
    assert proc.returncode != 0 and "IMAGE_TAG is not set" in proc.stderr
    assert not upgrades(calls)


@pytest.mark.parametrize("environment", ["dev", "prod"])
def test_first_install_needs_no_recorded_settings(tmp_path, environment):
    proc, calls = run_workloads(tmp_path, SECRETS, {"ENVIRONMENT": environment})
    assert proc.returncode == 0, proc.stderr
    assert "api-service: not installed yet (first install)" in proc.stdout
    assert "data-ingestion: not installed yet (first install)" in proc.stdout
    assert len(upgrades(calls)) == 2


def test_node_group_bounds_are_settable_and_kept_when_unset():
    proc = dry_run("deploy.sh", "cluster", env={"NODE_MAX_SIZE": "9", "NODE_MIN_SIZE": "3"})
    assert proc.returncode == 0, proc.stderr
    (stack,) = [c for c in commands(proc.stdout) if c.startswith("aws cloudformation deploy") and "eks-cluster" in c]
    assert "NodeMaxSize=9" in stack and "NodeMinSize=3" in stack
    (stack,) = [c for c in commands(dry_run("deploy.sh", "cluster").stdout) if "eks-cluster" in c]
    assert "NodeMaxSize" not in stack and "NodeMinSize" not in stack
    proc = dry_run("deploy.sh", "cluster", env={"NODE_MAX_SIZE": "six"})
    assert proc.returncode != 0 and "NODE_MAX_SIZE must be a whole number of nodes" in proc.stderr
