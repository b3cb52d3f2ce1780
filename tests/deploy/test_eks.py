"""What a real EKS cluster would do with the artifacts (issue 14): IAM decisions evaluated on
the parsed template, the Cluster Autoscaler's and Alertmanager's own rules applied to the
rendered objects, and deploy.sh run against fake aws/kubectl/helm/curl on PATH."""

from __future__ import annotations

import copy
import fnmatch
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, by_kind, load_yaml, one
from test_cloudformation import PARAMS, RES, TEMPLATE
from test_scripts import dry_run, commands, run_steps, without_context

import deploycheck

# ---------------------------------------------------------------------------------------
# IAM, evaluated as AWS does (explicit deny > allow > implicit deny), on the parsed template.

CTX = {"AWS::Partition": "aws", "AWS::Region": "eu-west-1", "AWS::AccountId": "111122223333",
       "ClusterName": "medrobotics-cluster", "AppNamespace": "medrobotics",
       "Cluster.ClusterSecurityGroupId": "sg-0c1a55e7c1a55e7c1"}


def sub(value):
    if isinstance(value, dict) and "Fn::Sub" in value:
        text = value["Fn::Sub"]
        return re.sub(r"\$\{([^}]+)\}", lambda m: CTX[m.group(1)], text if isinstance(text, str) else text[0])
    if isinstance(value, list):
        return [sub(v) for v in value]
    return value


def statements(role: str) -> list[dict]:
    out = []
    for policy in RES[role]["Properties"]["Policies"]:
        doc = policy["PolicyDocument"]
        if "Fn::Sub" in doc:
            doc = json.loads(sub(doc))
        out.extend(doc["Statement"])
    return out


def _listify(v):
    return v if isinstance(v, list) else [v]


def condition_holds(op: str, key: str, want, ctx: dict) -> bool:
    if_exists = op.endswith("IfExists")
    base = op.removesuffix("IfExists")
    have = ctx.get(key)
    if base == "Null":
        return (have is None) == (str(want).lower() == "true")
    if have is None:
        return if_exists
    wants = [str(w) for w in _listify(want)]
    if base in ("StringEquals", "ArnEquals"):
        return any(have == w for w in wants)
    if base in ("StringLike", "ArnLike"):
        return any(fnmatch.fnmatchcase(have, w) for w in wants)
    if base == "StringNotEquals":
        return all(have != w for w in wants)
    raise AssertionError(f"condition operator {op} not modelled")


def allowed(role: str, action: str, resource: str, *, resource_tags: dict | None = None,
            request_tags: dict | None = None, **keys) -> bool:
    ctx = dict(keys)
    ctx.update({f"aws:ResourceTag/{k}": v for k, v in (resource_tags or {}).items()})
    ctx.update({f"aws:RequestTag/{k}": v for k, v in (request_tags or {}).items()})
    verdict = False
    for st in statements(role):
        if not any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in _listify(st["Action"])):
            continue
        if not any(fnmatch.fnmatchcase(resource, sub(r)) for r in _listify(st["Resource"])):
            continue
        if not all(condition_holds(op, k, v, ctx) for op, conds in st.get("Condition", {}).items() for k, v in conds.items()):
            continue
        if st["Effect"] == "Deny":
            return False
        verdict = True
    return verdict


SG = "arn:aws:ec2:eu-west-1:111122223333:security-group/{}"
# The EKS cluster security group carries EKS's tags, not the controller's.
CLUSTER_SG_TAGS = {"kubernetes.io/cluster/medrobotics-cluster": "owned", "aws:eks:cluster-name": "medrobotics-cluster"}


@pytest.mark.parametrize("action", ["ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress"])
def test_lb_controller_may_open_the_cluster_security_group_to_the_alb(action):
    """Target type ip: the rule goes on the pods' ENIs' group, the EKS cluster security group."""
    assert allowed("LoadBalancerControllerRole", action, SG.format(CTX["Cluster.ClusterSecurityGroupId"]),
                   resource_tags=CLUSTER_SG_TAGS)
    # Its own groups (tagged by it) too; an unrelated group of the account not.
    assert allowed("LoadBalancerControllerRole", action, SG.format("sg-0a1b2c3d"),
                   resource_tags={"elbv2.k8s.aws/cluster": "medrobotics-cluster"})
    assert not allowed("LoadBalancerControllerRole", action, SG.format("sg-0unrelated0"), resource_tags={})


