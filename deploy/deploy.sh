#!/usr/bin/env bash
# Deploy the medrobotics platform on EKS, end to end and idempotently:
#
#   preflight  tool versions, AWS identity, required settings
#   images     ECR repositories (stack $IMAGES_STACK)
#   cluster    EKS cluster, node group, add-ons, IAM roles (stack $CLUSTER_STACK), kubeconfig
#   addons     namespace, gp3 StorageClass (EBS CSI), metrics-server, Cluster Autoscaler,
#              AWS Load Balancer Controller[, External Secrets Operator]
#   monitoring kube-prometheus-stack (Grafana admin password from a Secret), rules, dashboard
#   workloads  database and API keys Secret checks, api-service and data-ingestion charts
#              (migrations run as a pre-install/pre-upgrade hook), helm test; refuses to drop
#              the running HTTPS/WAF or change the image unasked (CERTIFICATE_ARN, WAF_ACL_ARN,
#              IMAGE_TAG; ALLOW_TLS_REMOVAL=1, ALLOW_WAF_REMOVAL=1)
#   verify     the design's "expected output": nodes, pods, services, ingress address, HPAs,
#              and that the data routes refuse a request without an API key
#
# Usage: deploy/deploy.sh [--dry-run] [--external-secrets] [STEP...]
#        deploy/deploy.sh pin-addons     print the EKS add-on versions the cluster runs
# With no STEP every step runs in the order above. --dry-run prints every command that
# would change something (and the read-only ones on stderr) without running any.
# Settings come from the environment: docs/operations.md, "Deploy".
set -euo pipefail

# shellcheck source=deploy/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ALL_STEPS=(preflight images cluster addons monitoring workloads verify)

usage() {
  sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
}

steps=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --external-secrets) EXTERNAL_SECRETS=1 ;;
    -h | --help)
      usage
      exit 0
      ;;
    preflight | images | cluster | addons | monitoring | workloads | verify | pin-addons) steps+=("$1") ;;
    *)
      usage >&2
      die "unknown argument: $1"
      ;;
  esac
  shift
done
[ "${#steps[@]}" -gt 0 ] || steps=("${ALL_STEPS[@]}")

# ---------------------------------------------------------------------------------------

do_preflight() {
  step "preflight: tools and settings"
  info "eksctl is not needed: the cluster is a CloudFormation stack"
  require_tools "aws=$MIN_AWS_CLI_VERSION" "kubectl=$MIN_KUBECTL_VERSION" "helm=$MIN_HELM_VERSION"
  aws_identity
  require_env RAW_BUCKET RDS_HOST
  if [ "$DRY_RUN" != 1 ] && [ "${IMAGE_TAG:-}" = "latest" ]; then
    die "IMAGE_TAG=latest is not allowed: ECR tags are immutable, deploy a version"
  fi
}

do_images() {
  step "images: ECR repositories"
  run aws cloudformation deploy --region "$AWS_REGION" --stack-name "$IMAGES_STACK" \
    --template-file "$DEPLOY_DIR/cloudformation/ecr-repositories.yaml" --no-fail-on-empty-changeset
}

