//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/podstate"
	"github.com/kubervisor/kubervisor/test/fleet"
)

// startedGate is a readiness gate of the pods of newGatedScenario: a pod is Ready only once the test sets this
// condition True (startPods), as a real pod is Ready only once its application started. It lets a spec hold the
// replacements of deleted pods NotReady, which the fake kubelet would otherwise make Ready within milliseconds.
const startedGate = "e2e.kubervisor.io/started"

// Never make an incident worse (SPEC §5 steps 12–14, issue 23), on the real cluster: the floor is restored,
// not only respected; ejected pods leave first in a rollout; ejections need sustained evidence; new pods warm up.
var _ = Describe("Fail-open, sustained evidence and warm-up on a real cluster", func() {
	It("keeps at least 4 ready endpoints through a rollout (maxSurge 1, maxUnavailable 1) of 6 pods with 2 ejected: the ejected pods leave first", func() {
		s := newGatedScenario(6)
		pods := s.pods()
		ejected := []string{pods[0], pods[3]}
		s.patchDeployment(func(d *appsv1.Deployment) {
			d.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{MaxSurge: new(intstr.FromInt32(1)), MaxUnavailable: new(intstr.FromInt32(1))}}
		})

		By("the detector flags 2 pods: they are ejected (floor 4), then it stops flagging them")
		d := newTestDetector()
		d.flag(ejected...)
		b := d.breaker("custom", "1s")
		b.MinPodsAvailableCount = new(int32(4))
		s.createKVS(b, func(k *kvv1.KubervisorService) { k.Spec.DefaultActivator = periodic10m() })
		Eventually(s.endpoints).Should(Equal(without(pods, ejected...)))
		for _, p := range ejected {
			Eventually(func() map[string]string { return s.pod(p).Annotations }).Should(
				HaveKeyWithValue(kvv1.AnnotationDeletionCost, kvv1.DeletionCostOutOfTraffic), "pod %s, out of traffic, is the cheapest to delete", p)
		}
		for _, p := range without(pods, ejected...) {
			Expect(s.pod(p).Annotations).NotTo(HaveKey(kvv1.AnnotationDeletionCost), "serving pod %s", p)
		}
		d.flag()
		Eventually(s.breaker()).Should(HaveField("AnomalousPods", BeEmpty()))

		h := recordHistory(s)
		By("a rollout: a new pod template; each new pod takes 1s to start")
		// NOTE: the fake kubelet makes a pod Ready within milliseconds; a real pod takes a while to start, and
		// that is when a rollout that removed a serving pod first runs under the floor.
		s.startPodsAfter(time.Second)
		started := time.Now()
		s.patchDeployment(func(d *appsv1.Deployment) {
			d.Spec.Template.Annotations = map[string]string{"e2e.kubervisor.io/revision": "2"}
		})
		Eventually(s.rolledOut(pods)).WithTimeout(90 * time.Second).WithPolling(100 * time.Millisecond).Should(Succeed())
		Eventually(s.endpoints).Should(Equal(s.pods()))
		Eventually(s.endpoints).Should(HaveLen(6))
		took := time.Since(started)
		Consistently(s.endpoints).WithTimeout(2 * time.Second).Should(HaveLen(6))
		ended := time.Now()
		h.stop()

		fewest, at, who, versions := h.fewestReady(started, ended)
		order := h.goneOrder(pods, started)
		restored := floorRestorations(s)
		when := "before the rollout, still in effect when it started"
		if at.After(started) {
			when = at.Sub(started).Round(time.Millisecond).String() + " into the rollout"
		}
		summary := fmt.Sprintf("rollout took %s; %d EndpointSlice versions watched; fewest ready endpoints %d (%s: %v); under 4 for %s; "+
			"old pods removed in the order %v (ejected: %v); floor restorations %v",
			took.Round(time.Millisecond), versions, fewest, when, who, h.readyBelow(4, started, ended).Round(time.Millisecond), order, ejected, restored)
		AddReportEntry("rollout with 2 ejected pods", summary)
		GinkgoWriter.Println(summary)
		Expect(order).To(HaveLen(6), "every old pod was removed")
		Expect(order[:2]).To(ConsistOf(ejected), "the ReplicaSet removed the 2 ejected pods before any serving pod")
		Expect(versions).To(BeNumerically(">", 6), "the watch saw the rollout")
		Expect(fewest).To(BeNumerically(">=", 4), "ready endpoints at the worst moment of the watch history: %v", who)
	})

	DescribeTable("restores the ejected pods within 2s when the fleet falls under the floor, and ejects again within the quota once it recovers",
		func(deleted bool) {
			s := newGatedScenario(10)
			pods := s.pods()
			Expect(pods).To(HaveLen(10))
			ejected, broken, steady := pods[:3], pods[3:7], pods[7:]
			const floor = 6

			By("the detector flags 3 pods: the first evaluation ejects them (10 serving, floor 6)")
			d := newTestDetector()
			d.flag(ejected...)
			// The evaluation period is 5s: the breach below comes right after an evaluation, so a restore within
			// 2s is the pod events' doing, not the next evaluation's.
			b := d.breaker("custom", "5s")
			b.MinPodsAvailableCount = new(int32(floor))
			b.MaxAnomalousPercent = new(int32(100)) // the floor is what this proves, not the storm guard
			s.createKVS(b, func(k *kvv1.KubervisorService) { k.Spec.DefaultActivator = periodic10m() })
			Eventually(s.endpoints).Should(Equal(without(pods, ejected...)))
			for _, p := range ejected {
				Expect(s.traffic(p)()).To(Equal(kvv1.TrafficNo))
				Expect(s.pod(p).Labels).To(HaveKeyWithValue(kvv1.LabelStrategy, "custom"))
				Eventually(func() map[string]string { return s.pod(p).Annotations }).Should(
					HaveKeyWithValue(kvv1.AnnotationDeletionCost, kvv1.DeletionCostOutOfTraffic), "pod %s", p)
			}

			By("the detector stops flagging them; the periodic activator (10m) keeps them out")
			d.flag()
			Eventually(s.breaker()).WithTimeout(20 * time.Second).Should(HaveField("AnomalousPods", BeEmpty()))
			Expect(s.endpoints()).To(Equal(without(pods, ejected...)))

			h := recordHistory(s)
			evaluated := d.waitForRequest(time.Now())
			if deleted {
				By("4 serving pods are deleted, right after an evaluation; their replacements start NotReady")
				for _, p := range broken {
					Expect(k8s.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: p}})).To(Succeed())
				}
			} else {
				By("4 serving pods turn NotReady (a lost Node), right after an evaluation")
				for _, p := range broken {
					cl.Kubelet().SetReady(s.ns, p, false)
				}
			}
			for _, p := range ejected {
				Eventually(s.traffic(p)).WithTimeout(10*time.Second).WithPolling(20*time.Millisecond).Should(Equal(kvv1.TrafficYes), "pod %s restored", p)
			}
			want := slices.Concat(ejected, steady)
			slices.Sort(want)
			Eventually(s.endpoints).WithPolling(20 * time.Millisecond).Should(Equal(want))
			restoredWhen := h.podsWhen(evaluated, func(state map[string]*corev1.Pod) bool {
				return allOf(ejected, func(p string) bool { return state[p] != nil && state[p].Labels[kvv1.LabelTraffic] == kvv1.TrafficYes })
			})
			Eventually(func() bool { _, ok := restoredWhen(); return ok }).Should(BeTrue(), "the watch saw the restores")
			Eventually(func() bool {
				under, back := h.underStretch(floor, evaluated)
				return under.IsZero() || !back.IsZero()
			}).Should(BeTrue(), "the EndpointSlice watch saw the endpoints back")

			// Every moment of the watch history from the evaluation on: when the 4th pod left, when the last
			// ejected pod was back, and whether any pod came back while the floor held.
			breach, ok := h.podsWhen(evaluated, func(state map[string]*corev1.Pod) bool {
				return allOf(broken, func(p string) bool {
					return !serving(state[p]) && (state[p] == nil || state[p].Labels[kvv1.LabelTraffic] == kvv1.TrafficYes)
				})
			})()
			Expect(ok).To(BeTrue(), "the watch saw the 4 pods leave")
			restoredAt, _ := restoredWhen()
			firstUnder, _ := h.podsWhen(evaluated, func(state map[string]*corev1.Pod) bool { return countServing(state) < floor })()
			sliceUnder, sliceBack := h.underStretch(floor, evaluated)
			delay := restoredAt.Sub(breach)
			// No pod comes back by itself meanwhile (the 4 stay out, replacements stay NotReady), so after each
			// restore the pods serving are at most the floor: none is restored while the floor holds, none beyond it.
			var beyond []string
			h.eachRestore(evaluated, ejected, func(at time.Time, pod string, state map[string]*corev1.Pod) {
				if n := countServing(state); n > floor {
					beyond = append(beyond, fmt.Sprintf("%s at +%s: %d pods serving after it", pod, at.Sub(evaluated).Round(time.Millisecond), n))
				}
			})
			under := h.readyBelow(floor, evaluated, time.Now())
			between := d.requestsBetween(evaluated.Add(time.Millisecond), restoredAt)
			// NOTE: times within one watch are exact in order; across the pod and EndpointSlice watches they may
			// differ by the watches' delivery lag (tens of milliseconds on a loaded machine).
			rel := func(t time.Time) string {
				if t.IsZero() {
					return "never"
				}
				return "+" + t.Sub(evaluated).Round(time.Millisecond).String()
			}
			summary := fmt.Sprintf("pod watch: breach (4th pod out) at %s after the evaluation, last ejected pod back at %s: breach -> restore %s "+
				"(first under the floor at %s); EndpointSlice watch: under %d ready from %s to %s, %s in all; detector requests in between: %d",
				rel(breach), rel(restoredAt), delay.Round(time.Millisecond), rel(firstUnder), floor, rel(sliceUnder), rel(sliceBack),
				under.Round(time.Millisecond), between)
			AddReportEntry("breach -> restore", summary)
			GinkgoWriter.Println(summary)
			Expect(beyond).To(BeEmpty(), "pods restored beyond the floor")
			Expect(delay).To(And(BeNumerically(">=", 0), BeNumerically("<", 2*time.Second)), "breach -> last restore")

			By("the restored pods: retry count kept, restored-at written, deletion cost removed")
			for _, p := range ejected {
				st := s.state(p)
				Expect(st.RetryCount).To(Equal(int32(1)), "pod %s retry count", p)
				Expect(st.RestoredAt).NotTo(BeZero(), "pod %s restored-at", p)
				Expect(s.pod(p).Annotations).NotTo(HaveKey(kvv1.AnnotationDeletionCost), "pod %s", p)
			}
			for _, p := range broken {
				Expect(s.traffic(p)()).To(BeElementOf(kvv1.TrafficYes, "<gone>"), "pod %s left by itself, not by Kubervisor", p)
			}

			By("status, event and metric say so")
			Eventually(h.conditionSeen(evaluated, kvv1.ConditionEjectionAllowed, metav1.ConditionFalse, kvv1.ReasonBelowFloor)).
				ShouldNot(BeEmpty(), "EjectionAllowed=False/BelowFloor in some status version after the breach")
			GinkgoWriter.Printf("EjectionAllowed=False/BelowFloor: %q; now %+v\n", h.conditionSeen(evaluated, kvv1.ConditionEjectionAllowed,
				metav1.ConditionFalse, kvv1.ReasonBelowFloor)(), s.condition(kvv1.ConditionEjectionAllowed)())
			Eventually(func() []eventsv1.Event { return kvsEvents(s, kvv1.EventFloorRestored) }).ShouldNot(BeEmpty())
			events := kvsEvents(s, kvv1.EventFloorRestored)
			named := map[string]bool{}
			var notes []string
			for _, e := range events {
				Expect(e.Type).To(Equal(corev1.EventTypeWarning))
				notes = append(notes, fmt.Sprintf("%q (series: %v)", e.Note, e.Series != nil))
				for _, p := range pods {
					if strings.Contains(e.Note, p) {
						named[p] = true
					}
				}
			}
			AddReportEntry("FloorRestored events", strings.Join(notes, "\n"))
			GinkgoWriter.Printf("FloorRestored events: %s\n", strings.Join(notes, "; "))
			for p := range named {
				Expect(ejected).To(ContainElement(p), "an event names pod %s as restored", p)
			}
			Expect(named).NotTo(BeEmpty(), "the events name the restored pods")
			if !slices.ContainsFunc(events, func(e eventsv1.Event) bool { return e.Series != nil }) {
				// One event per restoring pass, together naming the 3 pods. (Passes whose events differ only by
				// their note would be merged into a series by the events library, which keeps the first note.)
				Expect(named).To(HaveLen(3), "the events name the 3 restored pods")
			}
			Eventually(func() float64 { return floorRestorations(s) }).Should(Equal(3.0), "kubervisor_floor_restorations_total counts the pods restored")

			By("the detector flags one restored pod: at the floor, it is withheld")
			d.flag(ejected[0])
			Eventually(s.breaker()).WithTimeout(20 * time.Second).Should(HaveField("WithheldPods", ContainElement(ejected[0])))
			Expect(s.endpoints()).To(Equal(want))

			By("the 4 pods come back Ready: the quota (10 serving, floor 6) lets the flagged pod go again")
			if deleted {
				s.startPods()
			} else {
				for _, p := range broken {
					cl.Kubelet().ResetReady(s.ns, p)
				}
			}
			back := time.Now()
			Eventually(s.traffic(ejected[0])).WithTimeout(20 * time.Second).Should(Equal(kvv1.TrafficNo))
			AddReportEntry("fleet back -> flagged pod ejected again", time.Since(back).Round(time.Millisecond).String())
			all := s.pods()
			Expect(all).To(HaveLen(10))
			Eventually(s.endpoints).Should(Equal(without(all, ejected[0])))
			Consistently(s.endpoints).WithTimeout(3 * time.Second).Should(Equal(without(all, ejected[0])))
			Expect(s.state(ejected[0]).RetryCount).To(Equal(int32(2)), "the retry count kept through the restore, plus this ejection")
			Expect(s.pod(ejected[0]).Labels).To(HaveKeyWithValue(kvv1.LabelStrategy, "custom"))
			Eventually(func() map[string]string { return s.pod(ejected[0]).Annotations }).Should(
				HaveKeyWithValue(kvv1.AnnotationDeletionCost, kvv1.DeletionCostOutOfTraffic))
			Eventually(s.condition(kvv1.ConditionEjectionAllowed)).Should(HaveField("Status", metav1.ConditionTrue))
			Expect(floorRestorations(s)).To(Equal(3.0), "no restoration once the fleet is back")
			h.stop()
		},
		Entry("4 serving pods turn NotReady", false),
		Entry("4 serving pods are deleted", true),
	)

	It("never ejects a pod flagged in one evaluation of three with failureThreshold 2, and ejects it with failureThreshold 1", func() {
		s := newScenario(4)
		deleteNamespaceLater(s)
		pods := s.pods()
		flaky := pods[2]
		d := newTestDetector()
		d.answer(func(n int) []string {
			if n%3 == 0 {
				return []string{flaky}
			}
			return nil
		})
		b := d.breaker("custom", "1s")
		b.FailureThreshold = new(int32(2))
		s.createKVS(b, func(k *kvv1.KubervisorService) { k.Spec.DefaultActivator = periodic10m() })
		h := recordHistory(s)

		By("failureThreshold 2: 9 evaluations, 3 of them flag the pod, never 2 in a row")
		from, start := d.count(), time.Now()
		Eventually(d.count).WithTimeout(30 * time.Second).Should(BeNumerically(">=", from+9))
		Expect(h.ever(flaky, func(p *corev1.Pod) bool { return p.Labels[kvv1.LabelTraffic] != kvv1.TrafficYes })).To(BeFalse(), "pod %s left traffic", flaky)
		Expect(s.endpoints()).To(Equal(pods))
		pending := h.decisionSeen("custom", flaky, kvv1.DecisionPending)
		evaluations := fmt.Sprintf("%d detector requests in %s, pod %s in traffic throughout; Pending reasons: %q",
			d.count()-from, time.Since(start).Round(time.Millisecond), flaky, pending)
		AddReportEntry("failureThreshold 2", evaluations)
		GinkgoWriter.Println(evaluations)
		Expect(pending).NotTo(BeEmpty(), "the status showed the pod Pending")

		By("failureThreshold 1: the next evaluation that flags it ejects it")
		Eventually(func() error {
			k := s.kvs()
			k.Spec.Breakers[0].FailureThreshold = new(int32(1))
			return k8s.Update(ctx, k)
		}).Should(Succeed())
		changed, n := time.Now(), d.count()
		Eventually(s.traffic(flaky)).WithTimeout(15 * time.Second).Should(Equal(kvv1.TrafficNo))
		ejected := fmt.Sprintf("ejected %s after the edit, %d detector requests later", time.Since(changed).Round(time.Millisecond), d.count()-n)
		AddReportEntry("failureThreshold 1", ejected)
		GinkgoWriter.Println(ejected)
		Expect(d.count()-n).To(BeNumerically("<=", 5), "ejected by one of the first flagging evaluations after the edit")
		Eventually(s.endpoints).Should(Equal(without(pods, flaky)))
		Expect(s.pod(flaky).Labels).To(HaveKeyWithValue(kvv1.LabelStrategy, "custom"))
		h.stop()
	})

	It("ejects none of 4 new pods of a rollout read as slow for their first 20s with warmup 30s, where a warmup-0 breaker would", func() {
		s := newScenario(8)
		deleteNamespaceLater(s)
		old := s.pods()
		// A rollout that adds 4 pods at once and keeps the 8 old ones for a minute: minReadySeconds 60 holds the
		// new pods unavailable to the Deployment (they are Ready, and serve), so no old pod goes meanwhile and the
		// 4 new pods are a minority that a peer detector can single out.
		s.patchDeployment(func(d *appsv1.Deployment) {
			d.Spec.MinReadySeconds = 60
			d.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{MaxSurge: new(intstr.FromInt32(4)), MaxUnavailable: new(intstr.FromInt32(0))}}
		})
		// Each pod's raw 90th percentile latency over 5s: a pod slow for 15s reads slow for about 20s.
		perPod := fmt.Sprintf(`histogram_quantile(0.9, sum by (pod, le) (rate(%s_bucket{namespace=%q}[5s])))`, fleet.MetricDuration, s.ns)
		peer := func(name, warmup string, dryRun bool) kvv1.BreakerStrategy {
			return kvv1.BreakerStrategy{
				Name:             name,
				EvaluationPeriod: intOrString("1s"),
				Warmup:           intOrString(warmup),
				DryRun:           dryRun,
				PeerOutlier: &kvv1.PeerOutlier{
					PrometheusService: prom.Addr(),
					PromQL:            perPod,
					PodNameKey:        fleet.PodLabel,
					Direction:         kvv1.PeerDirectionHigh,
				},
			}
		}
		s.createKVS(peer("latency", "30s", false), func(k *kvv1.KubervisorService) {
			// The control: the same detector without warm-up, in dry run, says whom it would eject.
			k.Spec.Breakers = append(k.Spec.Breakers, peer("latency-no-warmup", "0s", true))
			k.Spec.DefaultActivator = periodic10m()
		})
		Eventually(s.breakerNamed("latency")).WithTimeout(time.Minute).Should(And(
			HaveField("LastResult", kvv1.ResultOK), HaveField("AnomalousPods", BeEmpty())))
		h := recordHistory(s)

		By("a rollout: 4 new pods, slow (4x latency) from their start")
		started := time.Now()
		s.patchDeployment(func(d *appsv1.Deployment) {
			d.Spec.Template.Annotations = map[string]string{"e2e.kubervisor.io/revision": "2"}
		})
		slow := map[string]time.Time{}
		for len(slow) < 4 {
			Expect(time.Since(started)).To(BeNumerically("<", time.Minute), "4 new pods; made slow so far: %v", slow)
			for _, p := range without(s.pods(), old...) {
				if _, done := slow[p]; done {
					continue
				}
				if err := s.fleet.SetDeviation(p, 4); err == nil {
					slow[p] = time.Now()
				} else {
					Expect(err).To(MatchError(fleet.ErrUnknownPod))
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		fresh := slices.Sorted(maps.Keys(slow))
		Expect(s.pods()).To(HaveLen(12), "8 old pods and 4 new ones")
		readyAt := map[string]time.Time{}
		for _, p := range fresh {
			Eventually(func() bool { _, ok := h.firstReady(p); return ok }).Should(BeTrue(), "pod %s Ready", p)
			readyAt[p], _ = h.firstReady(p)
		}

		By("each new pod heals 15s after it became Ready; watch until 40s after (warm-up ends at 30s)")
		slices.SortFunc(fresh, func(a, b string) int { return readyAt[a].Compare(readyAt[b]) })
		for _, p := range fresh {
			time.Sleep(time.Until(readyAt[p].Add(15 * time.Second)))
			Expect(s.fleet.Heal(p)).To(Succeed())
		}
		last := readyAt[fresh[len(fresh)-1]]
		Consistently(func() []string { return without(s.endpoints(), old...) }).WithTimeout(time.Until(last.Add(40 * time.Second))).
			WithPolling(500 * time.Millisecond).Should(Equal(slices.Sorted(slices.Values(fresh))))
		h.stop()

		var report []string
		for _, p := range fresh {
			flaggedFrom, flaggedTo := h.flagged("latency", p)
			report = append(report, fmt.Sprintf("%s: Ready %s after the rollout started, made slow at Ready%+dms; "+
				"read as slow from %s to %s after Ready; WarmingUp: %v; would-eject without warm-up: %v",
				p, readyAt[p].Sub(started).Round(time.Millisecond), slow[p].Sub(readyAt[p]).Milliseconds(),
				flaggedFrom.Sub(readyAt[p]).Round(time.Millisecond), flaggedTo.Sub(readyAt[p]).Round(time.Millisecond),
				h.decisionSeen("latency", p, kvv1.DecisionWarmingUp) != nil, h.wouldEject("latency-no-warmup", p)))
		}
		AddReportEntry("new pods under warm-up", strings.Join(report, "\n"))
		GinkgoWriter.Println(strings.Join(report, "\n"))
		for _, p := range fresh {
			Expect(h.ever(p, func(pod *corev1.Pod) bool { return pod.Labels[kvv1.LabelTraffic] != kvv1.TrafficYes })).To(BeFalse(), "pod %s left traffic", p)
			Expect(h.decisionSeen("latency", p, kvv1.DecisionWarmingUp)).NotTo(BeEmpty(), "the breaker judged pod %s slow, warming up", p)
			flaggedFrom, flaggedTo := h.flagged("latency", p)
			Expect(flaggedFrom).NotTo(BeZero(), "pod %s read as slow", p)
			// The premise: the detector reads the pod slow only within its warm-up. Past it, an ejection would be right.
			Expect(flaggedTo.Sub(readyAt[p])).To(BeNumerically("<", 28*time.Second), "pod %s read as slow until", p)
		}
		for _, p := range old {
			Expect(h.ever(p, func(pod *corev1.Pod) bool { return pod.Labels[kvv1.LabelTraffic] != kvv1.TrafficYes })).To(BeFalse(), "old pod %s left traffic", p)
		}
		Expect(slices.ContainsFunc(fresh, func(p string) bool { return h.wouldEject("latency-no-warmup", p) })).To(BeTrue(),
			"without warm-up, the same detector would have ejected a new pod")
	})
})

