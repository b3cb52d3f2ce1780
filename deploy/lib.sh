#!/usr/bin/env bash
# Shared by deploy.sh and cleanup.sh (sourced, not run): settings, dry-run aware command
# runner, prerequisite checks and CloudFormation output lookups.
# shellcheck disable=SC2034  # variables here are used by the scripts that source this file

DEPLOY_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$DEPLOY_DIR/.." && pwd)
# shellcheck source=deploy/versions.env
. "$DEPLOY_DIR/versions.env"

# ---------------------------------------------------------------------------------------
# Settings (environment variables; docs/operations.md "Deploy" lists them).
AWS_REGION=${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-1}}
ENVIRONMENT=${ENVIRONMENT:-prod}
CLUSTER_NAME=${CLUSTER_NAME:-medrobotics-cluster}
CLUSTER_STACK=${CLUSTER_STACK:-$CLUSTER_NAME}
IMAGES_STACK=${IMAGES_STACK:-medrobotics-images}
NETWORK_STACK=${NETWORK_STACK:-medrobotics-network}
APP_NAMESPACE=medrobotics
MONITORING_NAMESPACE=monitoring
DB_SECRET_NAME=${DB_SECRET_NAME:-medrobotics-db}
# The API keys Secret the values files and k8s/base name (key keys.json).
API_KEYS_SECRET_NAME=medrobotics-api-keys
# The RDS CA bundle ConfigMap (key ca-bundle.pem) the charts mount for sslmode verify-full.
RDS_CA_CONFIGMAP=medrobotics-rds-ca
EXTERNAL_SECRETS=${EXTERNAL_SECRETS:-0}
DRY_RUN=${DRY_RUN:-0}
# Placeholder account used when printing a dry run without AWS credentials.
DRY_RUN_ACCOUNT=111122223333

# ---------------------------------------------------------------------------------------
# Output and command running.

step() { printf '\n==> %s\n' "$*"; }
info() { printf '    %s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() {
  printf 'ERROR: %s\n' "$*" >&2
  exit 1
}

# Print a command as it would be typed (values quoted where needed).
show() {
  local out="" arg
  for arg in "$@"; do
    if [[ "$arg" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
      out+=" $arg"
    else
      out+=" $(printf '%q' "$arg")"
    fi
  done
  printf '%s\n' "${out# }"
}

# run CMD...: run a command that changes something; in a dry run only print it.
run() {
  if [ "$DRY_RUN" = 1 ]; then
    printf '[dry-run] %s\n' "$(show "$@")"
  else
    printf '+ %s\n' "$(show "$@")"
    "$@"
  fi
}

# query CMD...: run a read-only command and print its output; in a dry run print the command
# on stderr and answer with the placeholder given in DRY_RUN_ANSWER (default empty).
query() {
  if [ "$DRY_RUN" = 1 ]; then
    printf '[dry-run] %s\n' "$(show "$@")" >&2
    printf '%s' "${DRY_RUN_ANSWER:-}"
  else
    "$@"
  fi
}

# exists CMD...: true when a read-only command succeeds; in a dry run, assume it does not.
exists() {
  if [ "$DRY_RUN" = 1 ]; then
    printf '[dry-run] %s\n' "$(show "$@")" >&2
    return 1
  fi
  "$@" >/dev/null 2>&1
}

# ---------------------------------------------------------------------------------------
# Prerequisites.

# version_ge A B: true when version A >= B (dotted numbers).
version_ge() {
  [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" = "$2" ]
}

tool_version() {
  case "$1" in
    aws) aws --version 2>&1 | sed -nE 's#^aws-cli/([0-9.]+).*#\1#p' ;;
    kubectl) command kubectl version --client 2>/dev/null | sed -nE 's#^Client Version: v?([0-9.]+).*#\1#p' ;;
    helm) command helm version --template '{{.Version}}' 2>/dev/null | sed -nE 's#^v?([0-9.]+).*#\1#p' ;;
    *) return 1 ;;
  esac
}