do_cluster() {
  step "cluster: EKS control plane, node group, add-ons, IAM roles (15-20 minutes on creation)"
  require_env PUBLIC_ACCESS_CIDRS RAW_BUCKET
  case ",${PUBLIC_ACCESS_CIDRS}," in
    *,0.0.0.0/0,*) die "PUBLIC_ACCESS_CIDRS must not contain 0.0.0.0/0: name the operators' networks" ;;
    *) ;;
  esac
  local params=(
    "ClusterName=$CLUSTER_NAME"
    "KubernetesVersion=$KUBERNETES_VERSION"
    "NetworkStackName=$NETWORK_STACK"
    "PublicAccessCidrs=$PUBLIC_ACCESS_CIDRS"
    "RawBucketName=$RAW_BUCKET"
    "RawBucketKmsKeyArn=${RAW_BUCKET_KMS_KEY_ARN:-}"
    "DatabaseSecretArn=${DATABASE_SECRET_ARN:-}"
    "ApiKeysSecretArn=${API_KEYS_SECRET_ARN:-}"
    "AdminRoleArn=${ADMIN_ROLE_ARN:-}"
    "VpcCniAddonVersion=$VPC_CNI_ADDON_VERSION"
    "CoreDnsAddonVersion=$COREDNS_ADDON_VERSION"
    "KubeProxyAddonVersion=$KUBE_PROXY_ADDON_VERSION"
    "EbsCsiAddonVersion=$EBS_CSI_ADDON_VERSION"
    "CloudWatchObservabilityAddonVersion=$CLOUDWATCH_OBSERVABILITY_ADDON_VERSION"
  )
  # Node group bounds: unset keeps the stack's current value (2..6 on creation).
  local bound
  for bound in NODE_MIN_SIZE:NodeMinSize NODE_MAX_SIZE:NodeMaxSize; do
    local var=${bound%%:*} value
    value=${!var:-}
    [ -n "$value" ] || continue
    [[ "$value" =~ ^[1-9][0-9]*$ ]] || die "$var must be a whole number of nodes, got: $value"
    params+=("${bound#*:}=$value")
  done
  run aws cloudformation deploy --region "$AWS_REGION" --stack-name "$CLUSTER_STACK" \
    --template-file "$DEPLOY_DIR/cloudformation/eks-cluster.yaml" \
    --capabilities CAPABILITY_NAMED_IAM --no-fail-on-empty-changeset \
    --parameter-overrides "${params[@]}"
  local addon
  for addon in vpc-cni kube-proxy coredns aws-ebs-csi-driver amazon-cloudwatch-observability; do
    run aws eks wait addon-active --region "$AWS_REGION" --cluster-name "$CLUSTER_NAME" --addon-name "$addon"
  done
  update_kubeconfig
}

