package controller_test

import (
	"context"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/podstate"
)

// The readinessGate mode against the real API server: the condition written through pods/status by a
// strategic merge patch computed from the trimmed cache, leaving every other condition as it was.
var _ = Describe("Readiness-gate mode", func() {
	ctx := context.Background()

	gatedPod := func(ns, name string) {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": "web"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:1"}},
				ReadinessGates: []corev1.PodReadinessGate{{ConditionType: kvv1.ConditionInTraffic}}},
		}
		Expect(k8sClient.Create(ctx, pod)).To(Succeed())
		// The kubelet's conditions; the manager may set the gate meanwhile (a conflict: read again).
		Eventually(func() error {
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(pod), pod)).To(Succeed())
			now := metav1.Now()
			pod.Status.Phase = corev1.PodRunning
			conds := []corev1.PodCondition{
				{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
				{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
				{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
				{Type: corev1.PodReady, Status: corev1.ConditionFalse, LastTransitionTime: now},
			}
			for _, c := range pod.Status.Conditions {
				if c.Type == kvv1.ConditionInTraffic {
					conds = append(conds, c)
				}
			}
			pod.Status.Conditions = conds
			return k8sClient.Status().Update(ctx, pod)
		}).Should(Succeed())
	}
	conditions := func(ns, name string) func() map[corev1.PodConditionType]corev1.ConditionStatus {
		return func() map[corev1.PodConditionType]corev1.ConditionStatus {
			out := map[corev1.PodConditionType]corev1.ConditionStatus{}
			for _, c := range getPod(ns, name).Status.Conditions {
				out[c.Type] = c.Status
			}
			return out
		}
	}

	It("sets the gate True at adoption, False on ejection naming the breaker, True again on deletion; other conditions untouched", func() {
		ns := newNamespace()
		newService(ns, "web", map[string]string{"app": "web"}) // no traffic key: the gate needs none
		for _, p := range []string{"a", "b", "c"} {
			gatedPod(ns, p)
		}
		plain := newPod(ns, "plain", map[string]string{"app": "web"}, true)
		newKVS(ns, "kvs", "web", func(k *kvv1.KubervisorService) { k.Spec.TrafficControl = kvv1.TrafficControlReadinessGate })

		Eventually(conditions(ns, "a")).Should(HaveKeyWithValue(corev1.PodConditionType(kvv1.ConditionInTraffic), corev1.ConditionTrue))
		Eventually(condition(ns, "kvs", kvv1.ConditionReadinessGateMissing)).Should(And(
			HaveField("Status", metav1.ConditionTrue), HaveField("Message", ContainSubstring("plain"))))

		By("the detector names b and the gateless pod: b's gate goes False, the gateless pod stays")
		detectors.set(ns, "kvs", "b", "b", "plain")
		Eventually(conditions(ns, "b")).Should(HaveKeyWithValue(corev1.PodConditionType(kvv1.ConditionInTraffic), corev1.ConditionFalse))
		Expect(conditions(ns, "b")()).To(And(
			HaveKeyWithValue(corev1.PodScheduled, corev1.ConditionTrue), HaveKeyWithValue(corev1.PodInitialized, corev1.ConditionTrue),
			HaveKeyWithValue(corev1.ContainersReady, corev1.ConditionTrue)), "the patch carries one condition, not the cache's trimmed list")
		for _, c := range getPod(ns, "b").Status.Conditions {
			if c.Type == kvv1.ConditionInTraffic {
				Expect(c.Message).To(ContainSubstring("breaker b"))
			}
		}
		Consistently(podLabels(ns, plain.Name)).Should(HaveKeyWithValue(kvv1.LabelTraffic, kvv1.TrafficYes))
		Expect(podstate.GateStatus(getPod(ns, "plain"))).To(BeEmpty(), "a pod without the gate gets no condition")

		By("deleting the KubervisorService: every gate True")
		detectors.set(ns, "kvs", "b")
		Expect(k8sClient.Delete(ctx, getKVS(ns, "kvs"))).To(Succeed())
		Eventually(conditions(ns, "b")).Should(HaveKeyWithValue(corev1.PodConditionType(kvv1.ConditionInTraffic), corev1.ConditionTrue))
		Eventually(podLabels(ns, "b")).Should(HaveKeyWithValue(kvv1.LabelTraffic, kvv1.TrafficYes))
		Eventually(func() error {
			return k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "kvs"}, &kvv1.KubervisorService{})
		}).
			ShouldNot(Succeed())
	})
})
