//go:build e2e

package e2e

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/podstate"
	"github.com/kubervisor/kubervisor/test/cluster"
	"github.com/kubervisor/kubervisor/test/fleet"
)

// deleteNamespaceLater removes a scenario's namespace when the spec ends (the manager releases its pods
// through the KubervisorService finalizer).
func deleteNamespaceLater(s *scenario) {
	DeferCleanup(func() {
		_ = k8s.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: s.ns}})
	})
}

var _ = Describe("Kubervisor on a real cluster", func() {
	It("ejects pods returning 5xx from the EndpointSlice through real PromQL, and the floor withholds the rest", func() {
		s := newScenario(6)
		deleteNamespaceLater(s)
		s.createKVS(s.discrete(), func(k *kvv1.KubervisorService) {
			k.Spec.Breakers[0].MinPodsAvailableRatio = new(int32(50)) // ceil(50% of 6) = 3 stay in traffic
			k.Spec.Breakers[0].MaxAnomalousPercent = new(int32(100))  // 4 of 6 misbehave below: the floor, not the storm guard
		})
		pods := s.pods()
		Expect(pods).To(HaveLen(6))

		By("two pods start answering 60% 5xx")
		start := time.Now()
		Expect(s.fleet.SetErrorRate(pods[0], 0.6)).To(Succeed())
		Expect(s.fleet.SetErrorRate(pods[1], 0.6)).To(Succeed())
		first := s.timeToLeave(pods[0], start)
		second := s.timeToLeave(pods[1], start)
		AddReportEntry("fault injected -> pods left the EndpointSlice", fmt.Sprintf("%s and %s", first.Round(time.Millisecond), second.Round(time.Millisecond)))
		GinkgoWriter.Printf("fault injected -> pods left the EndpointSlice after %s and %s\n", first, second)
		Consistently(s.endpoints).Should(Equal(without(pods, pods[0], pods[1])))
		Expect(s.traffic(pods[0])()).To(Equal(kvv1.TrafficNo))
		Expect(s.pod(pods[0]).Labels).To(HaveKeyWithValue(kvv1.LabelStrategy, "http-errors"))

		By("two more misbehave: the floor lets one more go, the worst, and withholds the other")
		Expect(s.fleet.SetErrorRate(pods[2], 0.9)).To(Succeed())
		Expect(s.fleet.SetErrorRate(pods[3], 0.5)).To(Succeed())
		Eventually(s.endpoints).Should(HaveLen(3))
		Consistently(s.endpoints).Should(Equal(without(pods, pods[0], pods[1], pods[2])))
		Eventually(s.breaker()).Should(HaveField("WithheldPods", ContainElement(pods[3])))
		Eventually(s.condition(kvv1.ConditionEjectionAllowed)).Should(And(
			HaveField("Status", metav1.ConditionFalse), HaveField("Reason", kvv1.ReasonFloorReached)))
		Expect(s.kvs().Status.Pods).To(Equal(kvv1.PodCounts{Managed: 6, Ready: 6, InTraffic: 3, Ejected: 3}))

		By("the kubectl plugin shows the same picture")
		plugin := filepath.Join(root, "bin", "kubectl-kubervisor")
		out, err := exec.Command(plugin, "--kubeconfig", cl.KubeconfigPath(), "-n", s.ns, "get", s.name).CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))
		Expect(string(out)).To(And(ContainSubstring(pods[0]), ContainSubstring("http-errors"), ContainSubstring(pods[3])))
		out, err = exec.Command(plugin, "--kubeconfig", cl.KubeconfigPath(), "-n", s.ns, "list").CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))
		Expect(string(out)).To(ContainSubstring(s.name))
	})

	It("ejects a pod whose value deviates and brings it back after the period (periodic)", func() {
		s := newScenario(4)
		deleteNamespaceLater(s)
		s.createKVS(s.continuous(), func(k *kvv1.KubervisorService) {
			k.Spec.DefaultActivator = &kvv1.ActivatorStrategy{Mode: kvv1.ActivatorModePeriodic, Period: intOrString("4s")}
		})
		pods := s.pods()
		Expect(s.fleet.SetDeviation(pods[2], 3)).To(Succeed())
		s.timeToLeave(pods[2], time.Now())
		ejectedAt := time.Now()
		Expect(s.fleet.Heal(pods[2])).To(Succeed())
		Eventually(s.endpoints).Should(ContainElement(pods[2]))
		Expect(time.Since(ejectedAt)).To(BeNumerically(">=", 3*time.Second), "back after the 4s period, not before")
		Consistently(s.endpoints).Should(Equal(pods))
		restored := s.state(pods[2])
		Expect(restored.RetryCount).To(Equal(int32(1)), "retry count kept after the restore")
		Expect(restored.RestoredAt).NotTo(BeZero(), "restored-at written")
	})

	It("kills a pod that keeps deviating after its retries (retryAndKill), and the Deployment replaces it", func() {
		s := newScenario(4)
		deleteNamespaceLater(s)
		s.createKVS(s.continuous(), func(k *kvv1.KubervisorService) {
			k.Spec.DefaultActivator = &kvv1.ActivatorStrategy{Mode: kvv1.ActivatorModeRetryAndKill, Period: intOrString("2s"), MaxRetryCount: new(int32(1))}
		})
		pods := s.pods()
		Expect(s.fleet.SetDeviation(pods[1], 4)).To(Succeed())
		Eventually(s.traffic(pods[1])).WithTimeout(90 * time.Second).Should(Equal("<gone>"))
		Eventually(s.pods).Should(And(HaveLen(4), Not(ContainElement(pods[1]))))
		Eventually(s.endpoints).Should(HaveLen(4))
		Eventually(s.endpoints).Should(Equal(s.pods()))
	})

	It("pauses a pod that keeps deviating after its retries (retryAndPause), and leaves it paused", func() {
		s := newScenario(4)
		deleteNamespaceLater(s)
		s.createKVS(s.continuous(), func(k *kvv1.KubervisorService) {
			k.Spec.DefaultActivator = &kvv1.ActivatorStrategy{Mode: kvv1.ActivatorModeRetryAndPause, Period: intOrString("2s"),
				MaxRetryCount: new(int32(1)), MaxPauseCount: new(int32(1))}
		})
		pods := s.pods()
		Expect(s.fleet.SetDeviation(pods[3], 4)).To(Succeed())
		Eventually(s.traffic(pods[3])).WithTimeout(90 * time.Second).Should(Equal(kvv1.TrafficPause))
		Expect(s.fleet.Heal(pods[3])).To(Succeed())
		Consistently(s.traffic(pods[3])).Should(Equal(kvv1.TrafficPause), "a paused pod is never touched again")
		Expect(s.endpoints()).To(Equal(without(pods, pods[3])))
		Expect(s.pods()).To(Equal(pods), "a paused pod is kept alive")
		Eventually(func() kvv1.PodCounts { return s.kvs().Status.Pods }).Should(HaveField("Paused", int32(1)))
	})

	It("follows a custom detector service: worst first, floor respected", func() {
		s := newScenario(5)
		deleteNamespaceLater(s)
		pods := s.pods()
		Expect(s.fleet.SetErrorRate(pods[1], 0.3)).To(Succeed())
		Expect(s.fleet.SetErrorRate(pods[3], 0.9)).To(Succeed())
		Expect(s.fleet.SetErrorRate(pods[4], 0.5)).To(Succeed())
		Expect(s.fleet.Anomalies()).To(Equal([]string{pods[3], pods[4], pods[1]}))
		s.createKVS(kvv1.BreakerStrategy{
			Name:                  "custom",
			EvaluationPeriod:      intOrString("1s"),
			MinPodsAvailableCount: new(int32(4)),   // one pod may go
			MaxAnomalousPercent:   new(int32(100)), // 3 of 5 flagged: the floor, not the storm guard
			CustomService:         &kvv1.CustomService{URL: s.fleet.URL() + fleet.CustomDetectorPath},
		}, nil)
		Eventually(s.endpoints).Should(Equal(without(pods, pods[3])))
		Consistently(s.endpoints).Should(Equal(without(pods, pods[3])))
		Eventually(s.breaker()).Should(And(
			HaveField("AnomalousPods", Equal([]string{pods[3], pods[4], pods[1]})),
			HaveField("WithheldPods", Equal([]string{pods[4], pods[1]}))))
	})

	It("reports would-eject pods in dry run and leaves the EndpointSlice alone", func() {
		s := newScenario(4)
		deleteNamespaceLater(s)
		s.createKVS(s.discrete(), func(k *kvv1.KubervisorService) { k.Spec.DryRun = true })
		pods := s.pods()
		Expect(s.fleet.SetErrorRate(pods[0], 0.8)).To(Succeed())
		Eventually(s.breaker()).Should(HaveField("WouldEjectPods", ContainElement(pods[0])))
		Consistently(s.endpoints).Should(Equal(pods))
		Expect(s.traffic(pods[0])()).To(Equal(kvv1.TrafficYes))
	})

	It("ejects nothing while Prometheus is down, says so, and recovers when it returns", func() {
		s := newScenario(4)
		deleteNamespaceLater(s)
		s.createKVS(s.discrete(), nil)
		pods := s.pods()

		Expect(prom.Stop()).To(Succeed())
		restarted := false
		DeferCleanup(func() {
			if !restarted {
				Expect(prom.Start(ctx)).To(Succeed())
			}
		})
		Eventually(s.condition(kvv1.ConditionReady)).Should(And(
			HaveField("Status", metav1.ConditionFalse), HaveField("Reason", kvv1.ReasonDetectorError),
			HaveField("Message", ContainSubstring("querying Prometheus"))))
		Expect(s.fleet.SetErrorRate(pods[1], 0.8)).To(Succeed())
		Consistently(s.endpoints).Should(Equal(pods))

		Expect(prom.Start(ctx)).To(Succeed())
		restarted = true
		Eventually(s.condition(kvv1.ConditionReady)).WithTimeout(time.Minute).Should(HaveField("Status", metav1.ConditionTrue))
		Eventually(s.endpoints).WithTimeout(time.Minute).Should(Equal(without(pods, pods[1])))
	})

	It("survives a SIGKILL of the manager: no pod stays out past its schedule, no double ejection", func() {
		s := newScenario(4)
		deleteNamespaceLater(s)
		s.createKVS(s.discrete(), func(k *kvv1.KubervisorService) {
			k.Spec.DefaultActivator = &kvv1.ActivatorStrategy{Mode: kvv1.ActivatorModePeriodic, Period: intOrString("6s")}
		})
		pods := s.pods()
		Expect(s.fleet.SetErrorRate(pods[0], 0.8)).To(Succeed())
		s.timeToLeave(pods[0], time.Now())
		ejected := s.state(pods[0])
		Expect(ejected.BreakAtField).To(Equal(podstate.FieldValid), "break-at written")
		breakAt := ejected.BreakAt

		By("killing the manager while the pod is out, and healing the pod")
		Expect(cl.KillManager()).To(Succeed())
		Expect(s.fleet.Heal(pods[0])).To(Succeed())
		due := breakAt.Add(6 * time.Second)
		time.Sleep(time.Until(due) + 2*time.Second)
		Expect(s.traffic(pods[0])()).To(Equal(kvv1.TrafficNo), "nobody restores while the manager is down")

		By("restarting it: the schedule lives on the pod")
		restartedAt := time.Now()
		Expect(cl.RestartManager()).To(Succeed())
		Eventually(s.endpoints).WithTimeout(30 * time.Second).Should(Equal(pods))
		AddReportEntry("restore after manager restart", time.Since(restartedAt).Round(time.Millisecond).String())
		Consistently(s.endpoints).Should(Equal(pods))
		for _, p := range pods {
			st := s.state(p)
			Expect(st.RetryCountField).NotTo(Equal(podstate.FieldInvalid), "pod %s retry count", p)
			Expect(st.RetryCount).To(BeNumerically("<=", 1), "pod %s ejected twice", p)
		}
	})

	It("puts every ejected pod back in the EndpointSlice when the KubervisorService is deleted", func() {
		s := newScenario(5)
		deleteNamespaceLater(s)
		s.createKVS(s.discrete(), nil)
		pods := s.pods()
		Expect(s.fleet.SetErrorRate(pods[0], 0.8)).To(Succeed())
		Expect(s.fleet.SetErrorRate(pods[4], 0.8)).To(Succeed())
		Eventually(s.endpoints).Should(Equal(without(pods, pods[0], pods[4])))

		Expect(k8s.Delete(ctx, s.kvs())).To(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: s.name}, &kvv1.KubervisorService{}))
		}).Should(BeTrue())
		Eventually(s.endpoints).Should(Equal(pods))
		for _, p := range pods {
			Expect(s.pod(p).Labels).NotTo(HaveKey(kvv1.LabelName))
		}
	})

	It("accepts every object of `kustomize build config/default`", func() {
		objs, err := cl.Apply(ctx, kustomizeDefault(), cluster.ApplyOptions{})
		Expect(err).NotTo(HaveOccurred())
		kinds := map[string]int{}
		for _, o := range objs {
			kinds[o.GetKind()]++
		}
		Expect(kinds).To(HaveKey("Deployment"))
		Expect(kinds).To(HaveKey("CustomResourceDefinition"))
		Expect(kinds).To(HaveKey("ClusterRole"))
		d := &appsv1.Deployment{}
		Expect(k8s.Get(ctx, client.ObjectKey{Namespace: cluster.ManagerNamespace, Name: "kubervisor-controller-manager"}, d)).To(Succeed())
		Expect(*d.Spec.Template.Spec.SecurityContext.RunAsNonRoot).To(BeTrue())
		GinkgoWriter.Println("applied " + strconv.Itoa(len(objs)) + " objects")
	})
})
