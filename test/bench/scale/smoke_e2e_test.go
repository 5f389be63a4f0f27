//go:build e2e

package main

import (
	"testing"
	"time"

	"github.com/go-logr/logr"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/klog/v2"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/kubervisor/kubervisor/test/cluster"
	"github.com/kubervisor/kubervisor/test/utils"
)

// NOTE: a Ginkgo suite although it holds one test: `make test-e2e` passes -ginkgo.* flags to every
// package it runs, which a plain testing binary would refuse.
func TestBenchScaleSmoke(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "make bench-scale (smoke)")
}

var _ = Describe("make bench-scale at 500 pods / 50 KubervisorServices", func() {
	It("adopts every pod, makes every KubervisorService Ready and writes nothing in steady state besides leader election", func(ctx SpecContext) {
		root, err := cluster.RepoRoot()
		Expect(err).NotTo(HaveOccurred())
		_, err = utils.AssetsDir()
		Expect(err).NotTo(HaveOccurred(), "the benchmark starts its cluster from $KUBEBUILDER_ASSETS")
		klog.SetLogger(logr.Discard())
		logf.SetLogger(logr.Discard())

		res, err := Run(ctx, Config{
			Pods: 500, KVS: 50, Period: 5 * time.Second, AnomalyRate: 0.01, Steady: 20 * time.Second,
			Manager: root + "/bin/manager", Timeout: 3 * time.Minute, Log: GinkgoWriter,
		})
		if res != nil {
			AddReportEntry("bench-scale 500/50", res.Table())
		}
		Expect(err).NotTo(HaveOccurred())

		Expect(res.Adoption.PodsNamed).To(Equal(500), "every pod labelled kubervisor/name")
		Expect(res.Adoption.KVSReady).To(Equal(50), "every KubervisorService Ready=True")
		Expect(res.Reaction.Ejected).To(Equal(res.Reaction.Expected), "every flagged pod out of traffic")
		Expect(res.Steady.Calls).To(BeNumerically(">", 0), "the breakers kept asking the detector")

		var writes []requestCount
		for _, r := range res.Steady.Requests.Requests {
			if r.Write {
				writes = append(writes, r)
			}
		}
		Expect(writes).To(BeEmpty(), "write requests in steady state besides leader election (audit log)")
		// Leader election renews with PUT; nothing else of the manager may write.
		for _, method := range []string{"POST", "PATCH", "DELETE"} {
			Expect(res.Steady.RESTPerMin).NotTo(HaveKey(method), "rest_client_requests_total{method=%q} grew in steady state", method)
		}
		Expect(res.Steady.Requests.LeaderElection).To(BeNumerically(">", 0), "the audit log records the manager's requests")
	})
})
