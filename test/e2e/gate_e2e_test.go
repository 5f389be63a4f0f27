//go:build e2e

package e2e

import (
	"slices"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/podstate"
	"github.com/kubervisor/kubervisor/test/fleet"
)

// gateScenario is a Deployment whose pods may declare the readiness gate, two Services selecting the same
// pods, a PodDisruptionBudget and a demo fleet, in its own namespace.
type gateScenario struct {
	ns    string
	fleet *fleet.Fleet
}

func newGateScenario(n int, gated, trafficKey bool) *gateScenario {
	g := &gateScenario{ns: "e2e-gate-" + rand.String(5)}
	Expect(k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: g.ns}})).To(Succeed())
	DeferCleanup(func() { _ = k8s.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: g.ns}}) })
	app := map[string]string{"app": "web"}
	tmpl := corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web", kvv1.LabelTraffic: kvv1.TrafficYes, fleetLabel: "true"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "web:1"}}},
	}
	if gated {
		tmpl.Spec.ReadinessGates = []corev1.PodReadinessGate{{ConditionType: kvv1.ConditionInTraffic}}
	}
	Expect(k8s.Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: g.ns, Name: "web"},
		Spec:       appsv1.DeploymentSpec{Replicas: new(int32(n)), Selector: &metav1.LabelSelector{MatchLabels: app}, Template: tmpl},
	})).To(Succeed())
	sel := map[string]string{"app": "web"}
	if trafficKey {
		sel[kvv1.LabelTraffic] = kvv1.TrafficYes
	}
	for _, name := range []string{"web", "web-b"} {
		Expect(k8s.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: g.ns, Name: name},
			Spec: corev1.ServiceSpec{Selector: sel, Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}})).To(Succeed())
	}
	Expect(k8s.Create(ctx, &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Namespace: g.ns, Name: "web"},
		Spec: policyv1.PodDisruptionBudgetSpec{MinAvailable: new(intstr.FromInt32(int32(n - 1))), Selector: &metav1.LabelSelector{MatchLabels: app}}})).
		To(Succeed())
	var err error
	g.fleet, err = fleet.Start(ctx, cl.Clientset(), fleet.Options{Namespace: g.ns, Deployment: "web", Service: "web", Kubelet: cl.Kubelet(),
		BaselineErrorRate: -1})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(g.fleet.Stop)
	Expect(g.fleet.WaitForPods(ctx, n, time.Minute)).To(Succeed())
	return g
}

func (g *gateScenario) pods() []string {
	var list corev1.PodList
	Expect(k8s.List(ctx, &list, client.InNamespace(g.ns), client.MatchingLabels{"app": "web"})).To(Succeed())
	var out []string
	for _, p := range list.Items {
		if p.DeletionTimestamp.IsZero() {
			out = append(out, p.Name)
		}
	}
	slices.Sort(out)
	return out
}

// endpoints returns the ready endpoints of a Service's EndpointSlices, sorted.
func (g *gateScenario) endpoints(svc string) func() []string {
	return func() []string { return readyEndpoints(g.ns, svc) }
}

func (g *gateScenario) pod(name string) *corev1.Pod {
	p := &corev1.Pod{}
	Expect(k8s.Get(ctx, client.ObjectKey{Namespace: g.ns, Name: name}, p)).To(Succeed())
	return p
}

func (g *gateScenario) gate(name string) func() corev1.ConditionStatus {
	return func() corev1.ConditionStatus { return podstate.GateStatus(g.pod(name)) }
}

func (g *gateScenario) available() int32 {
	d := &appsv1.Deployment{}
	Expect(k8s.Get(ctx, client.ObjectKey{Namespace: g.ns, Name: "web"}, d)).To(Succeed())
	return d.Status.AvailableReplicas
}

func (g *gateScenario) healthy() int32 {
	p := &policyv1.PodDisruptionBudget{}
	Expect(k8s.Get(ctx, client.ObjectKey{Namespace: g.ns, Name: "web"}, p)).To(Succeed())
	return p.Status.CurrentHealthy
}

func (g *gateScenario) kvs() *kvv1.KubervisorService {
	k := &kvv1.KubervisorService{}
	Expect(k8s.Get(ctx, client.ObjectKey{Namespace: g.ns, Name: "web"}, k)).To(Succeed())
	return k
}

func (g *gateScenario) createKVS(mode kvv1.TrafficControl) {
	Expect(k8s.Create(ctx, &kvv1.KubervisorService{
		ObjectMeta: metav1.ObjectMeta{Namespace: g.ns, Name: "web"},
		Spec: kvv1.KubervisorServiceSpec{
			Service: "web", TrafficControl: mode,
			Breakers: []kvv1.BreakerStrategy{{Name: "custom", EvaluationPeriod: intOrString("1s"),
				CustomService: &kvv1.CustomService{URL: g.fleet.URL() + fleet.CustomDetectorPath}}},
			DefaultActivator: &kvv1.ActivatorStrategy{Mode: kvv1.ActivatorModePeriodic, Period: intOrString("4s")},
		},
	})).To(Succeed())
	Eventually(func() string {
		for _, c := range g.kvs().Status.Conditions {
			if c.Type == kvv1.ConditionReady {
				return string(c.Status)
			}
		}
		return ""
	}).WithTimeout(time.Minute).Should(Equal("True"))
}