do_addons() {
  step "addons: namespace, storage, metrics, node autoscaling, load balancer controller"
  local vpc_id ca_role lbc_role
  vpc_id=$(stack_export "$NETWORK_STACK-VpcId")
  ca_role=$(stack_output "$CLUSTER_STACK" ClusterAutoscalerRoleArn)
  lbc_role=$(stack_output "$CLUSTER_STACK" LoadBalancerControllerRoleArn)

  info "namespace $APP_NAMESPACE (readiness-gate label, restricted pod security, default deny)"
  run kubectl apply -k "$REPO_ROOT/k8s/namespace"

  info "storage: gp3 StorageClass on the EBS CSI driver (add-on installed by the cluster stack)"
  run aws eks wait addon-active --region "$AWS_REGION" --cluster-name "$CLUSTER_NAME" --addon-name aws-ebs-csi-driver
  run kubectl apply -f "$DEPLOY_DIR/addons/storageclass-gp3.yaml"
  if exists kubectl get storageclass gp2; then
    run kubectl annotate storageclass gp2 storageclass.kubernetes.io/is-default-class=false --overwrite
  fi

  helm_repos

  info "metrics-server: kubectl top and the HPAs' CPU/memory metrics"
  run helm upgrade --install metrics-server metrics-server/metrics-server \
    --version "$METRICS_SERVER_CHART" --namespace kube-system \
    --values "$DEPLOY_DIR/addons/metrics-server-values.yaml" --wait --timeout 5m

  info "Cluster Autoscaler: node group $CLUSTER_NAME-default, 2..6 nodes"
  run helm upgrade --install cluster-autoscaler autoscaler/cluster-autoscaler \
    --version "$CLUSTER_AUTOSCALER_CHART" --namespace kube-system \
    --values "$DEPLOY_DIR/addons/cluster-autoscaler-values.yaml" \
    --set "autoDiscovery.clusterName=$CLUSTER_NAME" --set "awsRegion=$AWS_REGION" \
    --set "image.tag=$CLUSTER_AUTOSCALER_IMAGE_TAG" \
    --set "rbac.serviceAccount.annotations.eks\.amazonaws\.com/role-arn=$ca_role" \
    --wait --timeout 5m

  info "AWS Load Balancer Controller: before any Ingress exists"
  run helm upgrade --install aws-load-balancer-controller eks/aws-load-balancer-controller \
    --version "$AWS_LOAD_BALANCER_CONTROLLER_CHART" --namespace kube-system \
    --values "$DEPLOY_DIR/addons/aws-load-balancer-controller-values.yaml" \
    --set "clusterName=$CLUSTER_NAME" --set "region=$AWS_REGION" --set "vpcId=$vpc_id" \
    --set "serviceAccount.annotations.eks\.amazonaws\.com/role-arn=$lbc_role" \
    --wait --timeout 5m

  if [ "$EXTERNAL_SECRETS" = 1 ]; then
    local eso_role
    eso_role=$(stack_output "$CLUSTER_STACK" ExternalSecretsRoleArn)
    info "External Secrets Operator: $DB_SECRET_NAME from AWS Secrets Manager"
    run helm upgrade --install external-secrets external-secrets/external-secrets \
      --version "$EXTERNAL_SECRETS_CHART" --namespace external-secrets --create-namespace \
      --values "$DEPLOY_DIR/addons/external-secrets-values.yaml" --wait --timeout 5m
    run kubectl apply -f "$REPO_ROOT/k8s/overlays/external-secrets/serviceaccount.yaml"
    run kubectl annotate serviceaccount external-secrets-reader --namespace "$APP_NAMESPACE" \
      "eks.amazonaws.com/role-arn=$eso_role" --overwrite
    run kubectl apply -f "$REPO_ROOT/k8s/overlays/external-secrets/secretstore.yaml"
    run kubectl apply -f "$REPO_ROOT/k8s/overlays/external-secrets/externalsecret.yaml"
    run kubectl wait externalsecret "$DB_SECRET_NAME" --namespace "$APP_NAMESPACE" \
      --for=condition=Ready --timeout 2m
    if [ -n "${API_KEYS_SECRET_ARN:-}" ]; then
      info "External Secrets: $API_KEYS_SECRET_NAME (API keys) from AWS Secrets Manager"
      run kubectl apply -f "$REPO_ROOT/k8s/overlays/external-secrets/externalsecret-api-keys.yaml"
      run kubectl wait externalsecret "$API_KEYS_SECRET_NAME" --namespace "$APP_NAMESPACE" \
        --for=condition=Ready --timeout 2m
    fi
  fi
}

ensure_grafana_secret() {
  if exists kubectl get secret grafana-admin --namespace "$MONITORING_NAMESPACE"; then
    info "Secret $MONITORING_NAMESPACE/grafana-admin exists: kept"
    return 0
  fi
  if [ "$DRY_RUN" = 1 ]; then
    run kubectl create secret generic grafana-admin --namespace "$MONITORING_NAMESPACE" --from-env-file "<0600 temp file: admin-user, admin-password>"
    return 0
  fi
  local password=${GRAFANA_ADMIN_PASSWORD:-} file
  if [ -z "$password" ]; then
    password=$(LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 32 || true)
    info "generated a Grafana admin password (read it: kubectl -n $MONITORING_NAMESPACE get secret grafana-admin -o jsonpath='{.data.admin-password}' | base64 -d)"
  fi
  file=$(mktemp)
  chmod 600 "$file"
  printf 'admin-user=admin\nadmin-password=%s\n' "$password" >"$file"
  run kubectl create secret generic grafana-admin --namespace "$MONITORING_NAMESPACE" --from-env-file "$file"
  rm -f "$file"
}