def test_launch_template_leaves_nodes_on_the_cluster_security_group():
    """The grant above is right only while nodes (and so pod ENIs) use the cluster SG."""
    data = RES["NodeLaunchTemplate"]["Properties"]["LaunchTemplateData"]
    assert "SecurityGroupIds" not in data and "NetworkInterfaces" not in data
    assert "SecurityGroupIds" not in RES["Cluster"]["Properties"]["ResourcesVpcConfig"]


def test_lb_controller_may_not_delete_the_cluster_security_group():
    assert not allowed("LoadBalancerControllerRole", "ec2:DeleteSecurityGroup",
                       SG.format(CTX["Cluster.ClusterSecurityGroupId"]), resource_tags=CLUSTER_SG_TAGS)


# ---------------------------------------------------------------------------------------
# Helm --set arguments of a deploy.sh command, as values.

def set_values(cmd: str) -> dict:
    out: dict = {}
    for key, value in re.findall(r"--set (\S+?)=(\S*)", cmd):
        value = value.replace("\\", "")
        parts = [p.replace("\\.", ".") for p in re.split(r"(?<!\\)\.", key)]
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        if value.startswith("{") and value.endswith("}"):
            node[parts[-1]] = [v for v in value[1:-1].split(",") if v]
        else:
            node[parts[-1]] = value
    return out


def release_values(cmd: str, chart: str, env: str = "prod") -> dict:
    values = load_yaml(f"helm/{chart}/values-{env}.yaml")
    return deploycheck.deep_merge(values, set_values(cmd))


# Stack outputs and exports the fake aws answers (deploy.sh checks they are not empty).
STACK_ANSWERS = "RoleArn=>arn:aws:iam::111122223333:role/medrobotics-cluster-svc|VpcCidr=>10.40.0.0/16"


def chart_commands(calls: list[str]) -> dict[str, str]:
    calls = [without_context(c) for c in calls]
    return {c.split()[3]: c for c in calls if c.startswith("helm upgrade --install ") and "/helm/" in c}


def workloads_release(tmp_path: Path, env: dict) -> dict[str, str]:
    proc, calls = run_steps(tmp_path, ["workloads"], {"medrobotics-db", "medrobotics-api-keys"}, {"FAKE_AWS": STACK_ANSWERS, **env})
    assert proc.returncode == 0, proc.stderr
    return chart_commands(calls)


def config_of(objs: list[dict]) -> dict:
    return one(objs, "ConfigMap")["data"]


# ---------------------------------------------------------------------------------------
# 2. External Secrets from the deploy's settings.

DB_ARN = "arn:aws:secretsmanager:eu-central-1:111122223333:secret:prod/rds!db-1234-AbCdEf"
KEYS_ARN = "arn:aws:secretsmanager:eu-central-1:111122223333:secret:prod/api-keys-XyZ123"


def kustomize_dir(path: Path) -> list[dict]:
    out = subprocess.run([deploycheck.KUBECTL, "kustomize", str(path)], capture_output=True, text=True, check=True).stdout
    return deploycheck.load_docs(out)


