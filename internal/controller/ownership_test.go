package controller_test

import (
	"context"
	"net"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
)

var _ = Describe("Pod ownership and status", func() {
	var ns string
	app := map[string]string{"app": "pricer"}
	controlled := map[string]string{"app": "pricer", kvv1.LabelTraffic: kvv1.TrafficYes}
	ctx := context.Background()

	BeforeEach(func() { ns = newNamespace() })

	It("labels every selected pod, keeps no and pause, and leaves other pods alone", func() {
		newService(ns, "pricer", controlled)
		newPod(ns, "a", map[string]string{"app": "pricer"}, true)
		newPod(ns, "b", map[string]string{"app": "pricer", kvv1.LabelTraffic: kvv1.TrafficNo}, true)
		newPod(ns, "c", map[string]string{"app": "pricer", kvv1.LabelTraffic: kvv1.TrafficPause}, true)
		newPod(ns, "other", map[string]string{"app": "other"}, true)
		newKVS(ns, "kvs", "pricer", nil)

		Eventually(podLabels(ns, "a")).Should(And(HaveKeyWithValue(kvv1.LabelName, "kvs"), HaveKeyWithValue(kvv1.LabelTraffic, kvv1.TrafficYes)))
		Eventually(podLabels(ns, "b")).Should(And(HaveKeyWithValue(kvv1.LabelName, "kvs"), HaveKeyWithValue(kvv1.LabelTraffic, kvv1.TrafficNo)))
		Eventually(podLabels(ns, "c")).Should(And(HaveKeyWithValue(kvv1.LabelName, "kvs"), HaveKeyWithValue(kvv1.LabelTraffic, kvv1.TrafficPause)))
		Consistently(podLabels(ns, "other")).ShouldNot(HaveKey(kvv1.LabelName))

		By("a pod created later is adopted by the Pod reconciler")
		newPod(ns, "d", map[string]string{"app": "pricer"}, true)
		Eventually(podLabels(ns, "d")).Should(HaveKeyWithValue(kvv1.LabelName, "kvs"))

		Eventually(podCounts(ns, "kvs")).Should(Equal(kvv1.PodCounts{Managed: 4, Ready: 4, InTraffic: 2, Ejected: 1, Paused: 1}))
		Eventually(condition(ns, "kvs", kvv1.ConditionReady)).Should(HaveField("Status", metav1.ConditionTrue))
		Eventually(condition(ns, "kvs", kvv1.ConditionTrafficControlled)).Should(HaveField("Status", metav1.ConditionTrue))
		Eventually(condition(ns, "kvs", kvv1.ConditionServiceFound)).Should(HaveField("Status", metav1.ConditionTrue))
		Eventually(condition(ns, "kvs", kvv1.ConditionConflict)).Should(HaveField("Status", metav1.ConditionFalse))
		Eventually(func() int64 { return getKVS(ns, "kvs").Status.ObservedGeneration }).Should(Equal(int64(1)))
	})

	It("strips Kubervisor's labels and annotations from pods that leave the selector, restoring no to yes", func() {
		newService(ns, "pricer", controlled)
		newPod(ns, "a", map[string]string{"app": "pricer"}, true)
		newPod(ns, "b", map[string]string{"app": "pricer", kvv1.LabelTraffic: kvv1.TrafficNo}, true)
		newKVS(ns, "kvs", "pricer", nil)
		Eventually(podLabels(ns, "b")).Should(HaveKeyWithValue(kvv1.LabelName, "kvs"))
		b := getPod(ns, "b")
		patchLabels(b, map[string]string{kvv1.LabelStrategy: "b"})

		By("pod b is relabelled out of the selector")
		patchLabels(b, map[string]string{"app": "moved"})
		Eventually(podLabels(ns, "b")).Should(And(Not(HaveKey(kvv1.LabelName)), Not(HaveKey(kvv1.LabelStrategy)),
			HaveKeyWithValue(kvv1.LabelTraffic, kvv1.TrafficYes)))
		Consistently(podLabels(ns, "a")).Should(HaveKeyWithValue(kvv1.LabelName, "kvs"))

		By("the selector changes so that pod a leaves too")
		setSelector(ns, "pricer", map[string]string{"app": "nothing", kvv1.LabelTraffic: kvv1.TrafficYes})
		Eventually(podLabels(ns, "a")).ShouldNot(HaveKey(kvv1.LabelName))
		Eventually(podCounts(ns, "kvs")).Should(Equal(kvv1.PodCounts{}))
	})

	It("counts and conditions follow readiness, traffic labels and the selector", func() {
		newService(ns, "pricer", app)
		newPod(ns, "a", map[string]string{"app": "pricer"}, true)
		newPod(ns, "b", map[string]string{"app": "pricer"}, false)
		newKVS(ns, "kvs", "pricer", nil)
		Eventually(podCounts(ns, "kvs")).Should(Equal(kvv1.PodCounts{Managed: 2, Ready: 1, InTraffic: 1}))
		Eventually(condition(ns, "kvs", kvv1.ConditionTrafficControlled)).Should(And(
			HaveField("Status", metav1.ConditionFalse), HaveField("Reason", kvv1.ReasonSelectorNoTraffic)))

		setReady(getPod(ns, "b"), true)
		Eventually(podCounts(ns, "kvs")).Should(Equal(kvv1.PodCounts{Managed: 2, Ready: 2, InTraffic: 2}))
		patchLabels(getPod(ns, "a"), map[string]string{kvv1.LabelTraffic: kvv1.TrafficPause})
		Eventually(podCounts(ns, "kvs")).Should(Equal(kvv1.PodCounts{Managed: 2, Ready: 2, InTraffic: 1, Paused: 1}))
		patchLabels(getPod(ns, "a"), map[string]string{kvv1.LabelTraffic: "maybe"})
		Eventually(podCounts(ns, "kvs")).Should(Equal(kvv1.PodCounts{Managed: 2, Ready: 2, InTraffic: 1, Unknown: 1}))

		setSelector(ns, "pricer", controlled)
		Eventually(condition(ns, "kvs", kvv1.ConditionTrafficControlled)).Should(And(
			HaveField("Status", metav1.ConditionTrue), HaveField("Reason", kvv1.ReasonSelectorHasTraffic)))
	})

	It("releases pods when the Service is deleted and adopts them again when it is re-created", func() {
		svc := newService(ns, "pricer", controlled)
		newPod(ns, "a", map[string]string{"app": "pricer"}, true)
		newPod(ns, "b", map[string]string{"app": "pricer", kvv1.LabelTraffic: kvv1.TrafficNo}, true)
		newKVS(ns, "kvs", "pricer", nil)
		Eventually(podCounts(ns, "kvs")).Should(HaveField("Managed", int32(2)))

		Expect(k8sClient.Delete(ctx, svc)).To(Succeed())
		Eventually(condition(ns, "kvs", kvv1.ConditionServiceFound)).Should(And(
			HaveField("Status", metav1.ConditionFalse), HaveField("Reason", kvv1.ReasonServiceNotFound)))
		Eventually(condition(ns, "kvs", kvv1.ConditionReady)).Should(HaveField("Status", metav1.ConditionFalse))
		Eventually(podLabels(ns, "a")).ShouldNot(HaveKey(kvv1.LabelName))
		Eventually(podLabels(ns, "b")).Should(And(Not(HaveKey(kvv1.LabelName)), HaveKeyWithValue(kvv1.LabelTraffic, kvv1.TrafficYes)))
		Eventually(podCounts(ns, "kvs")).Should(Equal(kvv1.PodCounts{}))

		newService(ns, "pricer", controlled)
		Eventually(podLabels(ns, "a")).Should(HaveKeyWithValue(kvv1.LabelName, "kvs"))
		Eventually(podLabels(ns, "b")).Should(HaveKeyWithValue(kvv1.LabelName, "kvs"))
		Eventually(condition(ns, "kvs", kvv1.ConditionReady)).Should(HaveField("Status", metav1.ConditionTrue))
		Eventually(podCounts(ns, "kvs")).Should(Equal(kvv1.PodCounts{Managed: 2, Ready: 2, InTraffic: 2}))
	})

	It("reports a Conflict when two KubervisorServices name one Service, and the oldest keeps the pods", func() {
		newService(ns, "pricer", controlled)
		newPod(ns, "a", map[string]string{"app": "pricer"}, true)
		newKVS(ns, "first", "pricer", nil)
		Eventually(podLabels(ns, "a")).Should(HaveKeyWithValue(kvv1.LabelName, "first"))
		newKVS(ns, "second", "pricer", nil)

		Eventually(condition(ns, "second", kvv1.ConditionConflict)).Should(And(
			HaveField("Status", metav1.ConditionTrue), HaveField("Reason", kvv1.ReasonServiceClaimed),
			HaveField("Message", ContainSubstring("first"))))
		Eventually(condition(ns, "first", kvv1.ConditionConflict)).Should(HaveField("Status", metav1.ConditionTrue))
		Eventually(condition(ns, "second", kvv1.ConditionReady)).Should(HaveField("Status", metav1.ConditionFalse))
		Consistently(podLabels(ns, "a")).Should(HaveKeyWithValue(kvv1.LabelName, "first"))
		Expect(detectors.callCount(ns, "second", "b")).To(BeZero(), "the KubervisorService that lost the Service must not evaluate")

		By("a Service whose selector overlaps another's pods is a conflict too")
		newService(ns, "overlap", map[string]string{"app": "pricer", kvv1.LabelTraffic: kvv1.TrafficYes})
		newKVS(ns, "third", "overlap", nil)
		Eventually(condition(ns, "third", kvv1.ConditionConflict)).Should(And(
			HaveField("Status", metav1.ConditionTrue), HaveField("Reason", kvv1.ReasonPodsClaimed)))
		Consistently(podLabels(ns, "a")).Should(HaveKeyWithValue(kvv1.LabelName, "first"))

		By("deleting the oldest hands the pods to the next one")
		Expect(k8sClient.Delete(ctx, getKVS(ns, "first"))).To(Succeed())
		Eventually(podLabels(ns, "a")).Should(HaveKeyWithValue(kvv1.LabelName, "second"))
		Eventually(condition(ns, "second", kvv1.ConditionConflict)).Should(HaveField("Status", metav1.ConditionFalse))
	})

	It("restores no pods, keeps pause pods and removes ownership when the KubervisorService is deleted", func() {
		newService(ns, "pricer", controlled)
		newPod(ns, "a", map[string]string{"app": "pricer"}, true)
		newPod(ns, "b", map[string]string{"app": "pricer", kvv1.LabelTraffic: kvv1.TrafficNo}, true)
		newPod(ns, "c", map[string]string{"app": "pricer", kvv1.LabelTraffic: kvv1.TrafficPause}, true)
		kvs := newKVS(ns, "kvs", "pricer", nil)
		Eventually(podCounts(ns, "kvs")).Should(HaveField("Managed", int32(3)))
		Eventually(func() []string { return getKVS(ns, "kvs").Finalizers }).Should(ContainElement(kvv1.Finalizer))
		b := getPod(ns, "b")
		base := b.DeepCopy()
		b.Annotations = map[string]string{kvv1.AnnotationBreakAt: "2026-01-01T00:00:00Z", kvv1.AnnotationRetryCount: "2", "user": "kept"}
		Expect(k8sClient.Patch(ctx, b, client.MergeFrom(base))).To(Succeed())

		Expect(k8sClient.Delete(ctx, kvs)).To(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(kvs), &kvv1.KubervisorService{}))
		}).Should(BeTrue())
		for _, name := range []string{"a", "b", "c"} {
			Expect(podLabels(ns, name)()).NotTo(HaveKey(kvv1.LabelName), name)
		}
		Expect(podLabels(ns, "a")()).To(HaveKeyWithValue(kvv1.LabelTraffic, kvv1.TrafficYes))
		Expect(podLabels(ns, "b")()).To(HaveKeyWithValue(kvv1.LabelTraffic, kvv1.TrafficYes))
		Expect(podLabels(ns, "c")()).To(HaveKeyWithValue(kvv1.LabelTraffic, kvv1.TrafficPause))
		Expect(getPod(ns, "b").Annotations).To(Equal(map[string]string{"user": "kept"}))
		Consistently(podLabels(ns, "a")).ShouldNot(HaveKey(kvv1.LabelName))
	})
})

// --- small helpers shared by the suite --------------------------------------------------------------------

func ptrIntOrString(s string) *intstr.IntOrString {
	v := intstr.FromString(s)
	return &v
}

func ctrlConfigSkipNameValidation() config.Controller {
	return config.Controller{SkipNameValidation: new(true)}
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port
}
