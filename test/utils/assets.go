// Package utils holds what the test binaries share whatever they run against, as Kubebuilder's test/utils
// does: for now, where the control-plane binaries are.
package utils

import (
	"errors"
	"os"
)

// AssetsEnv names the directory of the control-plane binaries the tests run (kube-apiserver, etcd, kubectl,
// kube-controller-manager). The Makefile sets it to bin/k8s/$(ENVTEST_K8S_VERSION), the one place where the
// Kubernetes version of the tests is written.
const AssetsEnv = "KUBEBUILDER_ASSETS"

// AssetsDir returns $KUBEBUILDER_ASSETS, or an error saying how to run the tests when it is not set.
func AssetsDir() (string, error) {
	if dir := os.Getenv(AssetsEnv); dir != "" {
		return dir, nil
	}
	return "", errors.New(AssetsEnv + " is not set: run the tests through make (`make test`, `make test-e2e` or " +
		"`make demo`), which sets it to bin/k8s/$(ENVTEST_K8S_VERSION) and installs the binaries there")
}
