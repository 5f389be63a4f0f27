#!/usr/bin/env bash
# envtest-assets.sh obtains the control-plane binaries the tests run against
# (kube-apiserver, etcd, kubectl, kube-controller-manager) into bin/k8s/<version>/.
#
# Order of attempts, cheapest first:
#   1. already in bin/k8s/<version>/            -> nothing to do
#   2. in the user cache (~/.cache/kubervisor)  -> copy (a clean clone, as CI uses, does not rebuild)
#   3. setup-envtest                            -> kube-apiserver, etcd, kubectl when it can download
#   4. build from source through the Go module proxy, for whatever is still missing.
#
# NOTE: `go install k8s.io/kubernetes/cmd/...@vX` is refused because k8s.io/kubernetes's go.mod has
# replace directives. We build from a throwaway wrapper module that requires k8s.io/kubernetes, replaces
# each ./staging/src/k8s.io/X module by the published k8s.io/X v0.<minor>.<patch>, and lists the
# binaries as tool directives. etcd is the main package go.etcd.io/etcd/server/v3 of the same graph.
#
# Usage: K8S_VERSION=1.x.y hack/envtest-assets.sh [bin-dir]   (prints the asset directory on stdout)
set -euo pipefail

K8S_VERSION="${K8S_VERSION:?set K8S_VERSION (the Makefile passes its ENVTEST_K8S_VERSION)}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN_DIR="${1:-$ROOT/bin}"
DEST="$BIN_DIR/k8s/$K8S_VERSION"
CACHE="${KUBERVISOR_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kubervisor}/k8s/$K8S_VERSION"
# K8S_BINARIES overrides the set (make node-assets asks for kubelet and kube-scheduler the same way).
read -r -a BINARIES <<< "${K8S_BINARIES:-kube-apiserver etcd kubectl kube-controller-manager}"

log() { echo "envtest-assets: $*" >&2; }

missing() {
  local dir=$1 b out=()
  for b in "${BINARIES[@]}"; do [[ -x "$dir/$b" ]] || out+=("$b"); done
  echo "${out[@]:-}"
}

mkdir -p "$DEST"
if [[ -z "$(missing "$DEST")" ]]; then
  echo "$DEST"; exit 0
fi

# 2. user cache
for b in "${BINARIES[@]}"; do
  if [[ ! -x "$DEST/$b" && -x "$CACHE/$b" ]]; then cp "$CACHE/$b" "$DEST/$b"; fi
done
if [[ -z "$(missing "$DEST")" ]]; then
  log "copied from $CACHE"; echo "$DEST"; exit 0
fi

# 3. setup-envtest (needs the network to its release bucket, which is often unreachable)
if [[ -x "$BIN_DIR/setup-envtest" ]]; then
  if dir=$(timeout 60 "$BIN_DIR/setup-envtest" use "$K8S_VERSION" --bin-dir "$BIN_DIR/setup-envtest-cache" -p path 2>/dev/null) && [[ -n "$dir" ]]; then
    for b in kube-apiserver etcd kubectl; do
      [[ -x "$DEST/$b" || ! -x "$dir/$b" ]] || cp "$dir/$b" "$DEST/$b"
    done
    log "kube-apiserver, etcd, kubectl from setup-envtest"
  else
    log "setup-envtest could not download $K8S_VERSION; building from source"
  fi
fi

# 4. build what is still missing from source
todo=$(missing "$DEST")
if [[ -n "$todo" ]]; then
  minor="0.${K8S_VERSION#*.}"   # 1.37.1 -> 0.37.1
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  log "building [$todo] of k8s.io/kubernetes v$K8S_VERSION from source (cold: several minutes)"
  upstream_mod="$work/upstream.mod"
  (cd "$work" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" >/dev/null)
  cp "$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/v$K8S_VERSION.mod" "$upstream_mod"
  {
    echo "module kubervisor.local/k8s-assets"
    echo
    grep -E '^(go|godebug) ' "$upstream_mod"
    echo
    echo "require k8s.io/kubernetes v$K8S_VERSION"
    echo
    echo "tool ("
    for b in $todo; do
      case $b in
        etcd) echo "	go.etcd.io/etcd/server/v3" ;;
        *) echo "	k8s.io/kubernetes/cmd/$b" ;;
      esac
    done
    echo ")"
    echo
    echo "replace ("
    sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/src/k8s.io/.*#\t\1 => \1 v'"$minor"'#p' "$upstream_mod"
    echo ")"
  } > "$work/go.mod"
  cd "$work"
  GOFLAGS=-mod=mod go mod tidy >/dev/null 2>&1 || GOFLAGS=-mod=mod go get "k8s.io/kubernetes@v$K8S_VERSION" >/dev/null
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=v$K8S_VERSION -X $pkg.gitMajor=${K8S_VERSION%%.*} -X $pkg.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2)"
  done
  mkdir -p out
  pkgs=()
  for b in $todo; do
    case $b in
      etcd) pkgs+=(go.etcd.io/etcd/server/v3) ;;
      *) pkgs+=("k8s.io/kubernetes/cmd/$b") ;;
    esac
  done
  CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "$ldflags" -o out/ "${pkgs[@]}"
  [[ ! -x out/v3 ]] || mv out/v3 out/etcd
  [[ ! -x out/server ]] || mv out/server out/etcd
  for b in $todo; do cp "out/$b" "$DEST/$b"; done
fi

if [[ -n "$(missing "$DEST")" ]]; then
  log "still missing: $(missing "$DEST")"; exit 1
fi
mkdir -p "$CACHE"
for b in "${BINARIES[@]}"; do [[ -x "$CACHE/$b" ]] || cp "$DEST/$b" "$CACHE/$b"; done
log "ready in $DEST"
echo "$DEST"