func periodic10m() *kvv1.ActivatorStrategy {
	return &kvv1.ActivatorStrategy{Mode: kvv1.ActivatorModePeriodic, Period: intOrString("10m")}
}

// patchDeployment changes the scenario's Deployment.
func (s *scenario) patchDeployment(mutate func(*appsv1.Deployment)) {
	d := &appsv1.Deployment{}
	Expect(k8s.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: s.name}, d)).To(Succeed())
	patch := client.MergeFrom(d.DeepCopy())
	mutate(d)
	Expect(k8s.Patch(ctx, d, patch)).To(Succeed())
}

// rolledOut succeeds once the Deployment's rollout is complete and none of the old pods is left.
func (s *scenario) rolledOut(old []string) func() error {
	return func() error {
		d := &appsv1.Deployment{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: s.name}, d); err != nil {
			return err
		}
		want, st := *d.Spec.Replicas, d.Status
		if st.ObservedGeneration < d.Generation || st.UpdatedReplicas != want || st.Replicas != want || st.AvailableReplicas != want {
			return fmt.Errorf("rollout in progress: %+v", st)
		}
		var list corev1.PodList
		if err := k8s.List(ctx, &list, client.InNamespace(s.ns), client.MatchingLabels{"app": s.name}); err != nil {
			return err
		}
		for _, p := range list.Items {
			if slices.Contains(old, p.Name) {
				return fmt.Errorf("old pod %s is still there", p.Name)
			}
		}
		return nil
	}
}