# require_tools TOOL=MIN...: every tool present at MIN or newer, or exit naming all problems.
require_tools() {
  local spec tool min have problems=()
  for spec in "$@"; do
    tool=${spec%%=*}
    min=${spec#*=}
    if ! type -P "$tool" >/dev/null 2>&1; then
      problems+=("$tool is not installed (need $min or newer)")
      continue
    fi
    have=$(tool_version "$tool" || true)
    if [ -z "$have" ]; then
      problems+=("cannot read the version of $tool (need $min or newer)")
    elif ! version_ge "$have" "$min"; then
      problems+=("$tool $have is too old (need $min or newer)")
    else
      info "$tool $have (>= $min)"
    fi
  done
  if [ "${#problems[@]}" -gt 0 ]; then
    if [ "$DRY_RUN" = 1 ]; then
      for spec in "${problems[@]}"; do warn "$spec (ignored in a dry run)"; done
    else
      for spec in "${problems[@]}"; do printf 'ERROR: %s\n' "$spec" >&2; done
      die "install the missing tools (docs/operations.md, 'Prerequisites') and run again"
    fi
  fi
}

require_env() {
  local name missing=()
  for name in "$@"; do
    [ -n "${!name:-}" ] || missing+=("$name")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$DRY_RUN" = 1 ]; then
      warn "not set: ${missing[*]} (placeholders used in a dry run)"
      for name in "${missing[@]}"; do printf -v "$name" '<%s>' "$name"; done
    else
      die "set ${missing[*]} (docs/operations.md, 'Deploy')"
    fi
  fi
}

aws_identity() {
  if [ "$DRY_RUN" = 1 ]; then
    AWS_ACCOUNT_ID=$DRY_RUN_ACCOUNT
    return 0
  fi
  AWS_ACCOUNT_ID=$(aws sts get-caller-identity --query Account --output text) ||
    die "no AWS credentials (aws sts get-caller-identity failed)"
  info "AWS account $AWS_ACCOUNT_ID, region $AWS_REGION"
}

# non_empty WHAT VALUE: VALUE, or stop naming WHAT. The AWS CLI prints nothing (or "None")
# for a missing output or export; an empty value must never reach a chart (an empty CIDR
# list renders a NetworkPolicy rule open to everywhere, an empty role an unannotated
# ServiceAccount).
non_empty() {
  if [ -z "$2" ] || [ "$2" = None ]; then
    die "$1 is empty or missing: is the stack deployed and complete? (aws cloudformation describe-stacks --region $AWS_REGION)"
  fi
  printf '%s' "$2"
}

# stack_output STACK KEY: one output of a CloudFormation stack (never empty).
stack_output() {
  local value
  value=$(DRY_RUN_ANSWER="<$1:$2>" query aws cloudformation describe-stacks --region "$AWS_REGION" --stack-name "$1" \
    --query "Stacks[0].Outputs[?OutputKey=='$2'].OutputValue" --output text) || die "cannot read stack $1"
  non_empty "output $2 of stack $1" "$value"
}

# stack_export NAME: a CloudFormation export (the network stack's VPC and subnets; never empty).
stack_export() {
  local value
  value=$(DRY_RUN_ANSWER="<export:$1>" query aws cloudformation list-exports --region "$AWS_REGION" \
    --query "Exports[?Name=='$1'].Value" --output text) || die "cannot list CloudFormation exports"
  non_empty "export $1" "$value"
}

update_kubeconfig() {
  run aws eks update-kubeconfig --region "$AWS_REGION" --name "$CLUSTER_NAME" --alias "$KUBE_CONTEXT"
}

# ---------------------------------------------------------------------------------------
# Kube context: every kubectl and helm call names the cluster's context explicitly, so a
# step run on its own never acts on whatever context happens to be current.
KUBE_CONTEXT=${KUBE_CONTEXT:-$CLUSTER_NAME}
kubectl() { command kubectl --context "$KUBE_CONTEXT" "$@"; }
helm() { command helm --kube-context "$KUBE_CONTEXT" "$@"; }

# pin_kube_context: make sure the context exists (writing it with update-kubeconfig if not).
pin_kube_context() {
  if [ "$DRY_RUN" != 1 ] && ! command kubectl config get-contexts "$KUBE_CONTEXT" >/dev/null 2>&1; then
    update_kubeconfig
  fi
  info "kube context: $KUBE_CONTEXT (passed to every kubectl and helm call)"
}

helm_repos() {
  run helm repo add eks https://aws.github.io/eks-charts --force-update
  run helm repo add autoscaler https://kubernetes.github.io/autoscaler --force-update
  run helm repo add metrics-server https://kubernetes-sigs.github.io/metrics-server/ --force-update
  run helm repo add prometheus-community https://prometheus-community.github.io/helm-charts --force-update
  if [ "$EXTERNAL_SECRETS" = 1 ]; then
    run helm repo add external-secrets https://charts.external-secrets.io --force-update
  fi
  run helm repo update
}
