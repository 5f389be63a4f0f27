#!/usr/bin/env bash
# ensure-prometheus.sh prints the path of a usable prometheus binary for the e2e harness and the demo.
#
# Order: bin/prometheus of the repository (e.g. built from source), else /usr/bin/prometheus (Debian's
# package), else install Debian's package. The package's systemd service is never started: the harness
# runs prometheus as a child process with its own flags.
#
# Usage: test/cluster/ensure-prometheus.sh   (the path on stdout, progress on stderr)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

if [[ -x "$ROOT/bin/prometheus" ]]; then
  echo "$ROOT/bin/prometheus"; exit 0
fi
if [[ -x /usr/bin/prometheus ]]; then
  echo /usr/bin/prometheus; exit 0
fi

sudo=()
if [[ "$(id -u)" != 0 ]]; then sudo=(sudo -n); fi
echo "ensure-prometheus: installing Debian's prometheus package" >&2
export DEBIAN_FRONTEND=noninteractive
# NOTE: policy-rc.d 101 keeps dpkg from starting the packaged service; the harness owns the process.
policy=/usr/sbin/policy-rc.d
created_policy=
if [[ ! -e "$policy" ]]; then
  printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
  "${sudo[@]}" chmod +x "$policy"
  created_policy=1
fi
cleanup() { if [[ -n "$created_policy" ]]; then "${sudo[@]}" rm -f "$policy"; fi; }
trap cleanup EXIT
"${sudo[@]}" apt-get update >&2
"${sudo[@]}" apt-get install -y --no-install-recommends prometheus >&2
if [[ ! -x /usr/bin/prometheus ]]; then
  echo "ensure-prometheus: /usr/bin/prometheus missing after install" >&2; exit 1
fi
echo /usr/bin/prometheus