func (s *scenario) breakerNamed(name string) func() kvv1.BreakerStatus {
	return func() kvv1.BreakerStatus {
		for _, b := range s.kvs().Status.Breakers {
			if b.Name == name {
				return b
			}
		}
		return kvv1.BreakerStatus{}
	}
}

// newGatedScenario is newScenario (a Deployment of n pods, a Service selecting app and kubervisor/traffic=yes,
// in a namespace of its own deleted at the end) whose pods declare the readiness gate startedGate: they are
// Ready once startPods says they started. It runs no demo fleet: its specs use a testDetector.
func newGatedScenario(n int) *scenario {
	s := &scenario{ns: "e2e-" + rand.String(5), name: "pricer"}
	Expect(k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: s.ns}})).To(Succeed())
	deleteNamespaceLater(s)
	Expect(k8s.Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: s.name},
		Spec: appsv1.DeploymentSpec{
			Replicas: new(int32(n)),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": s.name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": s.name, kvv1.LabelTraffic: kvv1.TrafficYes, fleetLabel: "true"}},
				Spec: corev1.PodSpec{
					Containers:     []corev1.Container{{Name: "app", Image: "pricer:1"}},
					ReadinessGates: []corev1.PodReadinessGate{{ConditionType: startedGate}},
				},
			},
		},
	})).To(Succeed())
	Expect(k8s.Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: s.name},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": s.name, kvv1.LabelTraffic: kvv1.TrafficYes},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80}},
		},
	})).To(Succeed())
	Eventually(func() []string { s.startPods(); return s.endpoints() }).WithTimeout(time.Minute).WithPolling(500 * time.Millisecond).Should(HaveLen(n))
	return s
}

