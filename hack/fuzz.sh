#!/usr/bin/env bash
# Runs every native Go fuzz target (func FuzzXxx) of the given packages for a fixed time each, one target
# at a time: go test -fuzz takes one target per run.
#
# Usage: hack/fuzz.sh FUZZTIME PKG...   (make fuzz)
#
# A target that finds an input breaking it fails, and go test writes the input to
# <package>/testdata/fuzz/<target>/: fix the code and commit the input, which `go test` then runs as a case.
#
# NOTE: the fuzzing coordinator of Go before 1.27 can fail a run that found nothing with a bare "context
# deadline exceeded" when the -fuzztime deadline races a worker (golang/go#75804). Such a run wrote no input
# and printed no failure of its own: it is reported as that race and not counted.
set -euo pipefail

fuzztime=$1
shift
start=$(date +%s)
targets=0
failed=()
for pkg in "$@"; do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz'); do
    targets=$((targets + 1))
    corpus="$dir/testdata/fuzz/$target"
    before=$(ls "$corpus" 2>/dev/null || true)
    echo "=== $pkg $target, $fuzztime"
    if out=$(go test -run '^$' -fuzz "^$target\$" -fuzztime "$fuzztime" "$pkg" 2>&1); then
      grep '^fuzz: elapsed' <<<"$out" | tail -n 1 || true
      continue
    fi
    after=$(ls "$corpus" 2>/dev/null || true)
    if [ "$before" = "$after" ] && ! grep -q 'Failing input written' <<<"$out" &&
      [ "$(grep -c '^    ' <<<"$out")" = 1 ] && grep -q '^    context deadline exceeded$' <<<"$out"; then
      grep '^fuzz: elapsed' <<<"$out" | tail -n 1 || true
      echo "(a bare \"context deadline exceeded\" and no input written: the coordinator's race, golang/go#75804)"
      continue
    fi
    echo "$out"
    failed+=("$pkg $target")
  done
done
echo "=== fuzzed $targets targets for $fuzztime each in $(($(date +%s) - start))s"
if [ ${#failed[@]} -gt 0 ]; then
  printf 'FAILED: %s\n' "${failed[@]}"
  exit 1
fi