do_monitoring() {
  step "monitoring: kube-prometheus-stack (15 d, 50 Gi gp3), alert rules, dashboard"
  if ! exists kubectl get namespace "$MONITORING_NAMESPACE"; then
    run kubectl create namespace "$MONITORING_NAMESPACE"
  fi
  ensure_grafana_secret
  run helm upgrade --install prometheus prometheus-community/kube-prometheus-stack \
    --version "$KUBE_PROMETHEUS_STACK_CHART" --namespace "$MONITORING_NAMESPACE" \
    --values "$REPO_ROOT/k8s/monitoring/kube-prometheus-stack-values.yaml" --wait --timeout 10m
  run kubectl apply -k "$REPO_ROOT/k8s/monitoring"
}

# secret_in_place LABEL NAME SYNCED: true (and says so) when External Secrets syncs Secret
# NAME (SYNCED=1) or it already exists; false when the caller has to create it.
secret_in_place() {
  local label=$1 name=$2 synced=$3
  if [ "$synced" = 1 ]; then
    info "$label: Secret $name synced by External Secrets"
    return 0
  fi
  if exists kubectl get secret "$name" --namespace "$APP_NAMESPACE"; then
    info "$label: Secret $name exists"
    return 0
  fi
  return 1
}

ensure_database_secret() {
  secret_in_place "database credentials" "$DB_SECRET_NAME" "$EXTERNAL_SECRETS" && return 0
  if [ "$DRY_RUN" = 1 ]; then
    run kubectl create secret generic "$DB_SECRET_NAME" --namespace "$APP_NAMESPACE" --from-env-file "<0600 temp file: username, password>"
  elif [ -n "${RDS_USERNAME:-}" ] && [ -n "${RDS_PASSWORD:-}" ]; then
    local file
    file=$(mktemp)
    chmod 600 "$file"
    printf 'username=%s\npassword=%s\n' "$RDS_USERNAME" "$RDS_PASSWORD" >"$file"
    run kubectl create secret generic "$DB_SECRET_NAME" --namespace "$APP_NAMESPACE" --from-env-file "$file"
    rm -f "$file"
  else
    die "Secret $APP_NAMESPACE/$DB_SECRET_NAME is missing: set RDS_USERNAME and RDS_PASSWORD, or use --external-secrets"
  fi
}

# The API keys file (hashed entries from `<service> create-key`) as Secret $API_KEYS_SECRET_NAME:
# synced by External Secrets, kept when it exists, else created once from API_KEYS_FILE. The
# charts refuse to render without it; rotation edits the Secret (docs/operations.md, "API keys").
ensure_api_keys_secret() {
  local synced=0
  [ "$EXTERNAL_SECRETS" = 1 ] && [ -n "${API_KEYS_SECRET_ARN:-}" ] && synced=1
  secret_in_place "API keys" "$API_KEYS_SECRET_NAME" "$synced" && return 0
  if [ "$DRY_RUN" = 1 ]; then
    run kubectl create secret generic "$API_KEYS_SECRET_NAME" --namespace "$APP_NAMESPACE" --from-file "keys.json=<API_KEYS_FILE: JSON array of create-key entries>"
  elif [ -n "${API_KEYS_FILE:-}" ]; then
    [ -r "$API_KEYS_FILE" ] || die "API_KEYS_FILE=$API_KEYS_FILE is not readable"
    grep -q '"sha256"' "$API_KEYS_FILE" ||
      die "API_KEYS_FILE=$API_KEYS_FILE holds no key entry: a JSON array of the {\"name\", \"scopes\", \"sha256\"} entries create-key prints"
    if grep -Eq 'mrk_[A-Za-z0-9_-]{20,}' "$API_KEYS_FILE"; then
      die "API_KEYS_FILE=$API_KEYS_FILE contains a plain API key (mrk_...): store only the hashed entries, never a key"
    fi
    run kubectl create secret generic "$API_KEYS_SECRET_NAME" --namespace "$APP_NAMESPACE" --from-file "keys.json=$API_KEYS_FILE"
  else
    die "Secret $APP_NAMESPACE/$API_KEYS_SECRET_NAME is missing: make keys with create-key, put the printed entries in a JSON array file and set API_KEYS_FILE=<file>, or use --external-secrets with API_KEYS_SECRET_ARN (docs/operations.md, \"API keys\")"
  fi
}