@pytest.mark.parametrize("with_keys", [True, False])
def test_external_secrets_read_the_secrets_the_stack_grants_in_their_region(tmp_path, with_keys):
    env = {"DATABASE_SECRET_ARN": DB_ARN, "AWS_REGION": "eu-west-1"}
    if with_keys:
        env["API_KEYS_SECRET_ARN"] = KEYS_ARN
    proc, calls = run_steps(tmp_path, ["--external-secrets", "addons"], set(), env)
    assert proc.returncode == 0, proc.stderr
    builds = [deploycheck.load_docs(p.read_text()) for p in sorted(tmp_path.glob("calls.log.k*.yaml"))]
    applied = [objs for objs in builds if by_kind(objs, "SecretStore")]
    assert len(applied) == 1, calls
    objs = applied[0]
    store = one(objs, "SecretStore")
    # The secret's region (from its ARN), not AWS_REGION and not a fixed one.
    assert store["spec"]["provider"]["aws"]["region"] == "eu-central-1"
    db = one(objs, "ExternalSecret", "medrobotics-db")
    assert db["spec"]["dataFrom"] == [{"extract": {"key": DB_ARN}}]
    sa = one(objs, "ServiceAccount", "external-secrets-reader")
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == "111122223333"  # the fake stack output
    keys = [o for o in by_kind(objs, "ExternalSecret") if o["metadata"]["name"] == "medrobotics-api-keys"]
    if with_keys:
        assert keys[0]["spec"]["data"][0]["remoteRef"]["key"] == KEYS_ARN
    else:
        assert keys == []
    # Exactly the ARNs the cluster stack's ExternalSecretsRole may read.
    granted = {p.split("=", 1)[1] for c in calls for p in c.split() if p.startswith(("DatabaseSecretArn=", "ApiKeysSecretArn="))}
    remote = {db["spec"]["dataFrom"][0]["extract"]["key"]} | {k["spec"]["data"][0]["remoteRef"]["key"] for k in keys}
    assert remote <= granted or not granted


def test_external_secrets_refuse_a_secret_name_instead_of_its_arn(tmp_path):
    proc, calls = run_steps(tmp_path, ["--external-secrets", "addons"], set(), {"DATABASE_SECRET_ARN": "medrobotics/rds"})
    assert proc.returncode != 0 and "is not the full ARN" in proc.stderr
    assert not list((ROOT / "k8s").glob(".deploy-*")), "the temporary kustomization was left behind"
    assert not [c for c in calls if " apply -k " in c and "/k8s/namespace" not in c]


def test_gitops_external_secrets_follow_the_settings_file(tmp_path):
    k8s = tmp_path / "k8s"
    shutil.copytree(ROOT / "k8s", k8s)
    settings = k8s / "overlays/external-secrets/settings.yaml"
    doc = yaml.safe_load(settings.read_text())
    doc["data"].update(region="ap-southeast-2", databaseSecret=DB_ARN, apiKeysSecret=KEYS_ARN)
    settings.write_text(yaml.safe_dump(doc))
    objs = kustomize_dir(k8s / "overlays/external-secrets")
    assert one(objs, "SecretStore")["spec"]["provider"]["aws"]["region"] == "ap-southeast-2"
    assert one(objs, "ExternalSecret", "medrobotics-db")["spec"]["dataFrom"][0]["extract"]["key"] == DB_ARN
    assert one(objs, "ExternalSecret", "medrobotics-api-keys")["spec"]["data"][0]["remoteRef"]["key"] == KEYS_ARN
    assert "SET-BY-SETTINGS" not in json.dumps(objs)
    assert not [o for o in objs if o["metadata"]["name"].endswith("-settings")]


def test_chart_external_secrets_have_no_fixed_remote_key():
    for chart in deploycheck.CHARTS:
        values = load_yaml(f"helm/{chart}/values.yaml")
        assert values["externalSecret"]["remoteKey"] == "" and values["auth"]["externalSecret"]["remoteKey"] == ""
        with pytest.raises(Exception, match="externalSecret.remoteKey is required"):
            deploycheck.chart_objects(chart, deploycheck.deep_merge(load_yaml(f"helm/{chart}/ci/default-values.yaml"),
                                                                    {"externalSecret": {"enabled": True}}))


# ---------------------------------------------------------------------------------------
# 3. Cluster Autoscaler scale-down: its drain rule applied to every pod we render.

CA_VALUES = load_yaml("deploy/addons/cluster-autoscaler-values.yaml")


def blocks_scale_down(pod_template: dict, skip_local_storage: bool) -> list[str]:
    """Local volumes that keep the autoscaler from removing the pod's node (its drain rule:
    hostPath and non-memory emptyDir, unless named in safe-to-evict-local-volumes)."""
    if not skip_local_storage:
        return []
    ann = (pod_template.get("metadata") or {}).get("annotations") or {}
    if ann.get("cluster-autoscaler.kubernetes.io/safe-to-evict") == "true":
        return []
    safe = {v.strip() for v in ann.get("cluster-autoscaler.kubernetes.io/safe-to-evict-local-volumes", "").split(",")}
    return [v["name"] for v in pod_template["spec"].get("volumes", [])
            if ("hostPath" in v or ("emptyDir" in v and (v["emptyDir"] or {}).get("medium") != "Memory"))
            and v["name"] not in safe]


