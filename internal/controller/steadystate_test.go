package controller_test

import (
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
)

// The manager's requests are counted at its transport (requestLog), not inferred from resourceVersions:
// the API server drops a no-op update without moving the resourceVersion, so an unchanged object proves
// nothing about what was sent (SPEC §9: zero writes in steady state).
var _ = Describe("Steady state", func() {
	It("sends no write and reads no pod live while nothing changes", func() {
		ns := newNamespace()
		fleetOf(ns, 4, true)
		detectors.set(ns, "kvs", "flagger", "p0")
		newKVS(ns, "kvs", "pricer", func(k *kvv1.KubervisorService) {
			k.Spec.DefaultActivator = &kvv1.ActivatorStrategy{Period: ptrIntOrString("1h")}
		}, "quiet", "flagger")

		By("the flagged pod is ejected, then flagged again on every evaluation while it is out")
		Eventually(podLabels(ns, "p0")).Should(HaveKeyWithValue(kvv1.LabelTraffic, kvv1.TrafficNo))
		Eventually(breakerStatus(ns, "kvs", "flagger")).Should(And(
			HaveField("AnomalousPods", []string{"p0"}), HaveField("EjectedPods", []string{"p0"})))
		Eventually(breakerStatus(ns, "kvs", "quiet")).Should(HaveField("LastResult", kvv1.ResultNoData))
		Eventually(condition(ns, "kvs", kvv1.ConditionReady)).Should(HaveField("Status", metav1.ConditionTrue))

		By("once settled, several evaluations of both breakers send nothing")
		mark, _ := expectSilence(ns, "quiet", "flagger")
		Expect(requests.since(mark, ns, isLivePodList)).To(BeEmpty(), "no pod is ejected, so no pod is read live")
	})

	It("sends no request at all while a pod stays Pending (failureThreshold not reached)", func() {
		ns := newNamespace()
		fleetOf(ns, 4, true)
		detectors.set(ns, "kvs", "flagger", "p1")
		newKVS(ns, "kvs", "pricer", func(k *kvv1.KubervisorService) {
			k.Spec.Breakers[0].FailureThreshold = new(int32(100))
		}, "flagger")

		By("the flagged pod is Pending, in traffic")
		Eventually(breakerStatus(ns, "kvs", "flagger")).Should(HaveField("Anomalies", ConsistOf(And(
			HaveField("Pod", "p1"), HaveField("Decision", kvv1.DecisionPending)))))
		Expect(podLabels(ns, "p1")()).To(HaveKeyWithValue(kvv1.LabelTraffic, kvv1.TrafficYes))

		By("once settled, evaluations that keep it Pending send nothing: no write, no live read")
		mark, evaluations := expectSilence(ns, "flagger")
		Expect(requests.since(mark, ns, isLivePodList)).To(BeEmpty())
		Expect(podLabels(ns, "p1")()).To(HaveKeyWithValue(kvv1.LabelTraffic, kvv1.TrafficYes), "still in traffic")
		AddReportEntry("requests while Pending", fmt.Sprintf("%d writes, %d live pod lists over 3s and %d evaluations",
			len(requests.since(mark, ns, isWrite)), len(requests.since(mark, ns, isLivePodList)), evaluations))
	})

	// Zero writes (status, pods, events) while a state that the user was told about lasts: the status and the
	// events say it once, not at every evaluation.
	DescribeTable("sends nothing while a reported state lasts",
		func(flagged []string, failCode int, mutate func(*kvv1.KubervisorService), settled func(ns string) func() bool) {
			ns := newNamespace()
			fleetOf(ns, 4, true)
			detectors.set(ns, "kvs", "b", flagged...)
			if failCode != 0 {
				detectors.failWith(ns, "kvs", "b", failCode)
			}
			newKVS(ns, "kvs", "pricer", mutate)
			Eventually(settled(ns)).Should(BeTrue())
			expectSilence(ns, "b")
		},
		Entry("anomalies withheld by the floor", []string{"p0"}, 0, func(k *kvv1.KubervisorService) {
			k.Spec.Breakers[0].MinPodsAvailableCount = new(int32(4))
		}, func(ns string) func() bool {
			return func() bool { return len(breakerStatus(ns, "kvs", "b")().WithheldPods) == 1 }
		}),
		Entry("a storm", []string{"p0", "p1", "p2"}, 0, nil, func(ns string) func() bool {
			return func() bool { return breakerStatus(ns, "kvs", "b")().LastResult == kvv1.ResultStormSuspected }
		}),
		Entry("a detector failing with the same error", nil, 500, nil, func(ns string) func() bool {
			return func() bool {
				return strings.HasPrefix(breakerStatus(ns, "kvs", "b")().LastResult, kvv1.ResultErrorPrefix)
			}
		}),
	)

	It("sends nothing while a storm's cooldown lasts", func() {
		ns := newNamespace()
		fleetOf(ns, 4, true)
		detectors.set(ns, "kvs", "b", "p0", "p1", "p2")
		newKVS(ns, "kvs", "pricer", func(k *kvv1.KubervisorService) { k.Spec.Breakers[0].StormCooldown = ptrIntOrString("1h") })
		Eventually(breakerStatus(ns, "kvs", "b")).Should(HaveField("LastResult", kvv1.ResultStormSuspected))
		detectors.set(ns, "kvs", "b", "p0")
		Eventually(breakerStatus(ns, "kvs", "b")).Should(And(HaveField("LastStormTime", Not(BeNil())), HaveField("AnomalousPods", []string{"p0"})))
		expectSilence(ns, "b")
		Expect(podLabels(ns, "p0")()).To(HaveKeyWithValue(kvv1.LabelTraffic, kvv1.TrafficYes), "no ejection during the cooldown")
	})
})

// expectSilence waits until the namespace's KubervisorService "kvs" has settled (a whole second without a
// write: at a 200ms period, a write per evaluation never settles), then checks that 3 more seconds, with at
// least 5 evaluations of each named breaker, send no write (status, pods, events). It returns the mark the
// silence was measured from and the evaluations of the first breaker it saw.
func expectSilence(ns string, breakers ...string) (int, int) {
	GinkgoHelper()
	Eventually(func() []string {
		mark := requests.mark()
		time.Sleep(time.Second)
		return requests.since(mark, ns, isWrite)
	}).Should(BeEmpty())
	mark := requests.mark()
	calls := make([]int, len(breakers))
	for i, b := range breakers {
		calls[i] = detectors.callCount(ns, "kvs", b)
	}
	Consistently(func() []string { return requests.since(mark, ns, isWrite) }, 3*time.Second).Should(BeEmpty())
	for i, b := range breakers {
		Expect(detectors.callCount(ns, "kvs", b)-calls[i]).To(BeNumerically(">=", 5), "evaluations of %s went on meanwhile", b)
	}
	return mark, detectors.callCount(ns, "kvs", breakers[0]) - calls[0]
}
