package controller_test

import (
	"context"
	"maps"
	"strconv"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/podstate"
)

// Recovery (SPEC §6) and manual control (§10) against the real API server and the real manager.
var _ = Describe("Recovery and manual control", func() {
	ctx := context.Background()
	controlled := map[string]string{"app": "pricer", kvv1.LabelTraffic: kvv1.TrafficYes}
	var ns string

	fleet := func(n int) {
		newService(ns, "pricer", controlled)
		for i := range n {
			newPod(ns, "p"+strconv.Itoa(i), map[string]string{"app": "pricer"}, true)
		}
	}
	annotate := func(name string, set map[string]string) {
		Eventually(func() error {
			p := getPod(ns, name)
			base := p.DeepCopy()
			if p.Annotations == nil {
				p.Annotations = map[string]string{}
			}
			maps.Copy(p.Annotations, set)
			return k8sClient.Patch(ctx, p, client.MergeFrom(base))
		}).Should(Succeed())
	}
	annotations := func(name string) func() map[string]string {
		return func() map[string]string { return getPod(ns, name).Annotations }
	}
	request := func(pod, kind string, extra map[string]string) string {
		at := podstate.FormatTime(time.Now())
		set := map[string]string{kvv1.AnnotationRequest: kind, kvv1.AnnotationRequestBy: "alice", kvv1.AnnotationRequestAt: at,
			kvv1.AnnotationRequestReason: "canary"}
		maps.Copy(set, extra)
		annotate(pod, set)
		return at
	}

	BeforeEach(func() { ns = newNamespace() })

	It("carries out manual requests: within the floor, refused at the floor, forced, for a while, and a restore of a paused pod", func() {
		fleet(3)
		newKVS(ns, "kvs", "pricer", func(k *kvv1.KubervisorService) { k.Spec.Breakers[0].MinPodsAvailableCount = new(int32(2)) })
		for _, p := range []string{"p0", "p1", "p2"} {
			Eventually(podLabels(ns, p)).Should(HaveKeyWithValue(kvv1.LabelName, "kvs"))
		}

		By("eject p0 within the floor, for 3s")
		at := request("p0", kvv1.RequestEject, map[string]string{kvv1.AnnotationRequestFor: "3s"})
		Eventually(annotations("p0")).Should(HaveKeyWithValue(kvv1.AnnotationRequestOutcome, HavePrefix(at+" Done: out of traffic until ")))
		Expect(podLabels(ns, "p0")()).To(HaveKeyWithValue(kvv1.LabelTraffic, kvv1.TrafficNo))
		Expect(annotations("p0")()).To(And(HaveKeyWithValue(kvv1.AnnotationManualBy, "alice"), Not(HaveKey(kvv1.AnnotationRequest))))
		Eventually(func() []kvv1.ManualHold { return getKVS(ns, "kvs").Status.Manual }).Should(ConsistOf(
			And(HaveField("Pod", "p0"), HaveField("By", "alice"), HaveField("Reason", "canary"), HaveField("Until", Not(BeNil())))))

		By("eject p1 at the floor: refused")
		at = request("p1", kvv1.RequestEject, nil)
		Eventually(annotations("p1")).Should(HaveKeyWithValue(kvv1.AnnotationRequestOutcome, HavePrefix(at+" Refused: the floor keeps 2 pods")))
		Expect(podLabels(ns, "p1")()).To(HaveKeyWithValue(kvv1.LabelTraffic, kvv1.TrafficYes))

		By("the 3s pass: p0 is back by itself")
		Eventually(podLabels(ns, "p0")).WithTimeout(10 * time.Second).Should(HaveKeyWithValue(kvv1.LabelTraffic, kvv1.TrafficYes))
		Eventually(func() []kvv1.ManualHold { return getKVS(ns, "kvs").Status.Manual }).Should(BeEmpty())

		By("eject p1 with --force, until restored; a manager restart keeps the hold")
		request("p1", kvv1.RequestEject, map[string]string{kvv1.AnnotationRequestForce: "true"})
		Eventually(podLabels(ns, "p1")).Should(HaveKeyWithValue(kvv1.LabelTraffic, kvv1.TrafficNo))
		restartManager()
		Consistently(podLabels(ns, "p1")).WithTimeout(2 * time.Second).Should(HaveKeyWithValue(kvv1.LabelTraffic, kvv1.TrafficNo))
		Expect(getKVS(ns, "kvs").Status.Manual).To(ConsistOf(HaveField("Pod", "p1")))

		By("restore p1 by hand; restore a paused p2 by hand")
		request("p1", kvv1.RequestRestore, nil)
		Eventually(podLabels(ns, "p1")).Should(HaveKeyWithValue(kvv1.LabelTraffic, kvv1.TrafficYes))
		patchLabels(&corev1.Pod{ObjectMeta: getPod(ns, "p2").ObjectMeta}, map[string]string{kvv1.LabelTraffic: kvv1.TrafficPause})
		at = request("p2", kvv1.RequestRestore, nil)
		Eventually(annotations("p2")).Should(HaveKeyWithValue(kvv1.AnnotationRequestOutcome, at+" Done: back in traffic (it was pause)"))
		Expect(podLabels(ns, "p2")()).To(HaveKeyWithValue(kvv1.LabelTraffic, kvv1.TrafficYes))
	})
})
