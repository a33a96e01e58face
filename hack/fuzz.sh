#!/usr/bin/env bash
# Runs every fuzz target of the repository for FUZZTIME each (make fuzz).
#
# Go 1.26's fuzz coordinator can fail a run that found nothing with a bare
# "context deadline exceeded" right at the -fuzztime boundary
# (golang/go#75804, fixed in Go 1.27); a retry did not always dodge it
# (FuzzDecode, twice in a row in one CI run). So the targets are fuzzed
# with FUZZ_TOOLCHAIN (default go1.27.3, which the go command fetches from
# the module proxy once: about 76 MB; empty: the go command's own), while
# everything else builds with the repository's Go. A run that still fails
# that way, with no failing input written, is run once more; any other
# failure fails at once.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-10s}
GO=${GO:-go}
FUZZ_TOOLCHAIN=${FUZZ_TOOLCHAIN-go1.27.3}

run() { # dir target
  if [ -n "$FUZZ_TOOLCHAIN" ]; then
    GOTOOLCHAIN=$FUZZ_TOOLCHAIN "$GO" test -run='^$' -fuzz="^$2\$" -fuzztime="$FUZZTIME" "$1"
  else
    "$GO" test -run='^$' -fuzz="^$2\$" -fuzztime="$FUZZTIME" "$1"
  fi
}

dirs=$(grep -rl --include='*_test.go' --exclude-dir=bin --exclude-dir=.git '^func Fuzz' . | xargs -r -n1 dirname | sort -u)
for d in $dirs; do
  for f in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$d"/*_test.go | cut -c6-); do
    echo "== $d $f"
    if out=$(run "$d" "$f" 2>&1); then
      echo "$out" | tail -n 3
      continue
    fi
    echo "$out"
    if grep -q 'context deadline exceeded' <<<"$out" && ! grep -q 'Failing input written' <<<"$out"; then
      echo "== $d $f: the fuzztime race (golang/go#75804), no failing input: once more"
      run "$d" "$f"
      continue
    fi
    exit 1
  done
done