// startPods sets the condition startedGate True on every pod of the scenario that lacks it: they become Ready.
func (s *scenario) startPods() {
	for _, p := range s.unstarted() {
		Expect(startPod(p)).To(Succeed(), "starting pod %s", p.Name)
	}
}

// startPodsAfter starts each pod of the scenario that lacks startedGate once it has been seen for delay, in the
// background until the spec ends: pods that take delay to start, as real ones do.
func (s *scenario) startPodsAfter(delay time.Duration) {
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer GinkgoRecover()
		defer close(done)
		seen := map[types.UID]time.Time{}
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			for _, p := range s.unstarted() {
				if first, ok := seen[p.UID]; !ok {
					seen[p.UID] = time.Now()
				} else if time.Since(first) >= delay {
					Expect(startPod(p)).To(Succeed(), "starting pod %s", p.Name)
				}
			}
		}
	}()
	DeferCleanup(func() { close(stop); <-done })
}

// unstarted returns the scenario's pods that are not terminating and lack startedGate.
func (s *scenario) unstarted() []*corev1.Pod {
	var list corev1.PodList
	Expect(k8s.List(ctx, &list, client.InNamespace(s.ns), client.MatchingLabels{"app": s.name})).To(Succeed())
	var out []*corev1.Pod
	for i := range list.Items {
		p := &list.Items[i]
		if p.DeletionTimestamp == nil && !slices.ContainsFunc(p.Status.Conditions, func(c corev1.PodCondition) bool {
			return c.Type == startedGate && c.Status == corev1.ConditionTrue
		}) {
			out = append(out, p)
		}
	}
	return out
}