// leaveBoth injects a fault on pod and returns how long after the ejection decision (the pod's break-at,
// written by the breaker) it had left the EndpointSlices of both Services (polled every 10ms).
func (g *gateScenario) leaveBoth(pod string) time.Duration {
	Expect(g.fleet.SetErrorRate(pod, 0.9)).To(Succeed())
	gone := func() bool {
		return !slices.Contains(g.endpoints("web")(), pod) && !slices.Contains(g.endpoints("web-b")(), pod)
	}
	Eventually(gone).WithTimeout(30 * time.Second).WithPolling(10 * time.Millisecond).Should(BeTrue())
	left := time.Now()
	breakAt := podstate.Of(g.pod(pod), left).BreakAt
	Expect(breakAt.IsZero()).To(BeFalse())
	return left.Sub(breakAt)
}

var _ = Describe("Readiness-gate mode on a real cluster", func() {
	It("takes an ejected pod out of every Service, the Deployment's availability and the PDB, with no selector edit", func() {
		g := newGateScenario(4, true, false)
		pods := g.pods()

		By("no KubervisorService yet: the manager sets the gate True on new pods, so they become Ready")
		Eventually(g.endpoints("web")).WithTimeout(time.Minute).Should(Equal(pods))
		Eventually(g.endpoints("web-b")).Should(Equal(pods))
		Eventually(g.available).Should(Equal(int32(4)))

		g.createKVS(kvv1.TrafficControlReadinessGate)
		Eventually(func() []string { return conditionReasons(g.kvs()) }).Should(ContainElement("TrafficControlled=True/ReadinessGateMode"))

		By("an ejection: the pod leaves both Services; the Deployment and the PDB count it unavailable")
		took := g.leaveBoth(pods[1])
		GinkgoWriter.Printf("readinessGate mode: ejection decision to the pod out of both EndpointSlices: %s\n", took.Round(time.Millisecond))
		Expect(g.gate(pods[1])()).To(Equal(corev1.ConditionFalse))
		Expect(podstate.ContainersReady(g.pod(pods[1]))).To(BeTrue(), "the containers are fine; the gate holds it out")
		Eventually(g.available).Should(Equal(int32(3)))
		Eventually(g.healthy).Should(Equal(int32(3)))
		Expect(g.pod(pods[1]).Spec.NodeName).NotTo(BeEmpty())
		Expect(g.kvs().Status.Pods).To(And(HaveField("InTraffic", int32(3)), HaveField("Ejected", int32(1)), HaveField("Ready", int32(4))))

		By("healed and restored after the period: back everywhere")
		Expect(g.fleet.Heal(pods[1])).To(Succeed())
		Eventually(g.endpoints("web")).WithTimeout(20 * time.Second).Should(Equal(pods))
		Eventually(g.endpoints("web-b")).Should(Equal(pods))
		Eventually(g.available).Should(Equal(int32(4)))
		Eventually(g.healthy).Should(Equal(int32(4)))

		By("deleting the KubervisorService while a pod is out leaves every pod Ready")
		g.leaveBoth(pods[2])
		Expect(k8s.Delete(ctx, g.kvs())).To(Succeed())
		Eventually(g.gate(pods[2])).Should(Equal(corev1.ConditionTrue))
		Eventually(g.endpoints("web")).Should(Equal(pods))
		Eventually(g.endpoints("web-b")).Should(Equal(pods))
		Eventually(g.available).Should(Equal(int32(4)))
	})

	It("selector mode for comparison: the same fault leaves the Services selecting the traffic key", func() {
		g := newGateScenario(4, false, true)
		pods := g.pods()
		Eventually(g.endpoints("web")).WithTimeout(time.Minute).Should(Equal(pods))
		g.createKVS(kvv1.TrafficControlSelector)
		took := g.leaveBoth(pods[1])
		GinkgoWriter.Printf("selector mode: ejection decision to the pod out of both EndpointSlices: %s\n", took.Round(time.Millisecond))
		Consistently(g.available).WithTimeout(2*time.Second).Should(Equal(int32(4)), "selector mode: the Deployment still counts the pod available")
	})
})

func conditionReasons(k *kvv1.KubervisorService) []string {
	var out []string
	for _, c := range k.Status.Conditions {
		out = append(out, c.Type+"="+string(c.Status)+"/"+c.Reason)
	}
	return out
}
