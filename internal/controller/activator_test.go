package controller_test

import (
	"context"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/podstate"
)

// eject marks a pod as ejected by breaker b, as the breaker would: the activator tests set the annotations
// themselves so that they do not depend on a detector.
func eject(ns, name string, retryCount string, breakAt time.Time) {
	ctx := context.Background()
	Eventually(func() error {
		pod := getPod(ns, name)
		base := pod.DeepCopy()
		pod.Labels[kvv1.LabelTraffic] = kvv1.TrafficNo
		pod.Labels[kvv1.LabelStrategy] = "b"
		if pod.Annotations == nil {
			pod.Annotations = map[string]string{}
		}
		pod.Annotations[kvv1.AnnotationBreakAt] = breakAt.UTC().Format(time.RFC3339Nano)
		pod.Annotations[kvv1.AnnotationRetryCount] = retryCount
		return k8sClient.Patch(ctx, pod, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}))
	}).Should(Succeed())
}

func podGone(ns, name string) func() bool {
	return func() bool {
		return apierrors.IsNotFound(k8sClient.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &corev1.Pod{}))
	}
}

func activatorKVS(ns string, a kvv1.ActivatorStrategy, mutate func(*kvv1.KubervisorService)) {
	newKVS(ns, "kvs", "pricer", func(k *kvv1.KubervisorService) {
		k.Spec.DefaultActivator = &a
		if mutate != nil {
			mutate(k)
		}
	})
	Eventually(podCounts(ns, "kvs")).Should(HaveField("Managed", Not(BeZero())))
}

var _ = Describe("Activator", func() {
	var ns string
	BeforeEach(func() { ns = newNamespace() })

	// The schedule itself (waits, back-off, pause slots, refusals) is table-tested in reconciler_test.go and
	// internal/activator; these specs prove each behaviour once against a real API server.

	It("pauses a pod while a pause slot is free, then kills the next through the Eviction API", func() {
		fleetOf(ns, 4, true)
		activatorKVS(ns, kvv1.ActivatorStrategy{Mode: kvv1.ActivatorModeRetryAndPause, Period: ptrIntOrString("1s"),
			MaxRetryCount: new(int32(1)), MaxPauseCount: new(int32(1))}, nil)
		eject(ns, "p0", "2", time.Now())
		Eventually(podLabels(ns, "p0")).Should(HaveKeyWithValue(kvv1.LabelTraffic, kvv1.TrafficPause))
		Eventually(eventsFor(ns, "p0")).Should(ContainElement(HavePrefix("Normal/Paused: Pod p0 paused")))

		eject(ns, "p1", "2", time.Now())
		Eventually(podGone(ns, "p1")).Should(BeTrue())
		Eventually(eventsFor(ns, "kvs")).Should(ContainElement(MatchRegexp(`Normal/Killed: Pod p1 evicted: retry 2 exceeds maxRetryCount 1 \(retryAndPause\)`)))
		Expect(podLabels(ns, "p0")()).To(HaveKeyWithValue(kvv1.LabelTraffic, kvv1.TrafficPause), "paused pods are never touched again")
		Eventually(podCounts(ns, "kvs")).Should(Equal(kvv1.PodCounts{Managed: 3, Ready: 3, InTraffic: 2, Paused: 1}))
	})

	It("restores but never kills in dry run or while the selector lacks the traffic key, and kills once they end", func() {
		fleetOf(ns, 3, false)
		activatorKVS(ns, kvv1.ActivatorStrategy{Mode: kvv1.ActivatorModeRetryAndKill, Period: ptrIntOrString("1s"), MaxRetryCount: new(int32(0))},
			func(k *kvv1.KubervisorService) { k.Spec.DryRun = true })
		eject(ns, "p0", "1", time.Now())
		Eventually(podLabels(ns, "p0")).Should(HaveKeyWithValue(kvv1.LabelTraffic, kvv1.TrafficYes))
		Eventually(eventsFor(ns, "p0")).Should(ContainElement(ContainSubstring("restored instead, never paused or killed: dry run")))

		By("dry run ends; the selector still lacks the traffic key")
		editKVS(ns, "kvs", func(k *kvv1.KubervisorService) { k.Spec.DryRun = false })
		eject(ns, "p1", "1", time.Now())
		Eventually(podLabels(ns, "p1")).Should(HaveKeyWithValue(kvv1.LabelTraffic, kvv1.TrafficYes))
		Expect(podGone(ns, "p1")()).To(BeFalse())

		By("the selector gets the traffic key: the activator punishes again")
		setSelector(ns, "pricer", map[string]string{"app": "pricer", kvv1.LabelTraffic: kvv1.TrafficYes})
		eject(ns, "p2", "1", time.Now())
		Eventually(podGone(ns, "p2")).Should(BeTrue())
	})

	It("gives a pod set to no by hand a safe default and an event, and brings it back", func() {
		fleetOf(ns, 2, true)
		activatorKVS(ns, kvv1.ActivatorStrategy{Mode: kvv1.ActivatorModeRetryAndKill, Period: ptrIntOrString("1s"), MaxRetryCount: new(int32(3))}, nil)
		patchLabels(getPod(ns, "p1"), map[string]string{kvv1.LabelTraffic: kvv1.TrafficNo})
		Eventually(eventsFor(ns, "p1")).Should(ContainElement(ContainSubstring("treating the pod as just ejected with retry count 1")))
		Eventually(podLabels(ns, "p1")).Should(HaveKeyWithValue(kvv1.LabelTraffic, kvv1.TrafficYes))
		Expect(podstate.Of(getPod(ns, "p1"), time.Now()).RetryCount).To(Equal(int32(1)))

		By("a retry count that is not a number")
		eject(ns, "p0", "abc", time.Now())
		Eventually(eventsFor(ns, "p0")).Should(ContainElement(ContainSubstring(`kubervisor/retry-count "abc" is not a number`)))
		Eventually(podLabels(ns, "p0")).Should(HaveKeyWithValue(kvv1.LabelTraffic, kvv1.TrafficYes))
	})
})
