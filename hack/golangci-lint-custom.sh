#!/usr/bin/env bash
# golangci-lint-custom.sh builds golangci-lint with the logcheck module plugin (Kubernetes' logging
# conventions), as `golangci-lint custom` would from .custom-gcl.yml.
#
# NOTE: `golangci-lint custom` clones golangci-lint from GitHub; this machine reaches only the Go module
# proxy. The same build is done here from the module proxy: the golangci-lint module source, one file that
# imports the plugin (which registers itself), and `go build`.
#
# Usage: hack/golangci-lint-custom.sh OUTPUT GOLANGCI_LINT_VERSION LOGTOOLS_VERSION
set -euo pipefail
out=$1 lint_version=$2 logtools_version=$3

work=$(mktemp -d)
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
src=$(go mod download -json "github.com/golangci/golangci-lint/v2@${lint_version}" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[[ -d "$src" ]] || { echo "golangci-lint-custom: no source for golangci-lint ${lint_version}" >&2; exit 1; }
cp -r "$src/." "$work/"
chmod -R u+w "$work"
cat > "$work/cmd/golangci-lint/plugins.go" <<'GO'
package main

// Module plugins, registered by their init functions (see .custom-gcl.yml).
import _ "sigs.k8s.io/logtools/logcheck/gclplugin"
GO
cd "$work"
GOFLAGS=-mod=mod go get "sigs.k8s.io/logtools@${logtools_version}" >/dev/null
GOFLAGS=-mod=mod go build -o "$out" ./cmd/golangci-lint
