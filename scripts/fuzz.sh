#!/usr/bin/env bash
# Runs every go test -fuzz target for the given time each (default 3s, as CI
# does; the long form is e.g. `scripts/fuzz.sh 45s`, about 12 minutes).
# New failing inputs are written to the package's testdata/fuzz/ and then
# run with `go test ./...` forever after.
#
# Go 1.26's fuzz coordinator can report a bare "context deadline exceeded"
# at the -fuzztime boundary when a worker is mid-execution (golang/go#75804,
# fixed in Go 1.27): no input is written and nothing is found. Such a run
# is retried once; a run that writes a failing input, or fails in any other
# way, or fails twice, fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime="${1:-3s}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
for pkg in ./config ./forwarders ./mapping ./webhooks; do
  for target in $(go test "$pkg" -list '^Fuzz' | grep '^Fuzz'); do
    for try in 1 2; do
      echo "== $pkg $target ($fuzztime)"
      if go test "$pkg" -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" 2>&1 | tee "$log"; test "${PIPESTATUS[0]}" -eq 0; then
        break
      fi
      if [ "$try" = 1 ] && grep -q 'context deadline exceeded' "$log" && ! grep -qE 'Failing input written|panic:' "$log" \
        && [ "$(grep -c '^    ' "$log")" -le 1 ]; then
        echo "== $target: the fuzz coordinator's deadline race (golang/go#75804), nothing found; running it again"
        continue
      fi
      exit 1
    done
  done
done
