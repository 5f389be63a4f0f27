package controller_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/controller"
)

// fleetOf creates n Ready pods p0..p(n-1) behind Service "pricer" whose selector holds the traffic key.
func fleetOf(ns string, n int, controlled bool) {
	sel := map[string]string{"app": "pricer"}
	if controlled {
		sel[kvv1.LabelTraffic] = kvv1.TrafficYes
	}
	newService(ns, "pricer", sel)
	for i := range n {
		newPod(ns, fmt.Sprintf("p%d", i), map[string]string{"app": "pricer"}, true)
	}
}

func trafficOf(ns string, n int) func() []string {
	return func() []string {
		out := make([]string, n)
		for i := range n {
			out[i] = podLabels(ns, fmt.Sprintf("p%d", i))()[kvv1.LabelTraffic]
		}
		return out
	}
}

func breakerStatus(ns, name, b string) func() kvv1.BreakerStatus {
	return func() kvv1.BreakerStatus {
		for _, s := range getKVS(ns, name).Status.Breakers {
			if s.Name == b {
				return s
			}
		}
		return kvv1.BreakerStatus{}
	}
}

// eventsFor lists the events.k8s.io events regarding an object, as "Type/Reason: note".
func eventsFor(ns, name string) func() []string {
	return func() []string {
		var list eventsv1.EventList
		Expect(k8sClient.List(context.Background(), &list, client.InNamespace(ns))).To(Succeed())
		var out []string
		for _, e := range list.Items {
			if e.Regarding.Name == name {
				out = append(out, e.Type+"/"+e.Reason+": "+e.Note)
			}
		}
		return out
	}
}

