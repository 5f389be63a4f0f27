//go:build e2e

package node

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubervisor/kubervisor/test/cluster"
	"github.com/kubervisor/kubervisor/test/utils"
)

// TestNodeSetupFaults: a fault in the node's set-up fails Start with an error naming the part and why, and
// leaves nothing behind; never a hang.
func TestNodeSetupFaults(t *testing.T) {
	assets, err := utils.AssetsDir()
	if err != nil {
		t.Fatal(err)
	}
	failing := func(t *testing.T, name, why string) string {
		dir := t.TempDir()
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte("#!/bin/sh\necho '"+why+"' >&2\nexit 1\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	for _, tc := range []struct {
		name string
		// setup returns the assets directory to use; it may change PATH.
		setup      func(t *testing.T) string
		part, want string
	}{{
		name: "no containerd",
		setup: func(t *testing.T) string {
			// Every tool the node needs but containerd.
			dir := t.TempDir()
			for _, tool := range []string{"unshare", "ip", "mount", "umount", "du", "nice", "ionice", "find", "containerd-shim-runc-v2", "runc", "ctr"} {
				path, err := exec.LookPath(tool)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(path, filepath.Join(dir, tool)); err != nil {
					t.Fatal(err)
				}
			}
			t.Setenv("PATH", dir)
			return assets
		},
		part: cluster.PartPrerequisites, want: "missing: containerd on PATH",
	}, {
		name: "containerd exits",
		setup: func(t *testing.T) string {
			dir := failing(t, "containerd", "containerd: failed to load config (a test)")
			t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
			return assets
		},
		part: cluster.PartContainerd, want: "failed to load config (a test)",
	}, {
		name: "the kubelet exits",
		setup: func(t *testing.T) string {
			dir := failing(t, "kubelet", "kubelet: failed to run Kubelet (a test)")
			for _, b := range []string{"kube-apiserver", "etcd", "kubectl", "kube-controller-manager", "kube-scheduler"} {
				if err := os.Symlink(filepath.Join(assets, b), filepath.Join(dir, b)); err != nil {
					t.Fatal(err)
				}
			}
			return dir
		},
		part: cluster.PartKubelet, want: "failed to run Kubelet (a test)",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := tc.setup(t)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			began := time.Now()
			c, err := cluster.Start(ctx, cluster.Options{AssetsDir: dir, CRDDirectoryPaths: []string{},
				Node: &cluster.NodeOptions{StartTimeout: 30 * time.Second}})
			if err == nil {
				_ = c.Stop()
				t.Fatal("Start succeeded")
			}
			var setupErr *cluster.NodeSetupError
			if !errors.As(err, &setupErr) || setupErr.Part != tc.part || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want a NodeSetupError of part %q saying %q", err, tc.part, tc.want)
			}
			t.Logf("failed after %s: %s", time.Since(began).Round(time.Millisecond), strings.SplitN(err.Error(), "\n", 2)[0])
			for _, p := range []string{"/sys/class/net/kvbr0", "/var/lib/kubelet", "/run/netns", "/sys/fs/cgroup/memory/kubepods"} {
				if _, err := os.Stat(p); err == nil {
					t.Errorf("%s left behind", p)
				}
			}
		})
	}
}
