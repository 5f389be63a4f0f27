//go:build e2e

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/activator"
	"github.com/kubervisor/kubervisor/internal/podstate"
	"github.com/kubervisor/kubervisor/test/cluster"
)

// Recovery (SPEC §6) on the real cluster: the back-off a pod that keeps failing goes through.
var _ = Describe("Recovery on a real cluster", func() {
	It("restores a pod that keeps failing after exponential waits with jitter, capped at maxPeriod", func() {
		s := newScenario(4)
		deleteNamespaceLater(s)
		act := &kvv1.ActivatorStrategy{Mode: kvv1.ActivatorModePeriodic, Period: intOrString("2s"), Backoff: kvv1.BackoffExponential,
			MaxPeriod: intOrString("6s"), JitterPercent: new(int32(20))}
		s.createKVS(s.continuous(), func(k *kvv1.KubervisorService) { k.Spec.DefaultActivator = act })
		pods := s.pods()
		faulty := pods[2]
		Expect(s.fleet.SetDeviation(faulty, 4)).To(Succeed())
		uid := s.pod(faulty).UID
		resolved, err := s.kvs().Spec.ActivatorFor("price-deviation")
		Expect(err).NotTo(HaveOccurred())

		// Record every ejection (retry count, break-at) and restoration (restored-at) the pod goes through.
		type cycle struct {
			retry             int32
			breakAt, restored time.Time
		}
		var cycles []cycle
		deadline := time.Now().Add(90 * time.Second)
		for len(cycles) < 4 || cycles[3].restored.IsZero() {
			Expect(time.Now().Before(deadline)).To(BeTrue(), "4 cycles of ejection and restoration within 90s; saw %+v", cycles)
			st := podstate.Of(s.pod(faulty), time.Now())
			switch {
			case st.Traffic == kvv1.TrafficNo && (len(cycles) == 0 || !cycles[len(cycles)-1].breakAt.Equal(st.BreakAt)):
				// NOTE: a pod still flagged is ejected again within tens of milliseconds of its restoration,
				// faster than this poll may see it in traffic; restored-at stays on the pod through the new
				// ejection, so the last cycle's restoration is read from it then.
				if n := len(cycles); n > 0 && cycles[n-1].restored.IsZero() && st.RestoredAt.After(cycles[n-1].breakAt) {
					cycles[n-1].restored = st.RestoredAt
				}
				cycles = append(cycles, cycle{retry: st.RetryCount, breakAt: st.BreakAt})
			case st.Traffic == kvv1.TrafficYes && len(cycles) > 0 && cycles[len(cycles)-1].restored.IsZero() && st.RestoredAt.After(cycles[len(cycles)-1].breakAt):
				cycles[len(cycles)-1].restored = st.RestoredAt
			}
			time.Sleep(20 * time.Millisecond)
		}

		for i, c := range cycles[:4] {
			want := activator.Wait(resolved, c.retry, uid)
			got := c.restored.Sub(c.breakAt)
			GinkgoWriter.Printf("retry %d: out %s, the schedule says %s\n", c.retry, got.Round(time.Millisecond), want.Round(time.Millisecond))
			Expect(c.retry).To(Equal(int32(i+1)), "each re-ejection counts one more retry")
			// The exact jittered wait, plus the activator's reaction time.
			Expect(got).To(And(BeNumerically(">=", want), BeNumerically("<", want+time.Second)))
			// Within the jitter bound around the exponential back-off, and never over the cap.
			nominal := min(2*time.Second<<(c.retry-1), 6*time.Second)
			Expect(want).To(And(BeNumerically(">=", time.Duration(float64(nominal)*0.8)), BeNumerically("<=", min(time.Duration(float64(2*time.Second<<(c.retry-1))*1.2), 6*time.Second))))
		}
		Expect(s.fleet.Heal(faulty)).To(Succeed())
	})

	It("lets an operator eject and restore a pod by hand with kubectl kubervisor, under the operator role", func() {
		s := newScenario(4)
		deleteNamespaceLater(s)
		s.createKVS(s.continuous(), nil)
		pods := s.pods()

		By("a plain user bound to the kubervisor-operator ClusterRole of config/rbac")
		_, err := cl.ApplyFile(ctx, filepath.Join(root, "config", "rbac", "kubervisor_operator_role.yaml"), cluster.ApplyOptions{})
		Expect(err).NotTo(HaveOccurred())
		user := "alice-" + s.ns
		binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: user},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "operator"},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}}}
		Expect(k8s.Create(ctx, binding)).To(Succeed())
		DeferCleanup(func() { Expect(k8s.Delete(ctx, binding)).To(Succeed()) })
		alice, err := cl.AddUser(envtest.User{Name: user})
		Expect(err).NotTo(HaveOccurred())
		kubeconfig, err := alice.KubeConfig()
		Expect(err).NotTo(HaveOccurred())
		kcPath := filepath.Join(GinkgoT().TempDir(), "alice.kubeconfig")
		Expect(os.WriteFile(kcPath, kubeconfig, 0o600)).To(Succeed())
		plugin := func(args ...string) (string, error) {
			cmd := exec.Command(filepath.Join(root, "bin", "kubectl-kubervisor"), append(args, "--kubeconfig", kcPath, "-n", s.ns)...)
			out, err := cmd.CombinedOutput()
			return string(out), err
		}

		By("eject: the pod leaves the EndpointSlice; the event names the user")
		start := time.Now()
		out, err := plugin("eject", pods[1], "--reason", "canary looks off")
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).To(ContainSubstring("Done"))
		GinkgoWriter.Printf("eject request to the pod leaving the EndpointSlice: %s\n", s.timeToLeave(pods[1], start).Round(time.Millisecond))
		Eventually(func() []string {
			var list eventsv1.EventList
			Expect(k8s.List(ctx, &list, client.InNamespace(s.ns))).To(Succeed())
			var notes []string
			for _, e := range list.Items {
				if e.Reason == kvv1.EventManualEject {
					notes = append(notes, e.Note)
				}
			}
			return notes
		}).Should(ContainElement(ContainSubstring(user + " asked to eject pod " + pods[1] + " (reason: canary looks off)")))
		Eventually(func() []kvv1.ManualHold { return s.kvs().Status.Manual }).Should(ConsistOf(
			And(HaveField("Pod", pods[1]), HaveField("By", user), HaveField("Reason", "canary looks off"))))
		Consistently(s.endpoints).WithTimeout(3 * time.Second).ShouldNot(ContainElement(pods[1]))

		By("restore: back in the EndpointSlice")
		out, err = plugin("restore", pods[1], "--reason", "fine after all")
		Expect(err).NotTo(HaveOccurred(), out)
		Eventually(s.endpoints).Should(Equal(pods))
		Eventually(func() []kvv1.ManualHold { return s.kvs().Status.Manual }).Should(BeEmpty())

		By("an eject at the floor is refused, and says why")
		k := s.kvs()
		k.Spec.Breakers[0].MinPodsAvailableCount = new(int32(4))
		Expect(k8s.Update(ctx, k)).To(Succeed())
		Eventually(func() int64 { return s.kvs().Status.ObservedGeneration }).Should(Equal(k.Generation))
		out, err = plugin("eject", pods[2])
		Expect(err).To(HaveOccurred())
		Expect(out).To(ContainSubstring("Refused: the floor keeps 4 pods in traffic"))
		Expect(s.endpoints()).To(Equal(pods))
	})
})
