#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need when it is missing, lints and
# checks the formatting, type-checks, then runs every test file. Needs root for the Debian packages
# of the lab (../shared/oci-lab).
set -euo pipefail
cd "$(dirname "$0")/.."
LAB=${OCI_LAB:-$(cd .. && pwd)/shared/oci-lab}
if [ ! -f "$LAB/install.sh" ]; then
  echo "test: the oci-lab is not at $LAB (set OCI_LAB to its folder)" >&2
  exit 1
fi
export OCI_LAB="$LAB"

# Debian packages: registries, skopeo, containerd, nginx... (a no-op when all are present).
bash "$LAB/install.sh"
# kubectl renders manifests/ (kustomize) in test/manifests; the node machine image ships it.
command -v kubectl > /dev/null || echo "test: kubectl not found: the manifest render test will say so" >&2

# npm packages, exactly as locked.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi

# Lint errors and unformatted files fail the run before any test starts.
npm run -s lint
npm run -s typecheck

out=$(mktemp)
trap 'rm -f "$out"' EXIT
status=0
npx tap "$@" 2>&1 | tee "$out" || status=$?
summary=$(grep -E '^# \{ total: [0-9]+' "$out" | tail -1 || true)
pass=$(sed -nE 's/.*pass: ([0-9]+).*/\1/p' <<< "$summary")
fail=$(sed -nE 's/.*fail: ([0-9]+).*/\1/p' <<< "$summary")
echo "${pass:-0} passed, ${fail:-0} failed"
exit "$status"
