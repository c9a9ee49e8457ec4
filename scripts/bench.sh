#!/bin/bash
# npm run bench [-- --quick] [--out FILE] [--reps N] [--only blob,head,...,s3,gc] [--rate B/s] [--delay-ms MS]
# Installs what the benchmark needs (the oci-lab packages, node_modules), builds dist/ and runs
# bench/run.ts against the compiled proxy (node dist/main.js: no tsx in the measured process).
set -euo pipefail
cd "$(dirname "$0")/.."
LAB=${OCI_LAB:-$(cd .. && pwd)/shared/oci-lab}
[ -x "$LAB/registry-up.sh" ] || { echo "oci-lab not found at $LAB (set OCI_LAB)" >&2; exit 2; }
export OCI_LAB=$LAB
missing=""
for bin in docker-registry skopeo containerd nginx jq curl openssl python3; do
  command -v "$bin" > /dev/null 2>&1 || missing="$missing $bin"
done
if [ -n "$missing" ]; then
  echo "installing the oci-lab packages (missing:$missing)" >&2
  bash "$LAB/install.sh"
fi
[ -d node_modules ] || npm ci
# tsc emits even when another part of the tree has type errors; measure what it emitted.
npm run build > /tmp/pullthrough-bench-build.log 2>&1 || {
  echo "npm run build reported errors (see /tmp/pullthrough-bench-build.log); benchmarking what it emitted" >&2
  [ -f dist/main.js ] || exit 1
}
# The S3 row (bench/s3.ts: radosgw, redirects) and the collection row (bench/gc.ts) run after the
# others, or alone with `--only s3` / `--only gc`; each reads --quick (s3 also --reps) and prints
# its own table.
only=$(printf '%s\n' "$@" | awk 'p { print; exit } $0 == "--only" { p = 1 }')
# The rows bench/run.ts runs: --only without s3 and gc.
rest=$(printf '%s\n' "${only//,/$'\n'}" | grep -vx -e s3 -e gc | paste -sd, || true)
rc=0
if [ -z "$only" ] || [ -n "$rest" ]; then node --import tsx bench/run.ts "$@" || rc=$?; fi
if [ -z "$only" ] || [[ ",$only," == *,s3,* ]]; then node --import tsx bench/s3.ts "$@" || rc=$?; fi
if [ -z "$only" ] || [[ ",$only," == *,gc,* ]]; then node --import tsx bench/gc.ts "$@" || rc=$?; fi
exit "$rc"