def pod_templates(objs: list[dict]) -> list[tuple[str, dict]]:
    return [(o["metadata"]["name"], o["spec"]["template"]) for o in objs if o["kind"] in ("Deployment", "StatefulSet")]


def test_autoscaler_can_remove_nodes_running_our_pods(scenario_renders, overlay_renders):
    flag = str(CA_VALUES["extraArgs"]["skip-nodes-with-local-storage"]).lower() == "true"
    templates = [(f"{c}/{n}/{name}", t) for c, n, objs in scenario_renders for name, t in pod_templates(objs)]
    templates += [(f"{o}/{name}", t) for o, objs in overlay_renders.items() for name, t in pod_templates(objs)]
    assert len(templates) >= 10
    for where, tpl in templates:
        # Evictable with the flag as deployed, and even if it went back to true.
        assert not blocks_scale_down(tpl, flag), where
        assert not blocks_scale_down(tpl, True), f"{where}: {blocks_scale_down(tpl, True)} not in safe-to-evict-local-volumes"


def test_autoscaler_flag_lets_the_monitoring_pods_go():
    """Prometheus, Grafana, Alertmanager and metrics-server have emptyDirs we do not template."""
    assert str(CA_VALUES["extraArgs"]["skip-nodes-with-local-storage"]).lower() == "false"


# ---------------------------------------------------------------------------------------
# 4. Grafana on a ReadWriteOnce volume.

def test_grafana_with_a_readwriteonce_volume_is_replaced_not_rolled():
    grafana = load_yaml("k8s/monitoring/kube-prometheus-stack-values.yaml")["grafana"]
    if grafana["persistence"]["enabled"] and "ReadWriteOnce" in grafana["persistence"]["accessModes"]:
        assert grafana.get("deploymentStrategy", {}).get("type") == "Recreate"


# ---------------------------------------------------------------------------------------
# 5. verify waits for the ALB.

def test_verify_waits_for_the_alb_address_and_health(tmp_path):
    proc, calls = run_steps(tmp_path, ["verify"], set(), {
        "FAKE_ALB_HOST": "k8s-medrobotics-123.eu-west-1.elb.amazonaws.com", "FAKE_ALB_AFTER": "3", "FAKE_CURL_AFTER": "3",
        "VERIFY_POLL_SECONDS": "0", "VERIFY_TIMEOUT": "60"})
    assert proc.returncode == 0, proc.stderr
    assert "waiting for the ALB address" in proc.stdout
    assert len([c for c in calls if "get ingress api-service" in c]) == 3
    assert "all checks passed" in proc.stdout


def test_verify_gives_up_at_its_deadline_naming_what_it_waited_for(tmp_path):
    proc, _ = run_steps(tmp_path, ["verify"], set(), {
        "FAKE_ALB_HOST": "k8s-medrobotics-123.eu-west-1.elb.amazonaws.com", "FAKE_CURL_AFTER": "1000000",
        "VERIFY_POLL_SECONDS": "0.2", "VERIFY_TIMEOUT": "2"}, timeout=30)
    assert proc.returncode != 0
    assert re.search(r"gave up after 2 s waiting for https://k8s-medrobotics-123\S+/api/health to answer", proc.stderr)


# ---------------------------------------------------------------------------------------
# 6. Every step talks to the cluster's context.

LOCAL_ONLY = re.compile(r"^(kubectl (config |version|create \S+ \S+ .*--dry-run=client)|helm (version|repo ))")