// startPod sets the pod's condition startedGate True (a pod already gone is no error).
func startPod(p *corev1.Pod) error {
	patch := client.RawPatch(types.StrategicMergePatchType, []byte(`{"status":{"conditions":[{"type":"`+startedGate+`","status":"True"}]}}`))
	if err := k8s.Status().Patch(ctx, p, patch); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return nil
}

// kvsEvents returns the events of the given reason about the scenario's KubervisorService.
func kvsEvents(s *scenario, reason string) []eventsv1.Event {
	var list eventsv1.EventList
	Expect(k8s.List(ctx, &list, client.InNamespace(s.ns))).To(Succeed())
	var out []eventsv1.Event
	for _, e := range list.Items {
		if e.Reason == reason && e.Regarding.Kind == "KubervisorService" && e.Regarding.Name == s.name {
			out = append(out, e)
		}
	}
	return out
}

// floorRestorations reads kubervisor_floor_restorations_total of the scenario's KubervisorService from the
// manager's /metrics (0 when the series does not exist).
func floorRestorations(s *scenario) float64 {
	return kvsMetric(s, "kubervisor_floor_restorations_total")
}

// kvsMetric reads a metric of the scenario's KubervisorService from the manager's /metrics, summed over its
// series (breakers, results), 0 when it has none.
func kvsMetric(s *scenario, name string) float64 {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+managerMetricsAddr()+"/metrics", nil)
	Expect(err).NotTo(HaveOccurred())
	resp, err := http.DefaultClient.Do(req)
	Expect(err).NotTo(HaveOccurred())
	defer func() { _ = resp.Body.Close() }()
	Expect(resp.StatusCode).To(Equal(http.StatusOK))
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var total float64
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") ||
			!strings.Contains(line, `namespace="`+s.ns+`"`) || !strings.Contains(line, `kubervisorservice="`+s.name+`"`) {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		Expect(err).NotTo(HaveOccurred(), line)
		total += v
	}
	Expect(sc.Err()).NotTo(HaveOccurred())
	return total
}

