"""The EKS template against the platform design (cfn-lint and checkov check the rest)."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from conftest import ROOT

import deploycheck


class CfnLoader(yaml.SafeLoader):
    pass


def _tag(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {f"Fn::{suffix}" if suffix not in ("Ref",) else "Ref": value}


CfnLoader.add_multi_constructor("!", _tag)
TEMPLATE = yaml.load((ROOT / "deploy/cloudformation/eks-cluster.yaml").read_text(), Loader=CfnLoader)  # noqa: S506
RES = TEMPLATE["Resources"]
PARAMS = TEMPLATE["Parameters"]
VERSIONS = dict(re.findall(r"^([A-Z_]+)=(.*)$", (ROOT / "deploy/versions.env").read_text(), re.M))


def of_type(kind: str) -> dict:
    return {k: v for k, v in RES.items() if v["Type"] == kind}


def test_kubernetes_version_parameter_defaults_to_the_pinned_supported_version():
    default = PARAMS["KubernetesVersion"]["Default"]
    assert default == VERSIONS["KUBERNETES_VERSION"]
    assert re.fullmatch(PARAMS["KubernetesVersion"]["AllowedPattern"], "1.28")
    assert re.fullmatch(PARAMS["KubernetesVersion"]["AllowedPattern"], default)
    assert float(default.split(".")[1]) >= 33  # 1.28 left EKS standard support in 2024


def test_node_group_three_t3_medium_between_two_and_six_in_private_subnets():
    (ng,) = of_type("AWS::EKS::Nodegroup").values()
    assert (PARAMS["NodeDesiredSize"]["Default"], PARAMS["NodeMinSize"]["Default"], PARAMS["NodeMaxSize"]["Default"]) == (3, 2, 6)
    assert PARAMS["NodeInstanceType"]["Default"] == "t3.medium"
    subnets = json.dumps(ng["Properties"]["Subnets"])
    assert "PrivateSubnetIds" in subnets and "ImportValue" in subnets
    assert "RemoteAccess" not in ng["Properties"]


def test_control_plane_logs_encryption_and_endpoint():
    cluster = RES["Cluster"]["Properties"]
    types = {t["Type"] for t in cluster["Logging"]["ClusterLogging"]["EnabledTypes"]}
    assert types == {"api", "audit", "authenticator", "controllerManager", "scheduler"}
    assert cluster["EncryptionConfig"][0]["Resources"] == ["secrets"]
    vpc = cluster["ResourcesVpcConfig"]
    assert vpc["EndpointPrivateAccess"] is True and vpc["PublicAccessCidrs"] == {"Ref": "PublicAccessCidrs"}
    assert "Default" not in PARAMS["PublicAccessCidrs"]
    assert RES["ClusterKey"]["Properties"]["EnableKeyRotation"] is True


def test_every_log_group_has_a_retention_and_the_key():
    for name, lg in of_type("AWS::Logs::LogGroup").items():
        assert "RetentionInDays" in lg["Properties"], name
        assert "KmsKeyId" in lg["Properties"], name


def test_addons_include_storage_and_container_insights_with_their_roles():
    addons = {a["Properties"]["AddonName"]: a["Properties"] for a in of_type("AWS::EKS::Addon").values()}
    assert set(addons) == {"vpc-cni", "kube-proxy", "coredns", "aws-ebs-csi-driver", "amazon-cloudwatch-observability"}
    for name in ("vpc-cni", "aws-ebs-csi-driver", "amazon-cloudwatch-observability"):
        assert "ServiceAccountRoleArn" in addons[name], name
    assert "enableNetworkPolicy" in addons["vpc-cni"]["ConfigurationValues"]


@pytest.mark.parametrize(("role", "subject"), [
    ("ApiServiceRole", "system:serviceaccount:${AppNamespace}:api-service"),
    ("DataIngestionRole", "system:serviceaccount:${AppNamespace}:data-ingestion"),
    ("LoadBalancerControllerRole", "system:serviceaccount:kube-system:aws-load-balancer-controller"),
    ("ClusterAutoscalerRole", "system:serviceaccount:kube-system:cluster-autoscaler"),
    ("EbsCsiRole", "system:serviceaccount:kube-system:ebs-csi-controller-sa"),
    ("CloudWatchAgentRole", "system:serviceaccount:amazon-cloudwatch:cloudwatch-agent"),
    ("ExternalSecretsRole", "system:serviceaccount:${AppNamespace}:external-secrets-reader"),
])
def test_each_irsa_role_trusts_exactly_one_service_account(role, subject):
    trust = RES[role]["Properties"]["AssumeRolePolicyDocument"]["Fn::Sub"][0]
    assert trust.count(":sub") == 1 and subject in trust
    assert '"${Issuer}:aud": "sts.amazonaws.com"' in trust


def test_service_account_names_match_the_addon_values():
    ca = yaml.safe_load((ROOT / "deploy/addons/cluster-autoscaler-values.yaml").read_text())
    lbc = yaml.safe_load((ROOT / "deploy/addons/aws-load-balancer-controller-values.yaml").read_text())
    assert ca["rbac"]["serviceAccount"]["name"] == "cluster-autoscaler"
    assert lbc["serviceAccount"]["name"] == "aws-load-balancer-controller"


def test_service_roles_are_least_privilege_on_the_raw_bucket():
    api = json.dumps(RES["ApiServiceRole"]["Properties"]["Policies"])
    ingest = json.dumps(RES["DataIngestionRole"]["Properties"]["Policies"])
    assert "s3:PutObject" not in api and "s3:DeleteObject" not in api
    assert "s3:GetObject" in api
    assert "s3:PutObject" in ingest and "s3:DeleteObject" not in ingest
    assert "s3:x-amz-server-side-encryption" in ingest
    for text in (api, ingest):
        assert '"Resource": "*"' not in text and "s3:*" not in text
        assert "${RawBucketName}" in text
        # HeadBucket (readiness) sends no prefix: a plain StringLike on s3:prefix would deny it.
        assert "StringLikeIfExists" in text and '"StringLike"' not in text


def test_cluster_autoscaler_may_only_scale_this_clusters_groups():
    doc = RES["ClusterAutoscalerRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Fn::Sub"]
    policy = json.loads(doc)
    mutate = [s for s in policy["Statement"] if "autoscaling:SetDesiredCapacity" in s["Action"]][0]
    assert mutate["Condition"]["StringEquals"]["aws:ResourceTag/k8s.io/cluster-autoscaler/${ClusterName}"] == "owned"


def test_outputs_that_deploy_sh_reads_exist():
    script = (ROOT / "deploy/deploy.sh").read_text()
    used = set(re.findall(r'stack_output "\$CLUSTER_STACK" ([A-Za-z]+)', script))
    used |= set(re.findall(r"chart_release [a-z-]+ ([A-Za-z]+)", script))
    assert used and used <= set(TEMPLATE["Outputs"]), used - set(TEMPLATE["Outputs"])


def test_parameters_passed_by_deploy_sh_exist():
    script = (ROOT / "deploy/deploy.sh").read_text()
    passed = set(re.findall(r'^\s+"([A-Za-z]+)=', script, re.M))
    assert passed and passed <= set(PARAMS), passed - set(PARAMS)
    required = {k for k, v in PARAMS.items() if "Default" not in v}
    assert required <= passed


def test_ecr_repositories_are_immutable_and_scanned():
    ecr = yaml.load((ROOT / "deploy/cloudformation/ecr-repositories.yaml").read_text(), Loader=CfnLoader)  # noqa: S506
    repos = [r["Properties"] for r in ecr["Resources"].values() if r["Type"] == "AWS::ECR::Repository"]
    assert len(repos) == len(deploycheck.CHARTS)
    for repo in repos:
        assert repo["ImageTagMutability"] == "IMMUTABLE"
        assert repo["ImageScanningConfiguration"]["ScanOnPush"] is True