# chart_tag NAME: the image tag this deploy installs: IMAGE_TAG, else the chart's appVersion.
chart_tag() {
  printf '%s' "${IMAGE_TAG:-$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$REPO_ROOT/helm/$1/Chart.yaml")}"
}

# ---------------------------------------------------------------------------------------
# Release guard (docs/operations.md, "Roll out and roll back"). deploy.sh re-renders each
# release from the values files and this shell's environment, so a shell without
# CERTIFICATE_ARN, WAF_ACL_ARN or IMAGE_TAG would silently drop HTTPS, drop the WAF or move
# the image to the chart's default. The running release is the record of what is deployed
# (its Ingress annotations and Deployment image); a deploy that would remove TLS or the WAF,
# or change the image without IMAGE_TAG, is refused before anything is upgraded.
# ALLOW_TLS_REMOVAL=1 / ALLOW_WAF_REMOVAL=1 remove them on purpose; IMAGE_TAG changes the image.

# deployed_setting NAME image|certificate|waf: what release NAME runs now (empty: not installed).
deployed_setting() {
  local chart=$1 what=$2
  case "$what" in
    image)
      query kubectl get deployment "$chart" --namespace "$APP_NAMESPACE" --ignore-not-found \
        -o jsonpath='{.spec.template.spec.containers[0].image}'
      ;;
    certificate)
      query kubectl get ingress "$chart" --namespace "$APP_NAMESPACE" --ignore-not-found \
        -o jsonpath='{.metadata.annotations.alb\.ingress\.kubernetes\.io/certificate-arn}'
      ;;
    waf)
      query kubectl get ingress "$chart" --namespace "$APP_NAMESPACE" --ignore-not-found \
        -o jsonpath='{.metadata.annotations.alb\.ingress\.kubernetes\.io/wafv2-acl-arn}'
      ;;
    *) die "deployed_setting: unknown setting $what" ;;
  esac
}

# guard_release NAME: refuse (naming the variable to set) a deploy of release NAME that would
# remove its HTTPS certificate or WAF ACL, or change its image while IMAGE_TAG is unset.
guard_release() {
  local chart=$1 image deployed_tag cert waf tag problems=()
  image=$(deployed_setting "$chart" image) || die "cannot read the running $chart release (kubectl get deployment $chart)"
  if [ -z "$image" ]; then
    info "$chart: not installed yet (first install)"
    return 0
  fi
  cert=$(deployed_setting "$chart" certificate) || die "cannot read the Ingress of $chart"
  waf=$(deployed_setting "$chart" waf) || die "cannot read the Ingress of $chart"
  tag=$(chart_tag "$chart")
  case "$image" in
    *@*) deployed_tag=$image ;;
    *) deployed_tag=${image##*:} ;;
  esac
  if [ -n "$cert" ] && [ -z "${CERTIFICATE_ARN:-}" ] && [ "${ALLOW_TLS_REMOVAL:-0}" != 1 ]; then
    problems+=("$chart is served over HTTPS (certificate $cert) but CERTIFICATE_ARN is not set: this deploy would remove HTTPS and API keys would cross the network in clear text. Set CERTIFICATE_ARN=$cert to keep it, or ALLOW_TLS_REMOVAL=1 to remove it on purpose.")
  fi
  if [ -n "$waf" ] && [ -z "${WAF_ACL_ARN:-}" ] && [ "${ALLOW_WAF_REMOVAL:-0}" != 1 ]; then
    problems+=("$chart is behind WAF web ACL $waf but WAF_ACL_ARN is not set: this deploy would detach it. Set WAF_ACL_ARN=$waf to keep it, or ALLOW_WAF_REMOVAL=1 to remove it on purpose.")
  fi
  if [ -z "${IMAGE_TAG:-}" ] && [ "$deployed_tag" != "$tag" ]; then
    problems+=("$chart runs image $image but IMAGE_TAG is not set: this deploy would change it to the chart's default tag $tag. Set IMAGE_TAG=$deployed_tag to keep it, or IMAGE_TAG=$tag to change it on purpose.")
  fi
  if [ "${#problems[@]}" -gt 0 ]; then
    local problem
    for problem in "${problems[@]}"; do printf 'ERROR: %s\n' "$problem" >&2; done
    die "refusing to deploy $chart: it would change what runs without being asked (docs/operations.md, \"Roll out and roll back\")"
  fi
  info "$chart: keeps ${cert:+HTTPS, }${waf:+WAF, }image $image -> tag $tag"
}

