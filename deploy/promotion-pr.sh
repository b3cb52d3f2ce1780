#!/usr/bin/env bash
# Commits the overlay change made by deploy/promote.sh on a branch and opens a pull request
# for it (.github/workflows/release.yml, jobs promote-dev and promote-prod).
#
#   deploy/promotion-pr.sh ENVIRONMENT VERSION BASE_BRANCH
#
# Needs git, the GitHub CLI and GH_TOKEN (contents: write, pull-requests: write). Nothing
# to commit (the overlay already pins these digests) is not an error. Set DRY_RUN=1 to stop
# after the local commit (tests/deploy/test_workflows.py).
set -euo pipefail

[ $# -eq 3 ] || { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
env_name=$1 version=$2 base=$3
overlay="k8s/overlays/$env_name"
[ -d "$overlay" ] || { echo "promotion-pr: no overlay $overlay" >&2; exit 1; }

if git diff --quiet -- "$overlay"; then
  echo "promotion-pr: $overlay already pins $version; nothing to propose"
  exit 0
fi
branch="promote/$env_name-$version"
git switch -c "$branch"
git add -- "$overlay"
git -c user.name="medrobotics release" -c user.email="release@medrobotics.invalid" \
  commit -q -m "promote $version to $env_name (image digests)" \
  -m "Pins $overlay to the images built, verified and scanned for $version. Argo CD syncs $env_name when this is merged."
git --no-pager show --stat --format='%s' HEAD
[ "${DRY_RUN:-0}" = 1 ] && exit 0

gh auth setup-git
git push origin "$branch"
gh pr create --base "$base" --head "$branch" \
  --title "Promote $version to $env_name" \
  --body "Pins \`$overlay\` to the digests that release \`$version\` built, verified and scanned (see the release run's summary). Merging lets Argo CD sync $env_name."
