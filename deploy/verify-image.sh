#!/usr/bin/env bash
# Release gate for one pushed image (.github/workflows/release.yml, job images):
#
#   deploy/verify-image.sh REPOSITORY TAG DIGEST
#
# 1. ECR resolves REPOSITORY:TAG to exactly DIGEST (what the build reported): the digest the
#    promotion pins is the one that was pushed and tagged.
# 2. The linux/amd64 image of that index (the build attaches SBOM and provenance manifests,
#    so the tag names an index) has finished its scan-on-push scan.
# 3. The scan has no finding of a severity in FAIL_ON_SEVERITIES (default CRITICAL,HIGH).
#
# Prints `digest=<DIGEST>` and `platform-digest=<amd64 image digest>` for $GITHUB_OUTPUT.
# Needs the AWS CLI with credentials allowed ecr:DescribeImages, ecr:BatchGetImage and
# ecr:DescribeImageScanFindings on REPOSITORY (deploy/cloudformation/github-oidc.yaml).
set -euo pipefail

die() { echo "verify-image: $*" >&2; exit 1; }
[ $# -eq 3 ] || { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
repository=$1 tag=$2 digest=$3
fail_on=${FAIL_ON_SEVERITIES:-CRITICAL,HIGH}
[[ "$digest" =~ ^sha256:[0-9a-f]{64}$ ]] || die "$digest: not a sha256 digest"

tagged=$(aws ecr describe-images --repository-name "$repository" --image-ids "imageTag=$tag" \
  --query 'imageDetails[0].imageDigest' --output text)
[ "$tagged" = "$digest" ] || die "$repository:$tag is $tagged in ECR, but the build pushed $digest"

manifest=$(aws ecr batch-get-image --repository-name "$repository" --image-ids "imageDigest=$digest" \
  --accepted-media-types application/vnd.oci.image.index.v1+json \
  application/vnd.docker.distribution.manifest.list.v2+json \
  application/vnd.oci.image.manifest.v1+json application/vnd.docker.distribution.manifest.v2+json \
  --query 'images[0].imageManifest' --output text)
platform=$(jq -r --arg d "$digest" '
  if .manifests then
    [.manifests[] | select(.platform.os == "linux" and .platform.architecture == "amd64") | .digest]
    | if length == 1 then .[0] else error("expected one linux/amd64 manifest, found \(length)") end
  else $d end' <<<"$manifest") || die "$repository@$digest: cannot find its linux/amd64 image"

aws ecr wait image-scan-complete --repository-name "$repository" --image-id "imageDigest=$platform" ||
  die "$repository@$platform: the scan did not complete (is scan on push enabled?)"
counts=$(aws ecr describe-image-scan-findings --repository-name "$repository" --image-id "imageDigest=$platform" \
  --query 'imageScanFindings.findingSeverityCounts' --output json)
[ -n "$counts" ] && [ "$counts" != null ] || counts='{}'
echo "verify-image: $repository@$platform findings: $(jq -c . <<<"$counts")" >&2
blocking=$(jq -r --arg f "$fail_on" '
  ($f | split(",") | map(ascii_upcase)) as $sev
  | [to_entries[] | select((.key | ascii_upcase) as $k | $sev | index($k)) | select(.value > 0) | "\(.key)=\(.value)"]
  | join(" ")' <<<"$counts")
[ -z "$blocking" ] || die "$repository@$platform has findings at a blocking severity ($fail_on): $blocking"

echo "digest=$digest"
echo "platform-digest=$platform"