// testDetector is a customService detector the spec answers for: it says which pods are anomalous in the
// n-th request, and remembers when each request came (one per evaluation of the breaker).
type testDetector struct {
	srv *httptest.Server

	mu       sync.Mutex
	answerFn func(n int) []string
	requests []time.Time
}

func newTestDetector() *testDetector {
	d := &testDetector{answerFn: func(int) []string { return nil }}
	d.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		d.mu.Lock()
		d.requests = append(d.requests, time.Now())
		pods := d.answerFn(len(d.requests))
		d.mu.Unlock()
		if pods == nil {
			pods = []string{}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string][]string{"pods": pods})
	}))
	DeferCleanup(d.srv.Close)
	return d
}

// flag makes every answer from now on name these pods (none: a healthy fleet).
func (d *testDetector) flag(pods ...string) {
	pods = slices.Clone(pods)
	d.answer(func(int) []string { return pods })
}

// answer makes the n-th request (counted from 1) answer fn(n).
func (d *testDetector) answer(fn func(n int) []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.answerFn = fn
}

func (d *testDetector) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.requests)
}

// waitForRequest waits for a request after t and returns when it came.
func (d *testDetector) waitForRequest(t time.Time) time.Time {
	var at time.Time
	Eventually(func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		if n := len(d.requests); n > 0 && d.requests[n-1].After(t) {
			at = d.requests[n-1]
			return true
		}
		return false
	}).WithTimeout(time.Minute).WithPolling(5*time.Millisecond).Should(BeTrue(), "a detector request")
	return at
}

// requestsBetween counts the requests that came within [from, to].
func (d *testDetector) requestsBetween(from, to time.Time) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, t := range d.requests {
		if !t.Before(from) && !t.After(to) {
			n++
		}
	}
	return n
}

func (d *testDetector) breaker(name, period string) kvv1.BreakerStrategy {
	return kvv1.BreakerStrategy{
		Name:             name,
		EvaluationPeriod: intOrString(period),
		CustomService:    &kvv1.CustomService{URL: d.srv.URL + fleet.CustomDetectorPath},
	}
}

// history records, through watches, every version of a scenario's pods, the ready endpoints of its
// EndpointSlices and its KubervisorService's status, with the time each arrived: a spec judges every moment the
// API server went through, not samples of it.
type history struct {
	cancel   func()
	done     sync.WaitGroup
	stopOnce sync.Once

	mu     sync.Mutex
	pods   []podVersion
	ready  []readyVersion
	status []statusVersion
	err    error
}

type podVersion struct {
	at   time.Time
	name string
	pod  *corev1.Pod // nil: deleted
}

type readyVersion struct {
	at    time.Time
	ready []string
}