@pytest.mark.parametrize("step", ["addons", "monitoring", "workloads", "verify"])
def test_every_cluster_step_names_the_kube_context(tmp_path, step):
    proc, calls = run_steps(tmp_path, [step], {"medrobotics-db", "medrobotics-api-keys", "grafana-admin", "alertmanager-receivers"},
                            {"FAKE_ALB_HOST": "alb.example", "VERIFY_POLL_SECONDS": "0", "KUBE_CONTEXT": "ctx-of-medrobotics"})
    assert proc.returncode == 0, proc.stderr
    cluster_calls = [c for c in calls if c.startswith(("kubectl ", "helm ")) and not LOCAL_ONLY.match(without_context(c))]
    assert cluster_calls
    for call in cluster_calls:
        assert call.startswith(("kubectl --context ctx-of-medrobotics ", "helm --kube-context ctx-of-medrobotics ")), call


# ---------------------------------------------------------------------------------------
# 7. SSE-KMS reaches the services.

KMS = "arn:aws:kms:eu-west-1:111122223333:key/0d8a1e2f-1111-2222-3333-444455556666"


def test_kms_key_arn_makes_both_services_write_sse_kms_with_that_key(tmp_path):
    cmds = workloads_release(tmp_path, {"RAW_BUCKET_KMS_KEY_ARN": KMS})
    assert set(cmds) == set(deploycheck.CHARTS)
    for chart, cmd in cmds.items():
        config = config_of(deploycheck.chart_objects(chart, release_values(cmd, chart)))
        assert config["APP_STORAGE__SSE"] == "aws:kms" and config["APP_STORAGE__KMS_KEY_ID"] == KMS
    # And the role may use that key (stack parameter).
    assert f"RawBucketKmsKeyArn={KMS}" in dry_run("deploy.sh", "cluster", env={"RAW_BUCKET_KMS_KEY_ARN": KMS}).stdout


# ---------------------------------------------------------------------------------------
# 8. Kustomize path: the network CIDRs are settings.

def test_kustomize_network_policies_take_their_cidrs_from_the_settings(tmp_path):
    k8s = tmp_path / "k8s"
    shutil.copytree(ROOT / "k8s", k8s)
    settings = k8s / "overlays/prod/settings.yaml"
    doc = yaml.safe_load(settings.read_text())
    doc["data"] = {"vpcCidr": "172.20.0.0/16", "databaseCidr": "172.20.8.0/24"}
    settings.write_text(yaml.safe_dump(doc))
    for overlay in ("overlays/prod", "overlays/external-secrets"):
        policies = by_kind(kustomize_dir(k8s / overlay), "NetworkPolicy")
        seen = set()
        for np in policies:
            for rule in np["spec"].get("ingress", []):
                for peer in rule.get("from", []):
                    if "ipBlock" in peer:
                        assert peer["ipBlock"]["cidr"] == "172.20.0.0/16", np["metadata"]["name"]
                        seen.add("vpc")
            for rule in np["spec"].get("egress", []):
                ports = {p.get("port") for p in rule.get("ports", [])}
                for peer in rule.get("to", []):
                    if "ipBlock" in peer:
                        want = "172.20.8.0/24" if 5432 in ports else "0.0.0.0/0"
                        assert peer["ipBlock"]["cidr"] == want, (np["metadata"]["name"], ports)
                        seen.add("db" if 5432 in ports else "https")
        assert seen == {"vpc", "db", "https"}, overlay


# ---------------------------------------------------------------------------------------
# 9. Alertmanager delivers critical alerts.

STACK = load_yaml("k8s/monitoring/kube-prometheus-stack-values.yaml")


def matches(matchers: list[str], labels: dict) -> bool:
    for m in matchers:
        name, op, value = re.fullmatch(r'\s*(\w+)\s*(=~|!~|!=|=)\s*"?(.*?)"?\s*', m).groups()
        have = labels.get(name, "")
        ok = {"=": have == value, "!=": have != value, "=~": re.fullmatch(value, have) is not None,
              "!~": re.fullmatch(value, have) is None}[op]
        if not ok:
            return False
    return True


def route(node: dict, labels: dict) -> str:
    """Alertmanager's routing: the first matching child (continue: false) wins, else the node."""
    for child in node.get("routes", []):
        if matches(child.get("matchers", []), labels):
            return route({"receiver": node["receiver"], **child}, labels)
    return node["receiver"]


