#!/usr/bin/env bash
# Pins the images of a kustomize overlay to digests: the promotion step of
# .github/workflows/release.yml (and of a person promoting by hand).
#
#   deploy/promote.sh OVERLAY VERSION IMAGE=REPOSITORY@sha256:DIGEST...
#       e.g. deploy/promote.sh k8s/overlays/dev v1.4.2 \
#              medrobotics/api-service=1111.dkr.ecr.us-east-1.amazonaws.com/medrobotics/api-service@sha256:<64 hex>
#   deploy/promote.sh --from SOURCE_OVERLAY OVERLAY
#       copy every image pin of SOURCE (what dev runs) to OVERLAY (prod): promotion by digest,
#       never a rebuild
#
# Each IMAGE names an existing `images:` entry of OVERLAY/kustomization.yaml; its newName and
# digest are set, its newTag removed, and a `# release VERSION` comment records the version.
# Fails, changing nothing, on an unknown image, a malformed digest or a tag instead of a digest.
set -euo pipefail

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
die() { echo "promote: $*" >&2; exit 1; }

DIGEST_RE='^sha256:[0-9a-f]{64}$'
# The committed overlays hold this until their first promotion: never promote it.
PLACEHOLDER=sha256:0000000000000000000000000000000000000000000000000000000000000000
VERSION_RE='^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$'

# pins_of FILE: "name newName digest release" for each digest-pinned entry of FILE's images:.
pins_of() {
  awk '
    /^images:/ { inimg = 1; next }
    inimg && /^[^ #-]/ { inimg = 0 }
    !inimg { next }
    /^  - name:/ { if (name != "") print name, nn, dg, rel; name = $3; nn = ""; dg = ""; rel = "-"; next }
    /^    # release / { rel = $3 }
    /^    newName:/ { nn = $2 }
    /^    digest:/ { dg = $2 }
    END { if (name != "") print name, nn, dg, rel }
  ' "$1"
}

# set_pin FILE NAME REPOSITORY DIGEST VERSION: rewrites one entry in place.
set_pin() {
  local file=$1 name=$2 repo=$3 digest=$4 version=$5 tmp
  tmp=$(mktemp)
  awk -v name="$name" -v repo="$repo" -v digest="$digest" -v version="$version" '
    function flush() {
      if (cur == name) {
        print "    # release " version
        print "    newName: " repo
        print "    digest: " digest
        found = 1
      }
    }
    /^images:/ { inimg = 1; print; next }
    inimg && /^[^ #-]/ { flush(); cur = ""; inimg = 0 }
    inimg && /^  - name:/ { flush(); cur = $3; print; next }
    inimg && cur == name && /^    (# release |newName:|newTag:|digest:)/ { next }
    { print }
    END { if (inimg) flush(); if (!found) exit 3 }
  ' "$file" >"$tmp" || { rm -f "$tmp"; die "$file: no images: entry named $name"; }
  cat "$tmp" >"$file"
  rm -f "$tmp"
}

if [ $# -ge 1 ] && [ "$1" = "--from" ]; then
  [ $# -eq 3 ] || usage
  src="$2/kustomization.yaml" dst="$3/kustomization.yaml"
  [ -f "$src" ] || die "$src: not found"
  [ -f "$dst" ] || die "$dst: not found"
  args=()
  while read -r name repo digest release; do
    [[ "$digest" =~ $DIGEST_RE ]] || die "$src: $name is not pinned to a digest (promote the release to it first)"
    [ "$digest" != "$PLACEHOLDER" ] || die "$src: $name holds the placeholder digest (promote a release to it first)"
    args+=("$name=$repo@$digest")
    version=$release
  done < <(pins_of "$src")
  [ ${#args[@]} -gt 0 ] || die "$src: no images: entries"
  [ "${version:--}" != - ] || version=unrecorded
  exec "$0" "$3" "$version" "${args[@]}"
fi

[ $# -ge 3 ] || usage
overlay=$1 version=$2
shift 2
file="$overlay/kustomization.yaml"
[ -f "$file" ] || die "$file: not found"
[[ "$version" =~ $VERSION_RE ]] || die "version $version: letters, digits, . _ - only"

# Validate everything before touching the file.
names=() repos=() digests=()
for spec in "$@"; do
  [[ "$spec" == *=*@* ]] || die "$spec: expected IMAGE=REPOSITORY@sha256:DIGEST"
  name=${spec%%=*} ref=${spec#*=}
  repo=${ref%@*} digest=${ref##*@}
  [[ "$digest" =~ $DIGEST_RE ]] || die "$spec: digest must be sha256: and 64 lowercase hex digits"
  [ "$digest" != "$PLACEHOLDER" ] || die "$spec: the placeholder digest is not an image"
  [[ "$repo" =~ ^[a-z0-9][a-z0-9._/:-]*$ ]] || die "$spec: malformed repository $repo"
  [[ "$repo" != *:* || "$repo" =~ ^[^/]+:[0-9]+/ ]] || die "$spec: a tag is not a digest: give REPOSITORY@sha256:..."
  pins_of "$file" | awk -v n="$name" '$1 == n {f = 1} END {exit !f}' || die "$file: no images: entry named $name"
  names+=("$name") repos+=("$repo") digests+=("$digest")
done

work=$(mktemp)
trap 'rm -f "$work"' EXIT
cp "$file" "$work"
for i in "${!names[@]}"; do
  set_pin "$work" "${names[$i]}" "${repos[$i]}" "${digests[$i]}" "$version"
done
cat "$work" >"$file"
for i in "${!names[@]}"; do
  echo "promote: $overlay ${names[$i]} -> ${repos[$i]}@${digests[$i]} ($version)"
done