type statusVersion struct {
	at     time.Time
	status kvv1.KubervisorServiceStatus
}

func recordHistory(s *scenario) *history {
	wc, err := client.NewWithWatch(cl.Config(), client.Options{Scheme: k8s.Scheme()})
	Expect(err).NotTo(HaveOccurred())
	wctx, cancel := context.WithCancel(ctx)
	h := &history{cancel: cancel}
	follow := func(list client.ObjectList, record func(watch.Event, time.Time), opts ...client.ListOption) {
		w, err := wc.Watch(wctx, list, opts...)
		Expect(err).NotTo(HaveOccurred())
		h.done.Go(func() {
			defer w.Stop()
			for {
				select {
				case <-wctx.Done():
					return
				case ev, ok := <-w.ResultChan():
					at := time.Now()
					h.mu.Lock()
					switch {
					case !ok:
						if wctx.Err() == nil && h.err == nil {
							h.err = errors.New("a watch ended early")
						}
					case ev.Type == watch.Error:
						if h.err == nil {
							h.err = apierrors.FromObject(ev.Object)
						}
					case ev.Type != watch.Bookmark:
						record(ev, at)
					}
					h.mu.Unlock()
					if !ok {
						return
					}
				}
			}
		})
	}
	follow(&corev1.PodList{}, func(ev watch.Event, at time.Time) {
		p, ok := ev.Object.(*corev1.Pod)
		if !ok {
			return
		}
		v := podVersion{at: at, name: p.Name, pod: p}
		if ev.Type == watch.Deleted {
			v.pod = nil
		}
		h.pods = append(h.pods, v)
	}, client.InNamespace(s.ns), client.MatchingLabels{"app": s.name})
	slicesNow := map[string][]string{}
	follow(&discoveryv1.EndpointSliceList{}, func(ev watch.Event, at time.Time) {
		sl, ok := ev.Object.(*discoveryv1.EndpointSlice)
		if !ok {
			return
		}
		delete(slicesNow, sl.Name)
		if ev.Type != watch.Deleted {
			for _, e := range sl.Endpoints {
				if e.TargetRef != nil && (e.Conditions.Ready == nil || *e.Conditions.Ready) {
					slicesNow[sl.Name] = append(slicesNow[sl.Name], e.TargetRef.Name)
				}
			}
		}
		var all []string
		for _, r := range slicesNow {
			all = append(all, r...)
		}
		slices.Sort(all)
		h.ready = append(h.ready, readyVersion{at: at, ready: slices.Compact(all)})
	}, client.InNamespace(s.ns), client.MatchingLabels{discoveryv1.LabelServiceName: s.name})
	follow(&kvv1.KubervisorServiceList{}, func(ev watch.Event, at time.Time) {
		if k, ok := ev.Object.(*kvv1.KubervisorService); ok && k.Name == s.name {
			h.status = append(h.status, statusVersion{at: at, status: *k.Status.DeepCopy()})
		}
	}, client.InNamespace(s.ns))
	DeferCleanup(h.stop)

	// The watches start with the objects as they are: wait for them.
	want := s.pods()
	Eventually(func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		seen := map[string]bool{}
		for _, v := range h.pods {
			seen[v.name] = true
		}
		return allOf(want, func(p string) bool { return seen[p] }) && len(h.ready) > 0 && len(h.status) > 0
	}).Should(BeTrue(), "the watches started")
	return h
}

// stop ends the watches; it fails the spec if one of them failed. It may be called more than once.
func (h *history) stop() {
	h.stopOnce.Do(func() {
		h.cancel()
		h.done.Wait()
		h.mu.Lock()
		defer h.mu.Unlock()
		Expect(h.err).NotTo(HaveOccurred(), "watching the scenario")
	})
}

// replayPods calls fn with the pods' state after each version, in order (state maps a live pod's name to it).
func (h *history) replayPods(fn func(v podVersion, state map[string]*corev1.Pod) bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	state := map[string]*corev1.Pod{}
	for _, v := range h.pods {
		if v.pod == nil {
			delete(state, v.name)
		} else {
			state[v.name] = v.pod
		}
		if fn(v, state) {
			return
		}
	}
}

// podsWhen returns a function telling the time of the first pod version from `from` on after which cond
// holds, and whether there is one.
func (h *history) podsWhen(from time.Time, cond func(map[string]*corev1.Pod) bool) func() (time.Time, bool) {
	return func() (time.Time, bool) {
		var at time.Time
		h.replayPods(func(v podVersion, state map[string]*corev1.Pod) bool {
			if !v.at.Before(from) && cond(state) {
				at = v.at
				return true
			}
			return false
		})
		return at, !at.IsZero()
	}
}

// eachRestore calls fn for each version from `from` on in which one of pods went from traffic=no to yes.
func (h *history) eachRestore(from time.Time, pods []string, fn func(at time.Time, pod string, state map[string]*corev1.Pod)) {
	h.eachTrafficChange(from, pods, kvv1.TrafficNo, kvv1.TrafficYes, fn)
}

// eachTrafficChange calls fn for each version from `from` on in which one of pods went from traffic label
// was to now.
func (h *history) eachTrafficChange(from time.Time, pods []string, was, now string,
	fn func(at time.Time, pod string, state map[string]*corev1.Pod)) {
	last := map[string]string{}
	h.replayPods(func(v podVersion, state map[string]*corev1.Pod) bool {
		if !slices.Contains(pods, v.name) || v.pod == nil {
			return false
		}
		t := v.pod.Labels[kvv1.LabelTraffic]
		if !v.at.Before(from) && last[v.name] == was && t == now {
			fn(v.at, v.name, state)
		}
		last[v.name] = t
		return false
	})
}

