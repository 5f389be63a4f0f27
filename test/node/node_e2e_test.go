//go:build e2e

package node

import (
	"slices"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
)

// leaseName is the manager's leader election Lease (--leader-election-id's default).
const leaseName = "kubervisor.breaker.kubervisor.io"

// leader is the pod holding the manager's Lease ("" before the first election).
func leader() string {
	l := &coordinationv1.Lease{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: releaseNS, Name: leaseName}, l); err != nil || l.Spec.HolderIdentity == nil {
		return ""
	}
	pod, _, _ := strings.Cut(*l.Spec.HolderIdentity, "_")
	return pod
}

func periodic(period string) *kvv1.ActivatorStrategy {
	return &kvv1.ActivatorStrategy{Mode: kvv1.ActivatorModePeriodic, Period: new(intstr.FromString(period))}
}

var _ = Describe("Kubervisor installed by its chart on a real node", func() {
	It("runs the KubeCon demo's three phases on real pods: ejection of the failing pods, a healed one back for good, the other retried then paused", func() {
		f := newFleet(4, false)
		pods := f.pods()
		bad, healed := pods[0], pods[1]
		f.createKVS(f.discrete(2), &kvv1.ActivatorStrategy{
			Mode: kvv1.ActivatorModeRetryAndPause, Period: new(intstr.FromString("8s")), MaxRetryCount: new(int32(1)),
		}, kvv1.TrafficControlSelector)

		By("phase 1: two pods answer 500 to 90 % of their requests; both leave the Service's endpoints")
		began := time.Now()
		f.fail(bad, 0.9)
		f.fail(healed, 0.9)
		Eventually(f.endpoints).WithTimeout(time.Minute).WithPolling(50*time.Millisecond).Should(Equal(pods[2:]), describeManagers)
		GinkgoWriter.Printf("real node, phase 1: fault to both pods out of the EndpointSlice: %s\n", time.Since(began).Round(time.Millisecond))
		Expect(f.traffic(bad)()).To(Equal(kvv1.TrafficNo))

		By("phase 2: one is healed; its activator brings it back after the period and it stays")
		f.heal(healed)
		Eventually(f.endpoints).WithTimeout(time.Minute).Should(ContainElement(healed))
		back := time.Since(f.state(healed).BreakAt)
		GinkgoWriter.Printf("real node, phase 2: the healed pod back in the EndpointSlice %s after its ejection (period 8s)\n", back.Round(time.Millisecond))
		Consistently(f.endpoints).WithTimeout(10 * time.Second).Should(ContainElement(healed))

		By("phase 3: the other keeps failing: back once, ejected again, then paused (retryAndPause, maxRetryCount 1)")
		Eventually(f.traffic(bad)).WithTimeout(time.Minute).Should(Equal(kvv1.TrafficPause), describeManagers)
		Expect(f.endpoints()).NotTo(ContainElement(bad))
		Expect(f.state(bad).RetryCount).To(Equal(int32(2)))

		By("the client saw errors from the failing pods only")
		Expect(f.load.failures(bad, healed)).To(BeEmpty())
		GinkgoWriter.Printf("real node, phases: %d requests sent through the ready endpoints\n", f.load.total())
	})

	It("readinessGate mode: Kubervisor writes the gate, the real kubelet computes Ready and keeps the gate across its own status syncs", func() {
		f := newFleet(4, true)
		pods := f.pods()
		pod := pods[2]
		f.createKVS(f.discrete(2), periodic("40s"), kvv1.TrafficControlReadinessGate)
		svc := &corev1.Service{}

		By("a fault: the gate goes False, the kubelet makes the pod NotReady, it leaves the EndpointSlice")
		f.fail(pod, 0.9)
		Eventually(f.condition(pod, kvv1.ConditionInTraffic)).WithTimeout(time.Minute).WithPolling(20*time.Millisecond).
			Should(Equal(corev1.ConditionFalse), describeManagers)
		gateAt := time.Now()
		Eventually(f.condition(pod, corev1.PodReady)).WithPolling(20 * time.Millisecond).Should(Equal(corev1.ConditionFalse))
		GinkgoWriter.Printf("real node, readinessGate: gate False to Ready False (the kubelet): %s\n", time.Since(gateAt).Round(time.Millisecond))
		Eventually(f.endpoints).WithPolling(20 * time.Millisecond).ShouldNot(ContainElement(pod))
		GinkgoWriter.Printf("real node, readinessGate: gate False to out of the EndpointSlice: %s\n", time.Since(gateAt).Round(time.Millisecond))
		Expect(f.condition(pod, corev1.ContainersReady)()).To(Equal(corev1.ConditionTrue), "the container is fine; the gate holds it out")
		Expect(k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: f.name}, svc)).To(Succeed())
		Expect(svc.Spec.Selector).NotTo(HaveKey(kvv1.LabelTraffic), "no selector edit: the gate alone holds the pod out")

		By("the kubelet's own status writes keep the gate: its probe fails, then passes again")
		f.control(pod, "/ready?value=false")
		Eventually(f.condition(pod, corev1.ContainersReady)).WithTimeout(30 * time.Second).Should(Equal(corev1.ConditionFalse))
		Expect(f.condition(pod, kvv1.ConditionInTraffic)()).To(Equal(corev1.ConditionFalse))
		f.control(pod, "/ready?value=true")
		Eventually(f.condition(pod, corev1.ContainersReady)).WithTimeout(30 * time.Second).Should(Equal(corev1.ConditionTrue))
		Expect(f.condition(pod, kvv1.ConditionInTraffic)()).To(Equal(corev1.ConditionFalse))
		Expect(f.condition(pod, corev1.PodReady)()).To(Equal(corev1.ConditionFalse))

		By("and so do its periodic syncs (syncFrequency 5s): three of them later the pod is still out")
		Consistently(func() []corev1.ConditionStatus {
			return []corev1.ConditionStatus{f.condition(pod, kvv1.ConditionInTraffic)(), f.condition(pod, corev1.PodReady)()}
		}).WithTimeout(15 * time.Second).WithPolling(500 * time.Millisecond).Should(Equal([]corev1.ConditionStatus{corev1.ConditionFalse, corev1.ConditionFalse}))
		Expect(f.endpoints()).NotTo(ContainElement(pod))

		By("healed and restored after the period: the gate True, the kubelet makes it Ready, back in the EndpointSlice")
		f.heal(pod)
		Eventually(f.condition(pod, kvv1.ConditionInTraffic)).WithTimeout(time.Minute).Should(Equal(corev1.ConditionTrue))
		restoredAt := time.Now()
		Eventually(f.endpoints).WithPolling(20 * time.Millisecond).Should(Equal(pods))
		GinkgoWriter.Printf("real node, readinessGate: gate True to back in the EndpointSlice: %s\n", time.Since(restoredAt).Round(time.Millisecond))
		Expect(f.load.failures(pod)).To(BeEmpty())
	})

	It("holds the floor through a drain of real pods (graceful termination) during an incident, restoring the ejected pod", func() {
		f := newFleet(4, false)
		Expect(k8s.Create(ctx, &policyv1.PodDisruptionBudget{
			ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: f.name},
			Spec: policyv1.PodDisruptionBudgetSpec{
				MaxUnavailable: new(intstr.FromInt(1)),
				Selector:       &metav1.LabelSelector{MatchLabels: map[string]string{"app": f.name}},
			},
		})).To(Succeed())
		pods := f.pods()
		bad := pods[1]
		f.createKVS(f.discrete(3), periodic("10m"), kvv1.TrafficControlSelector)

		By("the incident: one pod fails and is ejected, three serve (the floor)")
		f.fail(bad, 0.9)
		Eventually(f.endpoints).WithTimeout(time.Minute).Should(Equal(slices.DeleteFunc(slices.Clone(pods), func(p string) bool { return p == bad })), describeManagers)
		floor := f.watchFloor()

		By("kubectl drain of the node: it evicts one pod at a time (the PDB), each terminating gracefully")
		DeferCleanup(func() { _, _ = kubectl("uncordon", cl.NodeName()) })
		drain := cl.Kubectl(ctx, "drain", cl.NodeName(), "--pod-selector=app="+f.name, "--delete-emptydir-data", "--ignore-daemonsets", "--timeout=3m")
		out := &strings.Builder{}
		drain.Stdout, drain.Stderr = out, out
		began := time.Now()
		Expect(drain.Start()).To(Succeed())
		drained := make(chan error, 1)
		go func() { drained <- drain.Wait() }()
		var first string
		Eventually(func() string {
			for _, p := range f.podList() {
				if !p.DeletionTimestamp.IsZero() {
					first = p.Name
				}
			}
			return first
		}).WithTimeout(time.Minute).WithPolling(20 * time.Millisecond).ShouldNot(BeEmpty())
		if first == bad {
			By("the ejected pod was evicted first: three still serve, nothing to restore")
			Consistently(func() int { return len(f.events(kvv1.EventFloorRestored)) }).WithTimeout(5 * time.Second).Should(BeZero())
		} else {
			By("a serving pod was evicted first: two serve, under the floor of three; Kubervisor restores the ejected one")
			Eventually(f.traffic(bad)).WithTimeout(time.Minute).Should(Equal(kvv1.TrafficYes), describeManagers)
			GinkgoWriter.Printf("real node, drain: start to the ejected pod restored: %s\n", time.Since(began).Round(time.Millisecond))
			// The event is sent after the label write, by the manager's asynchronous recorder.
			Eventually(func() []eventsv1.Event { return f.events(kvv1.EventFloorRestored) }).WithTimeout(30 * time.Second).ShouldNot(BeEmpty())
		}

		By("uncordoned (replacements can start): the drain finishes, every drained pod replaced")
		_, err := kubectl("uncordon", cl.NodeName())
		Expect(err).NotTo(HaveOccurred())
		Eventually(drained).WithTimeout(4*time.Minute).Should(Receive(BeNil()), func() string { return out.String() })
		GinkgoWriter.Printf("real node, drain: finished after %s (first evicted: the ejected pod %v)\n", time.Since(began).Round(time.Millisecond), first == bad)
		Eventually(func() int {
			n := 0
			for _, p := range f.pods() {
				if !slices.Contains(pods, p) {
					n++
				}
			}
			return n
		}).WithTimeout(2 * time.Minute).Should(Equal(4))
		Eventually(f.endpoints).WithTimeout(2 * time.Minute).Should(HaveLen(4))
		least := floor()
		GinkgoWriter.Printf("real node, drain: fewest ready endpoints seen: %d; requests %d, failures off the faulty pod %v\n",
			least, f.load.total(), f.load.failures(bad))
		Expect(least).To(BeNumerically(">=", 2), "one eviction at a time (PDB) and the ejected pod restored")
		Expect(f.load.failures(bad)).To(BeEmpty(), "every drained pod served until its clients had dropped it (its shutdown delay)")
	})

	It("survives the leader Pod deleted with --grace-period=0 during an incident: the standby takes over, the floor held, nothing ejected twice or restored late", func() {
		f := newFleet(4, false)
		pods := f.pods()
		first, second := pods[0], pods[1]
		f.createKVS(f.discrete(2), periodic("15s"), kvv1.TrafficControlSelector)

		By("the incident: a pod fails and is ejected")
		f.fail(first, 0.9)
		Eventually(f.endpoints).WithTimeout(time.Minute).ShouldNot(ContainElement(first))
		f.heal(first)
		breakAt := f.state(first).BreakAt
		floor := f.watchFloor()

		By("the leader Pod is deleted at once")
		old := leader()
		Expect(old).NotTo(BeEmpty())
		killed := time.Now()
		_, err := kubectl("-n", releaseNS, "delete", "pod", old, "--grace-period=0", "--force", "--wait=false")
		Expect(err).NotTo(HaveOccurred())
		Eventually(leader).WithTimeout(time.Minute).WithPolling(100 * time.Millisecond).ShouldNot(Or(Equal(old), BeEmpty()))
		GinkgoWriter.Printf("real node, leader deleted: standby took the Lease after %s\n", time.Since(killed).Round(time.Millisecond))

		By("the new leader ejects a second faulty pod and restores the first on schedule")
		f.fail(second, 0.9)
		Eventually(f.endpoints).WithTimeout(time.Minute).ShouldNot(ContainElement(second))
		Eventually(f.endpoints).WithTimeout(time.Minute).Should(ContainElement(first))
		late := time.Since(breakAt) - 15*time.Second
		GinkgoWriter.Printf("real node, leader deleted: the first pod restored %s after its due time\n", late.Round(time.Millisecond))
		// Late by at most the takeover: the Lease's duration (15s) and one retry period, plus a pass.
		Expect(late).To(BeNumerically("<", 25*time.Second))
		Expect(f.state(first).RetryCount).To(Equal(int32(1)), "ejected once")
		Expect(f.state(second).RetryCount).To(Equal(int32(1)), "ejected once")
		Expect(floor()).To(BeNumerically(">=", 2))

		By("the Deployment replaces the deleted replica: two Ready again, through their real probes")
		Eventually(managerDeployment).WithTimeout(2*time.Minute).Should(HaveField("Status.ReadyReplicas", int32(2)), describeManagers)
	})
})
