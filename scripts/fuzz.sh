#!/usr/bin/env bash
# Runs every go test -fuzz target for the given time each (default 3s, as CI
# does; the long form is e.g. `scripts/fuzz.sh 45s`, about 12 minutes).
# New failing inputs are written to the package's testdata/fuzz/ and then
# run with `go test ./...` forever after.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime="${1:-3s}"
for pkg in ./config ./mapping ./webhooks; do
  for target in $(go test "$pkg" -list '^Fuzz' | grep '^Fuzz'); do
    echo "== $pkg $target ($fuzztime)"
    go test "$pkg" -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime"
  done
done
