//go:build e2e

package main_test

import (
	"errors"
	"io"
	"os/exec"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gbytes"

	"github.com/kubervisor/kubervisor/test/cluster"
	"github.com/kubervisor/kubervisor/test/utils"
)

// NOTE: a Ginkgo suite although it holds one test: `make test-e2e` passes -ginkgo.* flags to every
// package under test/, which a plain testing binary would refuse.
func TestDemo(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "make demo (smoke)")
}

var _ = Describe("make demo", func() {
	It("shows a faulty pod ejected and restored or paused, and stops every process it started", func(ctx SpecContext) {
		root, err := cluster.RepoRoot()
		Expect(err).NotTo(HaveOccurred())
		Expect(filepath.Join(root, "bin", "manager")).To(BeAnExistingFile(), "run `make build` (make test-e2e does)")
		_, err = utils.AssetsDir()
		Expect(err).NotTo(HaveOccurred(), "the demo starts its cluster from $KUBEBUILDER_ASSETS")

		By("building the demo as `go run ./test/demo` does")
		bin := filepath.Join(GinkgoT().TempDir(), "demo")
		build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./test/demo")
		build.Dir = root
		out, err := build.CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))

		By("running it from the repository root with --duration, as `make demo DEMO_ARGS=--duration=90s` does")
		output := gbytes.NewBuffer()
		cmd := exec.Command(bin, "--duration=90s")
		cmd.Dir = root
		cmd.Stdout = io.MultiWriter(output, GinkgoWriter)
		cmd.Stderr = cmd.Stdout
		start := time.Now()
		Expect(cmd.Start()).To(Succeed())
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()

		// Every process the demo starts is its direct child (each leads its own process group).
		started := map[int]bool{}
		var waitErr error
	wait:
		for {
			for _, pid := range cluster.LiveChildren(cmd.Process.Pid) {
				started[pid] = true
			}
			select {
			case waitErr = <-done:
				break wait
			case <-ctx.Done():
				// Ctrl-C, as a user would: the demo stops what it started.
				_ = cmd.Process.Signal(syscall.SIGINT)
				waitErr = <-done
				break wait
			case <-time.After(250 * time.Millisecond):
			}
		}
		GinkgoWriter.Printf("the demo ran for %s\n", time.Since(start).Round(time.Second))

		if exit, ok := errors.AsType[*exec.ExitError](waitErr); ok {
			Fail("the demo exited with " + exit.String())
		}
		Expect(waitErr).NotTo(HaveOccurred())
		Expect(ctx.Err()).NotTo(HaveOccurred(), "the demo outlived the spec timeout")
		Expect(output.Contents()).To(ContainSubstring("ejected by http-errors: bad ratio"), "an ejection, from the manager's event")
		Expect(string(output.Contents())).To(MatchRegexp(`left the EndpointSlice: [0-9.]+s after the label, [0-9.]+s after its fault was injected`))
		Expect(string(output.Contents())).To(MatchRegexp(`restored: retry \d of 2|paused: retry \d exceeds`), "a restoration or a pause")

		kubeconfig := regexp.MustCompile(`kubeconfig: (\S+)`).FindSubmatch(output.Contents())
		Expect(kubeconfig).NotTo(BeNil(), "the kubeconfig path is printed")
		Expect(string(output.Contents())).To(ContainSubstring("get kvs -n demo -w"))
		Expect(string(kubeconfig[1])).NotTo(BeAnExistingFile(), "the work directory is removed")

		Expect(len(started)).To(BeNumerically(">=", 5), "etcd, kube-apiserver, kube-controller-manager, Prometheus and the manager")
		for pid := range started {
			Expect(cluster.ProcessAlive(pid)).To(BeFalse(), "process %d started by the demo survived it", pid)
		}
	}, SpecTimeout(4*time.Minute))
})