# ---------------------------------------------------------------------------------------

# chart_release NAME ROLE_OUTPUT: install or upgrade one service chart, rolling back on failure.
chart_release() {
  local chart=$1 role_output=$2 role registry vpc_cidr tag
  role=$(stack_output "$CLUSTER_STACK" "$role_output")
  vpc_cidr=$(stack_export "$NETWORK_STACK-VpcCidr")
  registry="$AWS_ACCOUNT_ID.dkr.ecr.$AWS_REGION.amazonaws.com"
  tag=$(chart_tag "$chart")
  local args=(
    --namespace "$APP_NAMESPACE"
    --values "$REPO_ROOT/helm/$chart/values-$ENVIRONMENT.yaml"
    --set "image.repository=$registry/medrobotics/$chart"
    --set "image.tag=$tag"
    --set "serviceAccount.roleArn=$role"
    --set "database.host=$RDS_HOST"
    --set "storage.rawBucket=$RAW_BUCKET"
    --set "storage.region=$AWS_REGION"
    --set "networkPolicy.ingressCidrs={$vpc_cidr}"
    --set "networkPolicy.databaseCidrs={$vpc_cidr}"
  )
  if [ -n "${CERTIFICATE_ARN:-}" ]; then
    args+=(--set "ingress.certificateArn=$CERTIFICATE_ARN")
  fi
  if [ -n "${WAF_ACL_ARN:-}" ]; then
    args+=(--set "ingress.wafAclArn=$WAF_ACL_ARN")
  fi
  run helm upgrade --install "$chart" "$REPO_ROOT/helm/$chart" "${args[@]}" --wait --atomic --timeout 10m
}

do_workloads() {
  step "workloads: api-service, data-ingestion"
  [ -n "${AWS_ACCOUNT_ID:-}" ] || aws_identity
  require_env RAW_BUCKET RDS_HOST
  [ -f "$REPO_ROOT/helm/api-service/values-$ENVIRONMENT.yaml" ] || die "no values file for ENVIRONMENT=$ENVIRONMENT"
  ensure_database_secret
  ensure_api_keys_secret
  # Both releases are checked before either is upgraded.
  guard_release api-service
  guard_release data-ingestion
  # api-service first: its pre-install/pre-upgrade hook migrates the schema both services use.
  chart_release api-service ApiServiceRoleArn
  chart_release data-ingestion DataIngestionRoleArn
  run helm test api-service --namespace "$APP_NAMESPACE" --timeout 2m
  run helm test data-ingestion --namespace "$APP_NAMESPACE" --timeout 2m
}

