//go:build e2e

package e2e

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
)

// Guards against a detector gone wrong (SPEC §5 step 9), on the real cluster with real PromQL.
var _ = Describe("Guards on a real cluster", func() {
	It("ejects nobody while most of the fleet looks anomalous, then only after the storm's cooldown", func() {
		s := newScenario(8)
		deleteNamespaceLater(s)
		b := s.discrete()
		b.StormCooldown = intOrString("10s")
		s.createKVS(b, nil) // maxAnomalousPercent: its default, 50
		pods := s.pods()

		By("5 of 8 pods answer 80% 5xx: a storm, nobody leaves the EndpointSlice")
		for _, p := range pods[:5] {
			Expect(s.fleet.SetErrorRate(p, 0.8)).To(Succeed())
		}
		Eventually(s.breaker()).WithTimeout(time.Minute).Should(HaveField("LastResult", kvv1.ResultStormSuspected))
		Eventually(s.condition(kvv1.ConditionEjectionAllowed)).Should(And(
			HaveField("Status", metav1.ConditionFalse), HaveField("Reason", kvv1.ReasonStormSuspected)))
		Consistently(s.endpoints).WithTimeout(3 * time.Second).Should(Equal(pods))

		By("3 of them heal: once the share is back under the threshold, the cooldown still holds the breaker")
		for _, p := range pods[2:5] {
			Expect(s.fleet.SetErrorRate(p, 0)).To(Succeed())
		}
		// The 20s query window forgets the healed pods' errors; then 2 of 8 are anomalous.
		Eventually(func() int { return len(s.breaker()().AnomalousPods) }).WithTimeout(time.Minute).Should(Equal(2))
		Expect(s.breaker()().LastResult).To(Equal(kvv1.ResultStormSuspected), "within the cooldown")
		Consistently(s.endpoints).WithTimeout(5 * time.Second).Should(Equal(pods))

		By("the cooldown passes: the two pods still failing are ejected, the healed ones stay")
		Eventually(s.endpoints).WithTimeout(30 * time.Second).Should(Equal(without(pods, pods[0], pods[1])))
		Eventually(s.breaker()).Should(HaveField("LastResult", kvv1.ResultOK))
		Consistently(s.endpoints).WithTimeout(3 * time.Second).Should(Equal(without(pods, pods[0], pods[1])))
	})

	It("keeps a storm's cooldown across a restart of the manager", func() {
		s := newScenario(8)
		deleteNamespaceLater(s)
		b := s.discrete()
		b.StormCooldown = intOrString("30s")
		s.createKVS(b, nil)
		pods := s.pods()

		By("a storm, then 2 of 8 anomalous: the cooldown holds the breaker, lastStormTime is written")
		for _, p := range pods[:5] {
			Expect(s.fleet.SetErrorRate(p, 0.8)).To(Succeed())
		}
		Eventually(s.breaker()).WithTimeout(time.Minute).Should(HaveField("LastResult", kvv1.ResultStormSuspected))
		for _, p := range pods[2:5] {
			Expect(s.fleet.SetErrorRate(p, 0)).To(Succeed())
		}
		Eventually(func() int { return len(s.breaker()().AnomalousPods) }).WithTimeout(time.Minute).Should(Equal(2))
		Eventually(s.breaker()).Should(HaveField("LastStormTime", Not(BeNil())))
		Expect(s.endpoints()).To(Equal(pods))

		By("restarting the manager during the cooldown: the new one ejects nobody before a whole cooldown")
		restartedAt := time.Now()
		Expect(cl.RestartManager()).To(Succeed())
		Consistently(s.endpoints).WithTimeout(20*time.Second).Should(Equal(pods), "no ejection during the cooldown")
		Eventually(s.endpoints).WithTimeout(time.Minute).Should(Equal(without(pods, pods[0], pods[1])))
		took := time.Since(restartedAt)
		AddReportEntry("manager restart during a storm cooldown -> first ejection", took.Round(time.Millisecond).String())
		Expect(took).To(BeNumerically(">=", 30*time.Second), "the cooldown (30s), counted from the restart, held")
	})

	It("reports a query that matches nothing as NoData, or as an error with onNoData: error", func() {
		s := newScenario(4)
		deleteNamespaceLater(s)
		b := s.discrete()
		b.DiscreteValueOutOfList.PromQL = `sum(increase(no_such_metric_total[20s])) by (code, pod)`
		s.createKVS(b, nil)
		Eventually(s.breaker()).Should(HaveField("LastResult", kvv1.ResultNoData))
		Expect(s.condition(kvv1.ConditionReady)()).To(HaveField("Status", metav1.ConditionTrue))

		By("onNoData: error")
		Eventually(func() error {
			k := s.kvs()
			k.Spec.Breakers[0].OnNoData = kvv1.OnNoDataError
			return k8s.Update(ctx, k)
		}).Should(Succeed())
		Eventually(s.condition(kvv1.ConditionReady)).Should(And(
			HaveField("Status", metav1.ConditionFalse), HaveField("Reason", kvv1.ReasonDetectorError),
			HaveField("Message", ContainSubstring("breaker http-errors: Error: the answer holds no sample"))))
		Consistently(s.endpoints).WithTimeout(2 * time.Second).Should(Equal(s.pods()))
	})
})