def receiver(name: str) -> dict:
    return next(r for r in STACK["alertmanager"]["config"]["receivers"] if r["name"] == name)


def secret_files() -> set[str]:
    """Files Alertmanager can read: /etc/alertmanager/secrets/<Secret>/<key>, for the Secrets
    it mounts and the keys deploy.sh writes into them."""
    mounted = STACK["alertmanager"]["alertmanagerSpec"]["secrets"]
    script = (ROOT / "deploy/deploy.sh").read_text()
    body = script[script.index("ensure_alertmanager_secret() {"):]
    body = body[:body.index("\n}\n")]
    keys = set(re.findall(r'--from-file "\$dir/([a-z-]+)"', body))
    names = set(re.findall(r"local name=([a-z-]+)", body))
    return {f"/etc/alertmanager/secrets/{s}/{k}" for s in mounted if s in names for k in keys}


def test_every_critical_alert_pages_a_real_receiver_with_a_mounted_secret():
    rules = [r for g in load_yaml("k8s/monitoring/prometheusrule.yaml")["spec"]["groups"] for r in g["rules"] if "alert" in r]
    critical = [r for r in rules if r["labels"]["severity"] == "critical"]
    assert critical
    files = secret_files()
    assert files
    for rule in critical:
        rec = receiver(route(STACK["alertmanager"]["config"]["route"], {"alertname": rule["alert"], **rule["labels"]}))
        pd = rec.get("pagerduty_configs") or []
        assert pd, f"{rule['alert']} goes to {rec['name']}, which notifies nobody"
        assert all(c["routing_key_file"] in files for c in pd) and not any("routing_key" in c for c in pd)
    warning = receiver(route(STACK["alertmanager"]["config"]["route"], {"alertname": "MedroboticsTargetDown", "severity": "warning"}))
    assert all(c["api_url_file"] in files for c in warning["slack_configs"])


def test_prod_monitoring_refuses_to_run_without_an_alert_receiver(tmp_path):
    proc, calls = run_steps(tmp_path, ["monitoring"], {"grafana-admin"}, {})
    assert proc.returncode != 0 and "ALERT_PAGERDUTY_ROUTING_KEY" in proc.stderr
    assert not [c for c in calls if "upgrade --install prometheus" in c]
    (tmp_path / "again").mkdir()
    proc, calls = run_steps(tmp_path / "again", ["monitoring"], {"grafana-admin"},
                            {"ALERT_PAGERDUTY_ROUTING_KEY": "R0UT1NGKEY", "ALERT_SLACK_WEBHOOK_URL": "https://hooks.example/x"})
    assert proc.returncode == 0, proc.stderr
    assert not [c for c in calls if "R0UT1NGKEY" in c or "hooks.example" in c]  # never on a command line


# ---------------------------------------------------------------------------------------
# 10. Nodes and add-ons follow KubernetesVersion.

def test_node_group_runs_the_control_planes_version_and_updates_one_node_at_a_time():
    ng = RES["NodeGroup"]
    assert ng["Properties"]["Version"] == {"Ref": "KubernetesVersion"}
    assert RES["Cluster"]["Properties"]["Version"] == {"Ref": "KubernetesVersion"}
    assert ng["Properties"]["UpdateConfig"]["MaxUnavailable"] == 1


def test_deploy_passes_addon_versions_resolved_for_the_kubernetes_version(tmp_path):
    fake = "|".join(f"--addon-name {a}=>v{a}-eksbuild.1" for a in
                    ("vpc-cni", "coredns", "kube-proxy", "aws-ebs-csi-driver", "amazon-cloudwatch-observability"))
    proc, calls = run_steps(tmp_path, ["cluster"], set(), {"FAKE_AWS": fake})
    assert proc.returncode == 0, proc.stderr
    (deploy,) = [c for c in calls if "cloudformation deploy" in c and "eks-cluster" in c]
    version = PARAMS["KubernetesVersion"]["Default"]
    assert f"KubernetesVersion={version}" in deploy
    for param, addon in (("VpcCni", "vpc-cni"), ("KubeProxy", "kube-proxy"), ("CoreDns", "coredns"),
                         ("EbsCsi", "aws-ebs-csi-driver"), ("CloudWatchObservability", "amazon-cloudwatch-observability")):
        assert f"{param}AddonVersion=v{addon}-eksbuild.1" in deploy
    assert all(f"--kubernetes-version {version}" in c for c in calls if "describe-addon-versions" in c)