do_verify() {
  step "verify: the design's expected output"
  run kubectl cluster-info
  run kubectl get nodes -o wide
  run kubectl get pods --namespace "$APP_NAMESPACE" -o wide
  run kubectl get pods --namespace "$MONITORING_NAMESPACE"
  run kubectl get svc --namespace "$APP_NAMESPACE"
  run kubectl get ingress --namespace "$APP_NAMESPACE"
  run kubectl get hpa --namespace "$APP_NAMESPACE"
  run kubectl top nodes
  if [ "$DRY_RUN" = 1 ]; then
    info "(a real run also checks: ALB address assigned, /api/health and /ingest/health answer, /api/robots and /ingest/stats refuse a request without a key, HPA targets known)"
    return 0
  fi
  local address failures=0 hpa current scheme=http code
  local tls=()
  if [ -n "${CERTIFICATE_ARN:-}" ]; then
    # The ALB's own DNS name is not on the certificate: this checks the listener and routing.
    scheme=https
    tls=(--insecure)
  fi
  address=$(kubectl get ingress api-service --namespace "$APP_NAMESPACE" -o jsonpath='{.status.loadBalancer.ingress[0].hostname}' || true)
  if [ -z "$address" ]; then
    warn "the ALB has no address yet (kubectl -n kube-system logs deploy/aws-load-balancer-controller)"
    failures=$((failures + 1))
  else
    info "ALB: $scheme://$address  (GET /api/health, /ingest/health)"
    local path
    for path in /api/health /ingest/health; do
      if curl --fail --silent --show-error --max-time 10 ${tls[@]+"${tls[@]}"} "$scheme://$address$path" >/dev/null; then
        info "$path answers"
      else
        warn "$path does not answer through the ALB yet (targets registering?)"
        failures=$((failures + 1))
      fi
    done
    # Authentication: a data route without a key must be refused (401), never served.
    for path in /api/robots /ingest/stats; do
      code=$(curl --silent --output /dev/null --write-out '%{http_code}' --max-time 10 ${tls[@]+"${tls[@]}"} "$scheme://$address$path" || true)
      if [ "$code" = 401 ]; then
        info "$path without an API key: 401"
      else
        warn "$path without an API key answered $code, expected 401 (is auth.enabled false?)"
        failures=$((failures + 1))
      fi
    done
    if [ "$scheme" = https ]; then
      code=$(curl --silent --output /dev/null --write-out '%{http_code}' --max-time 10 "http://$address/api/health" || true)
      if [ "$code" = 301 ]; then
        info "HTTP redirects to HTTPS"
      else
        warn "http://$address/api/health answered $code, expected the 301 redirect to HTTPS"
        failures=$((failures + 1))
      fi
    fi
  fi
  for hpa in api-service data-ingestion; do
    current=$(kubectl get hpa "$hpa" --namespace "$APP_NAMESPACE" -o jsonpath='{.status.currentMetrics[*].resource.current.averageUtilization}' || true)
    if [ -z "$current" ]; then
      warn "HPA $hpa targets are <unknown>: is metrics-server serving? (kubectl top pods -n $APP_NAMESPACE)"
      failures=$((failures + 1))
    else
      info "HPA $hpa utilisation: $current"
    fi
  done
  [ "$failures" = 0 ] || die "verify found $failures problem(s)"
  info "all checks passed"
}

do_pin_addons() {
  step "pin-addons: EKS add-on versions this cluster runs (paste into deploy/versions.env)"
  local addon var version
  for addon in vpc-cni:VPC_CNI coredns:COREDNS kube-proxy:KUBE_PROXY aws-ebs-csi-driver:EBS_CSI amazon-cloudwatch-observability:CLOUDWATCH_OBSERVABILITY; do
    var=${addon#*:}
    version=$(DRY_RUN_ANSWER="<version>" query aws eks describe-addon --region "$AWS_REGION" --cluster-name "$CLUSTER_NAME" \
      --addon-name "${addon%%:*}" --query addon.addonVersion --output text)
    printf '%s_ADDON_VERSION=%s\n' "$var" "$version"
  done
}

[ "$DRY_RUN" = 1 ] && info "dry run: nothing is changed"
for s in "${steps[@]}"; do
  case "$s" in
    preflight) do_preflight ;;
    images) do_images ;;
    cluster) do_cluster ;;
    addons) do_addons ;;
    monitoring) do_monitoring ;;
    workloads) do_workloads ;;
    verify) do_verify ;;
    pin-addons) do_pin_addons ;;
    *) die "unknown step $s" ;;
  esac
done
step "done"