var _ = Describe("Breaker", func() {
	var ns string
	ctx := context.Background()
	BeforeEach(func() { ns = newNamespace() })

	It("ejects anomalies worst first and withholds the rest to hold the floor", func() {
		fleetOf(ns, 6, true)
		detectors.set(ns, "kvs", "b", "p4", "p1", "p2", "p5", "ghost")
		newKVS(ns, "kvs", "pricer", func(k *kvv1.KubervisorService) {
			k.Spec.Breakers[0].MinPodsAvailableCount = new(int32(2))
			k.Spec.Breakers[0].MinPodsAvailableRatio = new(int32(50)) // ceil(50% of 6) = 3 pods stay
			k.Spec.Breakers[0].MaxAnomalousPercent = new(int32(100))  // 4 of 6 flagged: no storm guard here
			k.Spec.DefaultActivator = &kvv1.ActivatorStrategy{Period: ptrIntOrString("1h")}
		})
		Eventually(trafficOf(ns, 6)).Should(Equal([]string{"yes", "no", "no", "yes", "no", "yes"}))
		Consistently(trafficOf(ns, 6)).Should(Equal([]string{"yes", "no", "no", "yes", "no", "yes"}))

		p4 := getPod(ns, "p4")
		Expect(p4.Labels).To(HaveKeyWithValue(kvv1.LabelStrategy, "b"))
		Expect(p4.Annotations).To(HaveKeyWithValue(kvv1.AnnotationRetryCount, "1"))
		breakAt, err := time.Parse(time.RFC3339Nano, p4.Annotations[kvv1.AnnotationBreakAt])
		Expect(err).NotTo(HaveOccurred())
		Expect(breakAt).To(BeTemporally("~", time.Now(), time.Minute))

		Eventually(breakerStatus(ns, "kvs", "b")).Should(And(
			HaveField("LastResult", kvv1.ResultOK),
			HaveField("AnomalousPods", []string{"p4", "p1", "p2", "p5"}),
			HaveField("WithheldPods", []string{"p5"}),
		))
		Eventually(condition(ns, "kvs", kvv1.ConditionEjectionAllowed)).Should(And(
			HaveField("Status", metav1.ConditionFalse), HaveField("Reason", kvv1.ReasonFloorReached),
			HaveField("Message", ContainSubstring("p5"))))
		Eventually(podCounts(ns, "kvs")).Should(Equal(kvv1.PodCounts{Managed: 6, Ready: 6, InTraffic: 3, Ejected: 3}))
		Eventually(eventsFor(ns, "kvs")).Should(ContainElements(
			MatchRegexp(`Normal/Ejected: Breaker b took pod p4 out of traffic: flagged by custom service`),
			MatchRegexp(`Warning/EjectionWithheld: Breaker b kept 1 anomalous pods in traffic to hold the floor: p5`),
		))
		Eventually(eventsFor(ns, "p4")).Should(ContainElement(MatchRegexp(`Normal/Ejected: .*p4`)))

		By("the detector stops flagging: the floor is no longer reached")
		detectors.set(ns, "kvs", "b")
		Eventually(condition(ns, "kvs", kvv1.ConditionEjectionAllowed)).Should(HaveField("Status", metav1.ConditionTrue))
		Eventually(breakerStatus(ns, "kvs", "b")).Should(HaveField("LastResult", kvv1.ResultNoData))
	})

	It("shares one quota between two breakers", func() {
		fleetOf(ns, 5, true)
		detectors.set(ns, "kvs", "first", "p0")
		detectors.set(ns, "kvs", "second", "p1", "p2", "p3")
		newKVS(ns, "kvs", "pricer", func(k *kvv1.KubervisorService) {
			k.Spec.Breakers[0].MinPodsAvailableCount = new(int32(3)) // quota: 5 - 3 = 2 for both breakers
			k.Spec.Breakers[1].MaxAnomalousPercent = new(int32(100)) // 3 of 5 flagged: no storm guard here
			k.Spec.DefaultActivator = &kvv1.ActivatorStrategy{Period: ptrIntOrString("1h")}
		}, "first", "second")
		Eventually(podCounts(ns, "kvs")).Should(HaveField("Ejected", int32(2)))
		Consistently(podCounts(ns, "kvs")).Should(HaveField("Ejected", int32(2)))
		Expect(podLabels(ns, "p0")()).To(HaveKeyWithValue(kvv1.LabelTraffic, kvv1.TrafficNo))
		Eventually(breakerStatus(ns, "kvs", "second")).Should(HaveField("WithheldPods", Not(BeEmpty())))
	})

	It("touches no pod in dry run, reports wouldEjectPods, and ejects once dry run is switched off", func() {
		fleetOf(ns, 4, true)
		detectors.set(ns, "kvs", "b", "p2", "p0")
		newKVS(ns, "kvs", "pricer", func(k *kvv1.KubervisorService) {
			k.Spec.DryRun = true
			k.Spec.Breakers[0].MinPodsAvailableCount = new(int32(3))
			k.Spec.Breakers[0].EvaluationPeriod = ptrIntOrString("1h") // the spec change must not wait for it
			k.Spec.DefaultActivator = &kvv1.ActivatorStrategy{Period: ptrIntOrString("1h")}
		})
		Eventually(breakerStatus(ns, "kvs", "b")).Should(And(
			HaveField("WouldEjectPods", []string{"p2"}), HaveField("WithheldPods", []string{"p0"}), HaveField("EjectedPods", BeEmpty())))
		Eventually(eventsFor(ns, "kvs")).Should(ContainElement(MatchRegexp(`Normal/WouldEject: Breaker b would take pod p2 out of traffic \(spec.dryRun\)`)))
		Consistently(trafficOf(ns, 4)).Should(Equal([]string{"yes", "yes", "yes", "yes"}))

		By("switching dry run off takes effect at the next pass, not after the hour-long period")
		editKVS(ns, "kvs", func(k *kvv1.KubervisorService) { k.Spec.DryRun = false })
		Eventually(trafficOf(ns, 4)).Should(Equal([]string{"yes", "yes", "no", "yes"}))
		Eventually(breakerStatus(ns, "kvs", "b")).Should(HaveField("WouldEjectPods", BeEmpty()))
	})

	It("acts as in dry run while the Service selector lacks the traffic key, and per breaker", func() {
		fleetOf(ns, 4, false)
		detectors.set(ns, "kvs", "b", "p1")
		detectors.set(ns, "kvs", "dry", "p3")
		newKVS(ns, "kvs", "pricer", func(k *kvv1.KubervisorService) {
			k.Spec.Breakers[1].DryRun = true
			k.Spec.DefaultActivator = &kvv1.ActivatorStrategy{Period: ptrIntOrString("1h")}
		}, "b", "dry")
		Eventually(breakerStatus(ns, "kvs", "b")).Should(HaveField("WouldEjectPods", []string{"p1"}))
		Eventually(eventsFor(ns, "kvs")).Should(ContainElement(ContainSubstring(`the Service selector lacks kubervisor/traffic`)))
		Consistently(trafficOf(ns, 4)).Should(Equal([]string{"yes", "yes", "yes", "yes"}))

		setSelector(ns, "pricer", map[string]string{"app": "pricer", kvv1.LabelTraffic: kvv1.TrafficYes})
		Eventually(trafficOf(ns, 4)).Should(Equal([]string{"yes", "no", "yes", "yes"}))
		Eventually(breakerStatus(ns, "kvs", "dry")).Should(HaveField("WouldEjectPods", []string{"p3"}))
		Consistently(podLabels(ns, "p3")).Should(HaveKeyWithValue(kvv1.LabelTraffic, kvv1.TrafficYes))
	})

	It("stops evaluating when the Service is deleted", func() {
		fleetOf(ns, 2, true)
		newKVS(ns, "kvs", "pricer", nil)
		Eventually(func() int { return detectors.callCount(ns, "kvs", "b") }).Should(BeNumerically(">=", 2))
		Expect(k8sClient.Delete(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pricer"}})).To(Succeed())
		Eventually(condition(ns, "kvs", kvv1.ConditionServiceFound)).Should(HaveField("Status", metav1.ConditionFalse))
		calls := detectors.callCount(ns, "kvs", "b")
		Consistently(func() int { return detectors.callCount(ns, "kvs", "b") }).Should(BeNumerically("<=", calls+1))
	})

	It("counts its own writes, not a cache that lags behind them, when ejecting on consecutive passes", func() {
		fleetOf(ns, 6, true)
		detectors.set(ns, "stale", "b", "p0", "p1", "p2", "p3", "p4", "p5")
		newKVS(ns, "stale", "pricer", func(k *kvv1.KubervisorService) {
			k.Spec.Breakers[0].MinPodsAvailableCount = new(int32(3))
			k.Spec.Breakers[0].EvaluationPeriod = ptrIntOrString("1h") // the suite's manager evaluates once
			k.Spec.Breakers[0].MaxAnomalousPercent = new(int32(100))   // every pod flagged: no storm guard here
			k.Spec.DefaultActivator = &kvv1.ActivatorStrategy{Period: ptrIntOrString("1h")}
			k.Spec.DryRun = true // the suite's manager only reports; the reconciler below sees it enforced
		})
		Eventually(func() []string { return getKVS(ns, "stale").Finalizers }).Should(ContainElement(kvv1.Finalizer))
		Eventually(podCounts(ns, "stale")).Should(HaveField("Managed", int32(6)))
		kvs := getKVS(ns, "stale")

		// A reconciler whose cache froze before any ejection: it lists every pod as in traffic forever.
		var frozen corev1.PodList
		Expect(k8sClient.List(ctx, &frozen, client.InNamespace(ns))).To(Succeed())
		for i := range frozen.Items {
			frozen.Items[i].Labels[kvv1.LabelName] = "stale"
			frozen.Items[i].Labels[kvv1.LabelTraffic] = kvv1.TrafficYes
		}
		clock := clocktesting.NewFakeClock(time.Now())
		r := controller.NewKubervisorServiceReconciler(&staleCache{Client: k8sClient, pods: frozen.Items}, k8sClient,
			events.NewFakeRecorder(100), controller.Options{Clock: clock})
		req := reconcile.Request{NamespacedName: client.ObjectKeyFromObject(kvs)}

		pass := func() {
			_, err := r.Reconcile(ctx, req)
			Expect(err).NotTo(HaveOccurred())
		}
		// The KubervisorService was evaluated before (by the suite's manager): a new reconciler spreads its
		// first evaluation over at most MaxFirstEvaluationSpread.
		pass()
		clock.Step(controller.MaxFirstEvaluationSpread)
		pass()
		Expect(countTraffic(ns, kvv1.TrafficNo)).To(Equal(3))
		// NOTE: the detector now names the 3 pods still in traffic first: their cached resourceVersions are
		// current, so only counting the first pass's writes (not the optimistic lock) keeps them in.
		detectors.set(ns, "stale", "b", "p5", "p4", "p3", "p2", "p1", "p0")
		clock.Step(2 * time.Hour)
		pass()
		Expect(countTraffic(ns, kvv1.TrafficNo)).To(Equal(3), "the second pass must not eject on the stale count")
		Expect(countTraffic(ns, kvv1.TrafficYes)).To(Equal(3))
	})

	It("exposes metrics that move with evaluations and ejections", func() {
		fleetOf(ns, 4, true)
		detectors.set(ns, "metered", "b", "p1")
		newKVS(ns, "metered", "pricer", func(k *kvv1.KubervisorService) {
			k.Spec.DefaultActivator = &kvv1.ActivatorStrategy{Period: ptrIntOrString("1h")}
		})
		Eventually(trafficOf(ns, 4)).Should(Equal([]string{"yes", "no", "yes", "yes"}))
		labelsOf := fmt.Sprintf(`namespace="%s"`, ns)
		Eventually(scrape).Should(And(
			MatchRegexp(`kubervisor_ejections_total\{breaker="b",enforced="true",kubervisorservice="metered",`+labelsOf+`\} 1`),
			MatchRegexp(`kubervisor_pods\{kubervisorservice="metered",`+labelsOf+`,state="ejected"\} 1`),
			MatchRegexp(`kubervisor_pods\{kubervisorservice="metered",`+labelsOf+`,state="in_traffic"\} 3`),
			MatchRegexp(`kubervisor_detector_query_duration_seconds_count\{breaker="b",kubervisorservice="metered",`+labelsOf+`\} \d+`),
			MatchRegexp(`kubervisor_evaluation_duration_seconds_count\{kubervisorservice="metered",`+labelsOf+`\} \d+`),
		))
		count := func() int {
			m := regexp.MustCompile(`kubervisor_detector_query_duration_seconds_count\{breaker="b",kubervisorservice="metered",` + labelsOf + `\} (\d+)`).FindStringSubmatch(scrape())
			if m == nil {
				return 0
			}
			n, _ := strconv.Atoi(m[1])
			return n
		}
		first := count()
		Eventually(count).Should(BeNumerically(">", first), "query durations are observed at every evaluation")

		detectors.failWith(ns, "metered", "b", http.StatusBadGateway)
		Eventually(scrape).Should(MatchRegexp(`kubervisor_detector_errors_total\{breaker="b",kubervisorservice="metered",` + labelsOf + `\} [1-9]`))

		// Gone, its series go; back under the same name, its pod counts are set again (a pass does not set
		// unchanged counts: the memory of what it set must go with the series).
		podSeries := `kubervisor_pods\{kubervisorservice="metered",` + labelsOf + `,state="managed"\} 4`
		Expect(k8sClient.Delete(ctx, getKVS(ns, "metered"))).To(Succeed())
		Eventually(scrape).ShouldNot(ContainSubstring(`kubervisorservice="metered"`))
		detectors.set(ns, "metered", "b")
		newKVS(ns, "metered", "pricer", nil)
		Eventually(scrape).Should(MatchRegexp(podSeries))
	})
})

func countTraffic(ns, value string) int {
	var list corev1.PodList
	Expect(k8sClient.List(context.Background(), &list, client.InNamespace(ns), client.MatchingLabels{kvv1.LabelTraffic: value})).To(Succeed())
	return len(list.Items)
}

func scrape() string {
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		return err.Error()
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

// staleCache stands for a manager cache that stopped following the API server: pod lists come from a frozen
// snapshot (the field index on kubervisor/name is answered from the labels), everything else is live. It
// also reads every KubervisorService as enforced (not in dry run), so that the suite's manager, which sees
// the real dry-run object, never ejects on its own while the test's reconciler does.
type staleCache struct {
	client.Client
	pods []corev1.Pod
}

func (s *staleCache) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if err := s.Client.Get(ctx, key, obj, opts...); err != nil {
		return err
	}
	if kvs, ok := obj.(*kvv1.KubervisorService); ok {
		kvs.Spec.DryRun = false
	}
	return nil
}

func (s *staleCache) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	if kl, ok := list.(*kvv1.KubervisorServiceList); ok {
		// The API server has no spec.service field selector (the manager's cache indexes it): filter here.
		o := &client.ListOptions{}
		o.ApplyOptions(opts)
		want, _ := o.FieldSelector.RequiresExactMatch(controller.IndexServiceName)
		if err := s.Client.List(ctx, kl, client.InNamespace(o.Namespace)); err != nil {
			return err
		}
		kl.Items = slices.DeleteFunc(kl.Items, func(k kvv1.KubervisorService) bool { return o.FieldSelector != nil && k.Spec.Service != want })
		return nil
	}
	pl, ok := list.(*corev1.PodList)
	if !ok {
		return s.Client.List(ctx, list, opts...)
	}
	o := &client.ListOptions{}
	o.ApplyOptions(opts)
	pl.Items = nil
	for _, p := range s.pods {
		if o.Namespace != "" && p.Namespace != o.Namespace {
			continue
		}
		if o.LabelSelector != nil && !o.LabelSelector.Matches(labels.Set(p.Labels)) {
			continue
		}
		if o.FieldSelector != nil {
			if v, ok := o.FieldSelector.RequiresExactMatch(controller.IndexOwner); ok && p.Labels[kvv1.LabelName] != v {
				continue
			}
		}
		pl.Items = append(pl.Items, *p.DeepCopy())
	}
	return nil
}
