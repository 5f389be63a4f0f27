//go:build e2e

package e2e

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/activator"
	"github.com/kubervisor/kubervisor/internal/podstate"
)

// Recovery (SPEC §6) on the real cluster: the back-off a pod that keeps failing goes through.
var _ = Describe("Recovery on a real cluster", func() {
	It("restores a pod that keeps failing after exponential waits with jitter, capped at maxPeriod", func() {
		s := newScenario(4)
		deleteNamespaceLater(s)
		act := &kvv1.ActivatorStrategy{Mode: kvv1.ActivatorModePeriodic, Period: intOrString("2s"), Backoff: kvv1.BackoffExponential,
			MaxPeriod: intOrString("6s"), JitterPercent: new(int32(20))}
		s.createKVS(s.continuous(), func(k *kvv1.KubervisorService) { k.Spec.DefaultActivator = act })
		pods := s.pods()
		faulty := pods[2]
		Expect(s.fleet.SetDeviation(faulty, 4)).To(Succeed())
		uid := s.pod(faulty).UID
		resolved, err := s.kvs().Spec.ActivatorFor("price-deviation")
		Expect(err).NotTo(HaveOccurred())

		// Record every ejection (retry count, break-at) and restoration (restored-at) the pod goes through.
		type cycle struct {
			retry             int32
			breakAt, restored time.Time
		}
		var cycles []cycle
		deadline := time.Now().Add(90 * time.Second)
		for len(cycles) < 4 || cycles[3].restored.IsZero() {
			Expect(time.Now().Before(deadline)).To(BeTrue(), "4 cycles of ejection and restoration within 90s; saw %+v", cycles)
			st := podstate.Of(s.pod(faulty), time.Now())
			switch {
			case st.Traffic == kvv1.TrafficNo && (len(cycles) == 0 || !cycles[len(cycles)-1].breakAt.Equal(st.BreakAt)):
				cycles = append(cycles, cycle{retry: st.RetryCount, breakAt: st.BreakAt})
			case st.Traffic == kvv1.TrafficYes && len(cycles) > 0 && cycles[len(cycles)-1].restored.IsZero() && st.RestoredAt.After(cycles[len(cycles)-1].breakAt):
				cycles[len(cycles)-1].restored = st.RestoredAt
			}
			time.Sleep(20 * time.Millisecond)
		}

		for i, c := range cycles[:4] {
			want := activator.Wait(resolved, c.retry, uid)
			got := c.restored.Sub(c.breakAt)
			GinkgoWriter.Printf("retry %d: out %s, the schedule says %s\n", c.retry, got.Round(time.Millisecond), want.Round(time.Millisecond))
			Expect(c.retry).To(Equal(int32(i+1)), "each re-ejection counts one more retry")
			// The exact jittered wait, plus the activator's reaction time.
			Expect(got).To(And(BeNumerically(">=", want), BeNumerically("<", want+time.Second)))
			// Within the jitter bound around the exponential back-off, and never over the cap.
			nominal := min(2*time.Second<<(c.retry-1), 6*time.Second)
			Expect(want).To(And(BeNumerically(">=", time.Duration(float64(nominal)*0.8)), BeNumerically("<=", min(time.Duration(float64(2*time.Second<<(c.retry-1))*1.2), 6*time.Second))))
		}
		Expect(s.fleet.Heal(faulty)).To(Succeed())
	})
})