// ever reports whether some recorded version of pod satisfied cond.
func (h *history) ever(pod string, cond func(*corev1.Pod) bool) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.ContainsFunc(h.pods, func(v podVersion) bool { return v.name == pod && v.pod != nil && cond(v.pod) })
}

// firstReady returns when the watch first saw pod Ready.
func (h *history) firstReady(pod string) (time.Time, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, v := range h.pods {
		if v.name == pod && v.pod != nil && podstate.Ready(v.pod) {
			return v.at, true
		}
	}
	return time.Time{}, false
}

// goneOrder returns the pods among old in the order they started terminating (or were deleted) after from.
func (h *history) goneOrder(old []string, from time.Time) []string {
	var out []string
	h.replayPods(func(v podVersion, _ map[string]*corev1.Pod) bool {
		if !v.at.Before(from) && slices.Contains(old, v.name) && !slices.Contains(out, v.name) && (v.pod == nil || v.pod.DeletionTimestamp != nil) {
			out = append(out, v.name)
		}
		return false
	})
	return out
}

// fewestReady returns the fewest ready endpoints in effect at some moment within [from, to], when, which they
// were, and the number of versions judged.
func (h *history) fewestReady(from, to time.Time) (fewest int, at time.Time, who []string, versions int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	fewest = -1
	for i, v := range h.ready {
		inEffect := !v.at.After(to) && (!v.at.Before(from) || i+1 == len(h.ready) || h.ready[i+1].at.After(from))
		if !inEffect {
			continue
		}
		versions++
		if fewest < 0 || len(v.ready) < fewest {
			fewest, at, who = len(v.ready), v.at, v.ready
		}
	}
	return fewest, at, who, versions
}

// readyBelow returns how long, within [from, to], fewer than n endpoints were ready.
func (h *history) readyBelow(n int, from, to time.Time) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	var total time.Duration
	for i, v := range h.ready {
		end, start := to, from
		if i+1 < len(h.ready) && h.ready[i+1].at.Before(to) {
			end = h.ready[i+1].at
		}
		if v.at.After(from) {
			start = v.at
		}
		if len(v.ready) < n && end.After(start) {
			total += end.Sub(start)
		}
	}
	return total
}

// underStretch returns when, from `from` on, fewer than n endpoints were first ready, and when at least n were
// ready again after that (zero times if not).
func (h *history) underStretch(n int, from time.Time) (under, back time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, v := range h.ready {
		switch {
		case v.at.Before(from):
		case under.IsZero() && len(v.ready) < n:
			under = v.at
		case !under.IsZero() && len(v.ready) >= n:
			return under, v.at
		}
	}
	return under, time.Time{}
}

// conditionSeen returns a function returning the message of the first status version from `from` on whose
// condition typ had this status and reason ("" if none).
func (h *history) conditionSeen(from time.Time, typ string, status metav1.ConditionStatus, reason string) func() string {
	return func() string {
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, v := range h.status {
			if c := meta.FindStatusCondition(v.status.Conditions, typ); !v.at.Before(from) && c != nil && c.Status == status && c.Reason == reason {
				return "message: " + c.Message
			}
		}
		return ""
	}
}

func (h *history) breakerVersions(breaker string, fn func(at time.Time, b kvv1.BreakerStatus)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, v := range h.status {
		for _, b := range v.status.Breakers {
			if b.Name == breaker {
				fn(v.at, b)
			}
		}
	}
}

// decisionSeen returns the distinct reasons of the breaker's decision about pod in the recorded statuses.
func (h *history) decisionSeen(breaker, pod string, decision kvv1.Decision) []string {
	var reasons []string
	h.breakerVersions(breaker, func(_ time.Time, b kvv1.BreakerStatus) {
		for _, a := range b.Anomalies {
			if a.Pod == pod && a.Decision == decision && !slices.Contains(reasons, a.Reason) {
				reasons = append(reasons, a.Reason)
			}
		}
	})
	return reasons
}

// wouldEject reports whether the breaker listed pod among its would-eject pods in some recorded status.
func (h *history) wouldEject(breaker, pod string) bool {
	seen := false
	h.breakerVersions(breaker, func(_ time.Time, b kvv1.BreakerStatus) { seen = seen || slices.Contains(b.WouldEjectPods, pod) })
	return seen
}

// flagged returns when the breaker's status first listed pod as anomalous, and when it first stopped listing it
// after that for good (the last version listing it is followed by one that does not).
func (h *history) flagged(breaker, pod string) (from, to time.Time) {
	in := false
	h.breakerVersions(breaker, func(at time.Time, b kvv1.BreakerStatus) {
		now := slices.Contains(b.AnomalousPods, pod)
		switch {
		case now && !in && from.IsZero():
			from = at
		case !now && in:
			to = at
		}
		in = now
	})
	if in {
		to = time.Now() // still listed
	}
	return from, to
}

// serving: the pod is in traffic (Ready, not terminating, traffic=yes).
func serving(p *corev1.Pod) bool {
	return p != nil && p.DeletionTimestamp == nil && podstate.Ready(p) && p.Labels[kvv1.LabelTraffic] == kvv1.TrafficYes
}

func countServing(state map[string]*corev1.Pod) int {
	n := 0
	for _, p := range state {
		if serving(p) {
			n++
		}
	}
	return n
}

func allOf(names []string, cond func(string) bool) bool {
	for _, n := range names {
		if !cond(n) {
			return false
		}
	}
	return true
}