def test_a_pinned_addon_that_does_not_support_the_kubernetes_version_is_refused(tmp_path):
    proc, calls = run_steps(tmp_path, ["cluster"], set(), {"FAKE_AWS": "--addon-name kube-proxy=>None",
                                                           "KUBE_PROXY_ADDON_VERSION": "v1.29.0-eksbuild.1"})
    assert proc.returncode != 0 and "KUBE_PROXY_ADDON_VERSION=v1.29.0-eksbuild.1 (kube-proxy) does not support Kubernetes" in proc.stderr
    assert not [c for c in calls if "cloudformation deploy" in c]


# ---------------------------------------------------------------------------------------
# 11. TLS to RDS, verified.

def mounted_file(pod_spec: dict, container: dict, path: str) -> dict | None:
    """The volume that provides PATH inside CONTAINER, if any."""
    for mount in container.get("volumeMounts", []):
        if path.startswith(mount["mountPath"].rstrip("/") + "/"):
            return next(v for v in pod_spec["volumes"] if v["name"] == mount["name"])
    return None


def env_of(container: dict, config: dict) -> dict:
    env = dict(config)
    env.update({e["name"]: e.get("value") for e in container.get("env", []) if "value" in e})
    return env


@pytest.mark.parametrize("chart", deploycheck.CHARTS)
def test_prod_verifies_the_database_certificate_with_the_mounted_ca_bundle(chart, overlay_renders, tmp_path):
    cmd = workloads_release(tmp_path, {})[chart]
    helm_objs = deploycheck.chart_objects(chart, release_values(cmd, chart))
    for source, objs in (("helm", helm_objs), ("kustomize", overlay_renders["overlays/prod"])):
        config = next(o for o in by_kind(objs, "ConfigMap") if o["metadata"]["name"].startswith(chart))["data"]
        workloads = [o for o in objs if o["kind"] in ("Deployment", "Job") and o["metadata"]["name"].startswith(chart)]
        assert workloads
        for w in workloads:
            spec = w["spec"]["template"]["spec"]
            container = spec["containers"][0]
            env = env_of(container, config)
            assert env["APP_DATABASE__SSL_MODE"] == "verify-full", (source, w["metadata"]["name"])
            volume = mounted_file(spec, container, env["APP_DATABASE__SSL_ROOT_CERT"])
            assert volume and volume["configMap"]["name"] == "medrobotics-rds-ca", (source, w["metadata"]["name"])


def test_deploy_puts_the_ca_bundle_in_place_before_the_charts_and_prod_needs_one(tmp_path):
    secrets = {"medrobotics-db", "medrobotics-api-keys"}
    proc, calls = run_steps(tmp_path, ["workloads"], secrets, {})
    assert proc.returncode == 0, proc.stderr
    calls = [without_context(c) for c in calls]
    ca = [i for i, c in enumerate(calls) if c.startswith("kubectl create configmap medrobotics-rds-ca")]
    first_release = min(i for i, c in enumerate(calls) if c.startswith("helm upgrade --install"))
    assert ca and ca[0] < first_release
    (tmp_path / "x").mkdir()
    proc, calls = run_steps(tmp_path / "x", ["workloads"], secrets, {"RDS_CA_BUNDLE": ""})
    assert proc.returncode != 0 and "RDS_CA_BUNDLE" in proc.stderr
    assert not [c for c in calls if "upgrade --install" in c]


# ---------------------------------------------------------------------------------------
# 12. HTTPS in prod.

def test_prod_without_a_certificate_is_refused_before_anything_changes(tmp_path):
    proc, calls = run_steps(tmp_path, ["preflight", "workloads"], {"medrobotics-db", "medrobotics-api-keys"}, {"CERTIFICATE_ARN": ""})
    assert proc.returncode != 0
    assert "ENVIRONMENT=prod needs CERTIFICATE_ARN" in proc.stderr and "plain HTTP" in proc.stderr
    changes = [c for c in calls if c.startswith(("helm ", "kubectl ")) and not LOCAL_ONLY.match(without_context(c))
               and " get " not in without_context(c)]
    assert not changes


