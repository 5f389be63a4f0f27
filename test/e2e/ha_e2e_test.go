//go:build e2e

package e2e

import (
	"fmt"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/test/cluster"
)

// Highly available by default (issue 26): two managers on one Lease, the leader SIGKILLed mid-incident.
var _ = Describe("A standby manager", func() {
	It("takes over within the lease duration when the leader is SIGKILLed mid-incident: the floor held throughout, no pod ejected twice, none restored late", func() {
		s := newScenario(6)
		deleteNamespaceLater(s)
		pods := s.pods()
		d := newTestDetector()
		d.flag(pods[0])
		b := d.breaker("custom", "1s")
		b.MinPodsAvailableCount = new(int32(4))
		s.createKVS(b, func(k *kvv1.KubervisorService) {
			k.Spec.DefaultActivator = &kvv1.ActivatorStrategy{Mode: kvv1.ActivatorModePeriodic, Period: intOrString("40s")}
		})
		Eventually(s.endpoints).Should(Equal(without(pods, pods[0])))
		breakAt := s.state(pods[0]).BreakAt

		By("a standby: the same binary and Lease, its own ports")
		leader := cl.Manager()
		standby, err := cluster.StartProcess("standby", filepath.Join(root, "bin", "manager"),
			append(managerArgs(), "--kubeconfig="+cl.ManagerKubeconfigPath()), filepath.Join(cl.WorkDir(), "standby.log"),
			[]string{"KUBECONFIG=" + cl.ManagerKubeconfigPath()})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() {
			// The standby leads now: stop it (it releases the Lease) and start the suite's manager again.
			Expect(standby.Stop(10 * time.Second)).To(Succeed())
			Expect(cl.RestartManager()).To(Succeed())
		})
		Consistently(holder).WithTimeout(3*time.Second).Should(Equal(holder()), "the standby waits")
		before := holder()

		h := recordHistory(s)
		By("the leader is SIGKILLed while the detector flags a second pod (and no longer the first, out of traffic)")
		d.flag(pods[1])
		killed := time.Now()
		Expect(leader.Kill()).To(Succeed())
		Eventually(holder).WithTimeout(40 * time.Second).ShouldNot(Equal(before))
		tookOver := time.Since(killed)
		Eventually(s.traffic(pods[1])).WithTimeout(20 * time.Second).Should(Equal(kvv1.TrafficNo))
		ejectedAt := time.Since(killed)
		Eventually(s.endpoints).Should(Not(ContainElement(pods[1])))

		By("pods[0], due back 40s after its ejection, is restored on time or at the takeover")
		due := breakAt.Add(40 * time.Second)
		Eventually(s.traffic(pods[0])).WithTimeout(time.Until(due) + 30*time.Second).Should(Equal(kvv1.TrafficYes))
		h.stop()
		var restoredAt time.Time
		h.eachRestore(killed.Add(-time.Minute), []string{pods[0]}, func(at time.Time, _ string, _ map[string]*corev1.Pod) {
			if restoredAt.IsZero() {
				restoredAt = at
			}
		})
		Expect(restoredAt).NotTo(BeZero())
		expected := due
		if takeover := killed.Add(tookOver); takeover.After(due) {
			expected = takeover
		}
		late := restoredAt.Sub(expected)
		AddReportEntry("failover", fmt.Sprintf("leader SIGKILLed: standby leads %s later (lease 15s), ejects the pod flagged meanwhile %s after the kill; "+
			"pod due back at %s restored %s after the later of its due time and the takeover", tookOver.Round(time.Millisecond), ejectedAt.Round(time.Millisecond),
			due.Format(time.TimeOnly), late.Round(time.Millisecond)))
		Expect(tookOver).To(BeNumerically("<", 30*time.Second), "within the lease duration and a retry")
		Expect(late).To(BeNumerically("<", 5*time.Second), "restored at its due time, or at once after the takeover")

		fewest, at, who, _ := h.fewestReady(killed.Add(-time.Second), time.Now())
		Expect(fewest).To(BeNumerically(">=", 4), "the floor of 4 held at every moment (fewest at %s: %v)", at.Format(time.TimeOnly), who)
		for _, p := range pods {
			Expect(s.state(p).RetryCount).To(BeNumerically("<=", 1), "pod %s ejected twice", p)
		}
	})
})

// holder is who holds the manager's leader-election Lease.
func holder() string {
	l := &coordinationv1.Lease{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: cluster.ManagerNamespace, Name: "kubervisor.breaker.kubervisor.io"}, l); err != nil {
		return "<" + err.Error() + ">"
	}
	if l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}
