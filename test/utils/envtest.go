package utils

import (
	"testing"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// StartControlPlane starts env (etcd and kube-apiserver from AssetsDir) for the test, stops it when the test
// ends, and returns the administrator's config.
func StartControlPlane(t *testing.T, env *envtest.Environment) *rest.Config {
	t.Helper()
	assets, err := AssetsDir()
	if err != nil {
		t.Fatal(err)
	}
	env.BinaryAssetsDirectory = assets
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting the control plane: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stopping the control plane: %v", err)
		}
	})
	return cfg
}