def test_dev_may_serve_http_with_a_warning(tmp_path):
    proc, calls = run_steps(tmp_path, ["workloads"], {"medrobotics-db", "medrobotics-api-keys"},
                            {"CERTIFICATE_ARN": "", "ENVIRONMENT": "dev", "RDS_CA_BUNDLE": ""})
    assert proc.returncode == 0, proc.stderr
    assert "serves plain HTTP" in proc.stderr
    assert len([c for c in calls if "upgrade --install" in c]) == 2


# ---------------------------------------------------------------------------------------
# 13. Robustness.

@pytest.mark.parametrize("missing", ["ApiServiceRoleArn", "medrobotics-network-VpcCidr"])
def test_an_empty_stack_output_or_export_stops_the_deploy(tmp_path, missing):
    proc, calls = run_steps(tmp_path, ["workloads"], {"medrobotics-db", "medrobotics-api-keys"}, {"FAKE_AWS": f"{missing}=>None"})
    assert proc.returncode != 0 and missing.split("-")[-1] in proc.stderr and "empty or missing" in proc.stderr
    assert not [c for c in calls if "upgrade --install" in c]


@pytest.mark.parametrize("chart", deploycheck.CHARTS)
@pytest.mark.parametrize("key", ["databaseCidrs", "ingressCidrs"])
def test_an_empty_cidr_list_is_refused_not_rendered_open(chart, key):
    values = deploycheck.deep_merge(load_yaml(f"helm/{chart}/ci/default-values.yaml"), {"networkPolicy": {key: []}})
    with pytest.raises(Exception, match=key):
        deploycheck.chart_objects(chart, values)


def test_preflight_refuses_an_image_tag_missing_from_ecr(tmp_path):
    proc, calls = run_steps(tmp_path, ["preflight"], set(), {"FAKE_AWS": "medrobotics/data-ingestion=>FAIL", "IMAGE_TAG": "1.4.2"})
    assert proc.returncode != 0
    assert "image medrobotics/data-ingestion:1.4.2 is not in ECR" in proc.stderr


def test_documented_build_targets_the_node_architecture():
    arch = {"x86_64": "linux/amd64", "ARM_64": "linux/arm64"}
    ami = RES["NodeGroup"]["Properties"]["AmiType"]
    want = next(v for k, v in arch.items() if k in ami)
    docs = (ROOT / "docs/operations.md").read_text()
    builds = [b for b in re.findall(r"```bash\n(.*?)```", docs, re.S) if "docker build" in b]
    assert builds
    for block in builds:
        for cmd in re.findall(r"docker build[^\n]*(?:\\\n[^\n]*)*", block):
            assert re.search(r"--platform[ =](\S+)", cmd) and re.search(r"--platform[ =](\S+)", cmd).group(1) == want, cmd


def test_a_stack_left_in_rollback_complete_is_explained_deleted_and_created_again(tmp_path):
    proc, calls = run_steps(tmp_path, ["images"], set(), {"FAKE_AWS": "StackStatus=>ROLLBACK_COMPLETE|describe-stack-events=>Repo CREATE_FAILED: quota"})
    assert proc.returncode == 0, proc.stderr
    assert "ROLLBACK_COMPLETE" in proc.stderr and "quota" in proc.stderr
    kinds = [c.split()[2] for c in calls if c.startswith("aws cloudformation ") and c.split()[2] in ("delete-stack", "wait", "deploy")]
    assert kinds == ["delete-stack", "wait", "deploy"]


def test_node_group_waits_for_the_addons_nodes_need():
    """BootstrapSelfManagedAddons is false: a node is Ready only with vpc-cni and kube-proxy."""
    assert RES["Cluster"]["Properties"].get("BootstrapSelfManagedAddons") is False
    depends = set(_listify(RES["NodeGroup"]["DependsOn"]))
    assert {"VpcCniAddon", "KubeProxyAddon"} <= depends
