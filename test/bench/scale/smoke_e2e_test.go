//go:build e2e

package main

import (
	"fmt"
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
		res := smoke(ctx, Config{Pods: 500, KVS: 50, Period: 5 * time.Second, AnomalyRate: 0.01, Steady: 20 * time.Second,
			Timeout: 3 * time.Minute})

		Expect(res.Adoption.PodsNamed).To(Equal(500), "every pod labelled kubervisor/name")
		Expect(res.Adoption.KVSReady).To(Equal(50), "every KubervisorService Ready=True")
		Expect(res.Reaction.Ejected).To(Equal(res.Reaction.Expected), "every flagged pod out of traffic")
		Expect(res.Steady.Calls).To(BeNumerically(">", 0), "the breakers kept asking the detector")
		for _, proc := range []string{"kube-apiserver", "etcd", "manager", "harness"} {
			Expect(res.Adoption.ProcessCPU).To(HaveKeyWithValue(proc, BeNumerically(">", 0)), "the CPU %s used during adoption", proc)
		}
		Expect(res.Adoption.ProcessCPU["manager"]).To(BeNumerically("~", res.Adoption.CPUSeconds, 0.5),
			"the manager's share is the manager's CPU")

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

	It("splits 1,000 KubervisorServices between two shards: each evaluates its own half and nothing of the other", func(ctx SpecContext) {
		res := smoke(ctx, Config{Pods: 2000, KVS: 1000, Shards: 2, Period: 5 * time.Second, AnomalyRate: 0.01, Steady: 15 * time.Second,
			Timeout: 4 * time.Minute})

		Expect(res.Adoption.PodsNamed).To(Equal(2000), "every pod adopted, by the shard of its KubervisorService")
		Expect(res.Adoption.KVSReady).To(Equal(1000), "every KubervisorService Ready=True")
		Expect(res.Reaction.Ejected).To(Equal(res.Reaction.Expected), "every flagged pod out of traffic, in both shards")
		Expect(res.Steady.Breakers).To(Equal(1000), "every breaker asked the detector in the steady window")
		Expect(res.Shards).To(ConsistOf(
			ShardResult{Selector: shardLabel + "=s0", Evaluated: 500},
			ShardResult{Selector: shardLabel + "=s1", Evaluated: 500},
		), "each shard evaluated exactly its 500 KubervisorServices (its own metrics)")
		for _, r := range res.Steady.Requests.Requests {
			Expect(r.Write).To(BeFalse(), "a write in steady state besides leader election: %s %s", r.Verb, r.Resource)
		}
	})

	It("reconnects after a restart of the API server in steady state: watches again, writes nothing, changes no pod, does not panic", func(ctx SpecContext) {
		res := smoke(ctx, Config{Pods: 200, KVS: 20, Period: 5 * time.Second, AnomalyRate: 0.1, Steady: 20 * time.Second,
			Timeout: 3 * time.Minute, RestartAPIServer: true})

		r := res.Restart
		Expect(r).NotTo(BeNil())
		Expect(r.Exited).To(BeEmpty(), "the manager kept running")
		Expect(r.LeaseRenewedSeconds).To(BeNumerically(">", 0), "the manager renewed its Lease after the restart")
		Expect(r.Watched).To(ContainElements("pods", "services", "kubervisorservices"), "the audit log shows the manager's watches")
		Expect(r.Resynced).To(Equal(len(r.Watched)), "every watch re-established after the restart")
		Expect(r.Requests.Writes).To(BeZero(), "writes after the restart besides leader election: %v", r.Requests.Requests)
		Expect(r.TrafficChanges).To(BeZero(), "no pod ejected or restored because of the restart")
		Expect(r.Breakers).To(Equal(20), "every breaker evaluated across the restart")
		Expect(r.Panics).To(BeZero(), "no panic in the manager's log")
	})
})

// smoke runs the benchmark with cfg on bin/manager and reports its table.
func smoke(ctx SpecContext, cfg Config) *Result {
	root, err := cluster.RepoRoot()
	Expect(err).NotTo(HaveOccurred())
	_, err = utils.AssetsDir()
	Expect(err).NotTo(HaveOccurred(), "the benchmark starts its cluster from $KUBEBUILDER_ASSETS")
	klog.SetLogger(logr.Discard())
	logf.SetLogger(logr.Discard())
	cfg.Manager, cfg.Log = root+"/bin/manager", GinkgoWriter
	res, err := Run(ctx, cfg)
	if res != nil {
		AddReportEntry(fmt.Sprintf("bench-scale %d/%d, %d shard(s)", cfg.Pods, cfg.KVS, max(1, cfg.Shards)), res.Table())
	}
	Expect(err).NotTo(HaveOccurred())
	return res
}
