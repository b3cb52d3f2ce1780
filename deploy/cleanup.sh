#!/usr/bin/env bash
# Remove what deploy.sh created, in reverse order:
#
#   workloads   the two releases (their Ingresses go, so the controller deletes the ALB)
#   monitoring  dashboards, rules, kube-prometheus-stack and its volumes (while the EBS CSI
#               driver still runs, so the EBS volumes are deleted too), its CRDs
#   addons      External Secrets, AWS Load Balancer Controller (after the ALB is gone),
#               Cluster Autoscaler, metrics-server, gp3 StorageClass, the namespace
#   cluster     the cluster stack (node group, add-ons, IAM roles, log groups), kubeconfig entry
#
# The ECR repositories (stack $IMAGES_STACK) and the KMS key stay unless --delete-images is
# given: images and encrypted data outlive a cluster.
#
# Usage: deploy/cleanup.sh [--dry-run] [--yes] [--delete-images] [--keep-cluster]
set -euo pipefail

# shellcheck source=deploy/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
}

assume_yes=0
delete_images=0
keep_cluster=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --yes) assume_yes=1 ;;
    --delete-images) delete_images=1 ;;
    --keep-cluster) keep_cluster=1 ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      usage >&2
      die "unknown argument: $1"
      ;;
  esac
  shift
done

# helm_uninstall RELEASE NAMESPACE: idempotent (a missing release is not an error).
helm_uninstall() {
  if [ "$DRY_RUN" = 1 ] || helm status "$1" --namespace "$2" >/dev/null 2>&1; then
    run helm uninstall "$1" --namespace "$2" --wait --timeout 10m
  else
    info "release $2/$1 is not installed"
  fi
}

step "preflight"
require_tools "aws=$MIN_AWS_CLI_VERSION" "kubectl=$MIN_KUBECTL_VERSION" "helm=$MIN_HELM_VERSION"
aws_identity
if [ "$assume_yes" != 1 ] && [ "$DRY_RUN" != 1 ]; then
  printf 'Delete the medrobotics platform in cluster %s (account %s, %s)? Type the cluster name: ' \
    "$CLUSTER_NAME" "$AWS_ACCOUNT_ID" "$AWS_REGION"
  read -r answer
  [ "$answer" = "$CLUSTER_NAME" ] || die "not confirmed"
fi
update_kubeconfig

step "workloads: releases, then wait for the ALB to go"
helm_uninstall data-ingestion "$APP_NAMESPACE"
helm_uninstall api-service "$APP_NAMESPACE"
run kubectl delete job --namespace "$APP_NAMESPACE" --selector app.kubernetes.io/component=migration --ignore-not-found
run kubectl wait ingress --namespace "$APP_NAMESPACE" --all --for=delete --timeout 5m

step "monitoring: rules, dashboard, kube-prometheus-stack, volumes, CRDs"
if [ "$DRY_RUN" = 1 ] || exists kubectl get crd prometheusrules.monitoring.coreos.com; then
  run kubectl delete -k "$REPO_ROOT/k8s/monitoring" --ignore-not-found
fi
helm_uninstall prometheus "$MONITORING_NAMESPACE"
run kubectl delete pvc --namespace "$MONITORING_NAMESPACE" --all --wait --timeout 5m
run kubectl delete crd --ignore-not-found \
  alertmanagerconfigs.monitoring.coreos.com alertmanagers.monitoring.coreos.com \
  podmonitors.monitoring.coreos.com probes.monitoring.coreos.com \
  prometheusagents.monitoring.coreos.com prometheuses.monitoring.coreos.com \
  prometheusrules.monitoring.coreos.com scrapeconfigs.monitoring.coreos.com \
  servicemonitors.monitoring.coreos.com thanosrulers.monitoring.coreos.com
run kubectl delete namespace "$MONITORING_NAMESPACE" --ignore-not-found --wait --timeout 5m

step "addons: external secrets, namespace, load balancer controller, autoscaler, metrics, storage"
if [ "$DRY_RUN" = 1 ] || exists kubectl get crd externalsecrets.external-secrets.io; then
  run kubectl delete -f "$REPO_ROOT/k8s/components/external-secrets/externalsecret.yaml" --ignore-not-found
  run kubectl delete -f "$REPO_ROOT/k8s/components/external-secrets/externalsecret-api-keys.yaml" --ignore-not-found
  run kubectl delete -f "$REPO_ROOT/k8s/components/external-secrets/secretstore.yaml" --ignore-not-found
fi
helm_uninstall external-secrets external-secrets
run kubectl delete -k "$REPO_ROOT/k8s/namespace" --ignore-not-found --wait --timeout 5m
helm_uninstall aws-load-balancer-controller kube-system
helm_uninstall cluster-autoscaler kube-system
helm_uninstall metrics-server kube-system
run kubectl delete -f "$DEPLOY_DIR/addons/storageclass-gp3.yaml" --ignore-not-found

if [ "$keep_cluster" = 1 ]; then
  step "cluster: kept (--keep-cluster)"
else
  step "cluster: stack $CLUSTER_STACK (10-15 minutes)"
  run aws cloudformation delete-stack --region "$AWS_REGION" --stack-name "$CLUSTER_STACK"
  run aws cloudformation wait stack-delete-complete --region "$AWS_REGION" --stack-name "$CLUSTER_STACK"
  run kubectl config delete-context "$KUBE_CONTEXT"
  info "kept: KMS key alias/$CLUSTER_NAME (scheduled deletion is a manual decision), orphaned ENIs are reported by:"
  info "  aws ec2 describe-network-interfaces --filters Name=tag:cluster.k8s.amazonaws.com/name,Values=$CLUSTER_NAME"
fi

if [ "$delete_images" = 1 ]; then
  step "images: stack $IMAGES_STACK (repositories are retained by policy; delete them by hand if intended)"
  run aws cloudformation delete-stack --region "$AWS_REGION" --stack-name "$IMAGES_STACK"
  run aws cloudformation wait stack-delete-complete --region "$AWS_REGION" --stack-name "$IMAGES_STACK"
fi
step "done"
