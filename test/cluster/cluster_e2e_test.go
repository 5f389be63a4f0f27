//go:build e2e

package cluster_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/kubervisor/kubervisor/internal/podstate"
	"github.com/kubervisor/kubervisor/test/cluster"
	"github.com/kubervisor/kubervisor/test/fleet"
)

func TestCluster(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Local cluster harness (e2e)")
}

const (
	ns       = "harness-e2e"
	appLabel = "app"
	app      = "pricer"
	// trafficLabel mirrors Kubervisor's contract: in the Service selector, never in the Deployment's.
	trafficLabel = "kubervisor/traffic"
	replicas     = 4
)

var _ = Describe("The local cluster harness", Ordered, func() {
	var (
		c     *cluster.Cluster
		cs    kubernetes.Interface
		f     *fleet.Fleet
		prom  *cluster.Prometheus
		began time.Time
	)

	BeforeAll(func(ctx SpecContext) {
		began = time.Now()
		var err error
		// The cluster's kubelet keeps to ns, so that a fleet can play the kubelet in another one.
		c, err = cluster.Start(ctx, cluster.Options{Log: GinkgoWriter, Kubelet: cluster.KubeletOptions{Namespace: ns}})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() {
			if CurrentSpecReport().Failed() {
				for _, name := range []string{"kube-controller-manager", "manager"} {
					if data, err := os.ReadFile(c.LogPath(name)); err == nil {
						GinkgoWriter.Printf("----- %s log (tail) -----\n%s\n", name, tail(string(data), 4000))
					}
				}
			}
			if f != nil {
				f.Stop()
			}
			Expect(c.Stop()).To(Succeed())
		})
		cs = c.Clientset()
		AddReportEntry("cluster start", c.StartDuration().Round(time.Millisecond).String())
		GinkgoWriter.Printf("cluster started in %s; kubeconfig %s\n", c.StartDuration().Round(time.Millisecond), c.KubeconfigPath())

		_, err = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		Expect(err).NotTo(HaveOccurred())
	}, NodeTimeout(3*time.Minute))

	AfterAll(func() {
		GinkgoWriter.Printf("whole suite (cluster start included) took %s\n", time.Since(began).Round(time.Millisecond))
	})

	It("binds the pods of a Deployment, makes them Ready and lists them in the Service's EndpointSlice", func(ctx SpecContext) {
		start := time.Now()
		_, err := cs.AppsV1().Deployments(ns).Create(ctx, deployment(app, replicas), metav1.CreateOptions{})
		Expect(err).NotTo(HaveOccurred())
		_, err = cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: app},
			Spec: corev1.ServiceSpec{
				Selector: map[string]string{appLabel: app, trafficLabel: "yes"},
				Ports:    []corev1.ServicePort{{Port: 80}},
			},
		}, metav1.CreateOptions{})
		Expect(err).NotTo(HaveOccurred())

		Eventually(func(g Gomega) {
			pods := listPods(ctx, g, cs)
			g.Expect(pods).To(HaveLen(replicas))
			ips := map[string]bool{}
			for _, p := range pods {
				g.Expect(p.Spec.NodeName).To(Equal(c.NodeName()), "pod %s is bound", p.Name)
				g.Expect(p.Status.Phase).To(Equal(corev1.PodRunning))
				g.Expect(podstate.Ready(&p)).To(BeTrue(), "pod %s is Ready", p.Name)
				g.Expect(p.Status.PodIP).To(HavePrefix("10.244."))
				ips[p.Status.PodIP] = true
			}
			g.Expect(ips).To(HaveLen(replicas), "pod IPs are unique")
		}).WithTimeout(60 * time.Second).WithPolling(100 * time.Millisecond).Should(Succeed())
		GinkgoWriter.Printf("Deployment of %d pods Running and Ready after %s\n", replicas, time.Since(start).Round(time.Millisecond))

		Eventually(func(g Gomega) {
			g.Expect(readyEndpoints(ctx, g, cs, app)).To(HaveLen(replicas))
		}).WithTimeout(30 * time.Second).WithPolling(100 * time.Millisecond).Should(Succeed())
		AddReportEntry("deployment to 4 ready endpoints", time.Since(start).Round(time.Millisecond).String())

		Eventually(func(g Gomega) int32 {
			dep, err := cs.AppsV1().Deployments(ns).Get(ctx, app, metav1.GetOptions{})
			g.Expect(err).NotTo(HaveOccurred())
			return dep.Status.AvailableReplicas
		}).WithTimeout(30*time.Second).Should(Equal(int32(replicas)), "the Deployment controller sees the pods available")

		By("the fake kubelet writes nothing in steady state")
		versions := func() map[string]string {
			out := map[string]string{}
			for _, p := range listPods(ctx, Default, cs) {
				out[p.Name] = p.ResourceVersion
			}
			return out
		}
		steady := versions()
		Consistently(versions).WithTimeout(2 * time.Second).WithPolling(200 * time.Millisecond).Should(Equal(steady))
		Expect(c.Kubelet().LastError()).NotTo(HaveOccurred())
	}, SpecTimeout(2*time.Minute))

	It("drops a pod relabelled out of the Service selector from the EndpointSlice, and takes it back", func(ctx SpecContext) {
		victim := listPods(ctx, Default, cs)[0].Name
		start := time.Now()
		patchLabel(ctx, cs, victim, trafficLabel, "no")
		Eventually(func(g Gomega) {
			eps := readyEndpoints(ctx, g, cs, app)
			g.Expect(eps).To(HaveLen(replicas - 1))
			g.Expect(eps).NotTo(HaveKey(victim))
		}).WithTimeout(30 * time.Second).WithPolling(50 * time.Millisecond).Should(Succeed())
		AddReportEntry("relabel to leaving the EndpointSlice", time.Since(start).Round(time.Millisecond).String())
		GinkgoWriter.Printf("relabelled pod left the EndpointSlice after %s\n", time.Since(start).Round(time.Millisecond))

		Consistently(func() int {
			return len(listPods(ctx, Default, cs))
		}).WithTimeout(time.Second).Should(Equal(replicas), "the ReplicaSet still owns the relabelled pod")

		patchLabel(ctx, cs, victim, trafficLabel, "yes")
		Eventually(func(g Gomega) {
			g.Expect(readyEndpoints(ctx, g, cs, app)).To(HaveKey(victim))
		}).WithTimeout(30 * time.Second).WithPolling(50 * time.Millisecond).Should(Succeed())
	}, SpecTimeout(time.Minute))

	It("marks a pod NotReady on request, which the EndpointSlice reflects", func(ctx SpecContext) {
		victim := listPods(ctx, Default, cs)[1].Name
		c.Kubelet().SetReady(ns, victim, false)
		Eventually(func(g Gomega) {
			pod, err := cs.CoreV1().Pods(ns).Get(ctx, victim, metav1.GetOptions{})
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(podstate.Ready(pod)).To(BeFalse())
			g.Expect(readyEndpoints(ctx, g, cs, app)).NotTo(HaveKey(victim))
		}).WithTimeout(30 * time.Second).WithPolling(50 * time.Millisecond).Should(Succeed())

		c.Kubelet().ResetReady(ns, victim)
		Eventually(func(g Gomega) {
			g.Expect(readyEndpoints(ctx, g, cs, app)).To(HaveKey(victim))
		}).WithTimeout(30 * time.Second).WithPolling(50 * time.Millisecond).Should(Succeed())
	}, SpecTimeout(time.Minute))

	It("finishes the deletion of a bound pod, and the ReplicaSet replaces it", func(ctx SpecContext) {
		victim := listPods(ctx, Default, cs)[2]
		Expect(cs.CoreV1().Pods(ns).Delete(ctx, victim.Name, metav1.DeleteOptions{})).To(Succeed())
		Eventually(func(g Gomega) {
			_, err := cs.CoreV1().Pods(ns).Get(ctx, victim.Name, metav1.GetOptions{})
			g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "the terminating pod is gone: %v", err)
			eps := readyEndpoints(ctx, g, cs, app)
			g.Expect(eps).To(HaveLen(replicas))
			g.Expect(eps).NotTo(HaveKey(victim.Name))
		}).WithTimeout(30 * time.Second).WithPolling(100 * time.Millisecond).Should(Succeed())
		for _, p := range listPods(ctx, Default, cs) {
			Expect(p.Status.PodIP).NotTo(Equal(victim.Status.PodIP), "the replacement has a fresh IP")
		}
	}, SpecTimeout(time.Minute))

	It("serves the fleet's metrics to a real Prometheus, and the recommended queries see faults", func(ctx SpecContext) {
		var err error
		f, err = fleet.Start(ctx, cs, fleet.Options{Namespace: ns, Deployment: app, Service: app, Kubelet: c.Kubelet()})
		Expect(err).NotTo(HaveOccurred())
		Expect(f.WaitForPods(ctx, replicas, 30*time.Second)).To(Succeed())

		start := time.Now()
		prom, err = c.StartPrometheus(ctx, cluster.PrometheusOptions{Jobs: []cluster.ScrapeJob{{Name: "fleet", Targets: []string{f.Addr()}}}})
		Expect(err).NotTo(HaveOccurred())
		AddReportEntry("prometheus start (ready, target up)", time.Since(start).Round(time.Millisecond).String())
		GinkgoWriter.Printf("Prometheus %s up in %s\n", prom.URL(), time.Since(start).Round(time.Millisecond))
		api := prom.API()
		pods := podNames(f)
		Expect(pods).To(HaveLen(replicas))

		By("the discrete query answers a good and a bad series for every pod")
		Eventually(func(g Gomega) {
			byPod := discrete(ctx, g, api, fleet.DiscretePromQL)
			g.Expect(byPod).To(HaveLen(replicas))
			for _, p := range pods {
				g.Expect(byPod[p].good).To(BeNumerically(">", 0), "pod %s has good requests", p)
				g.Expect(byPod[p].ratio()).To(BeNumerically("<", 0.05), "pod %s is healthy", p)
			}
		}).WithTimeout(30 * time.Second).WithPolling(500 * time.Millisecond).Should(Succeed())

		By("an error rate injected on one pod raises its bad ratio, and only its own")
		faulty := pods[0]
		Expect(f.SetErrorRate(faulty, 0.8)).To(Succeed())
		start = time.Now()
		Eventually(func(g Gomega) {
			byPod := discrete(ctx, g, api, fleet.DiscreteQuery(ns))
			g.Expect(byPod[faulty].ratio()).To(BeNumerically(">", 0.5))
			for _, p := range pods[1:] {
				g.Expect(byPod[p].ratio()).To(BeNumerically("<", 0.05), "pod %s stays healthy", p)
			}
		}).WithTimeout(30 * time.Second).WithPolling(250 * time.Millisecond).Should(Succeed())
		AddReportEntry("fault to bad ratio > 0.5 in Prometheus", time.Since(start).Round(time.Millisecond).String())
		GinkgoWriter.Printf("bad ratio of %s above 0.5 after %s\n", faulty, time.Since(start).Round(time.Millisecond))
		Expect(httpGetBody(f.URL() + fleet.CustomDetectorPath)).To(MatchJSON(fmt.Sprintf(`{"pods":[%q]}`, faulty)))

		By("a pod out of the EndpointSlice receives no more requests")
		patchLabel(ctx, cs, faulty, trafficLabel, "no")
		Eventually(func(g Gomega) {
			g.Expect(readyEndpoints(ctx, g, cs, app)).NotTo(HaveKey(faulty))
			// A short window: the recommended 20s one takes 20s to forget the pod's last requests.
			recent := vector(ctx, g, api, `sum by (pod) (increase(demo_http_requests_total{namespace="`+ns+`"}[3s]))`)
			g.Expect(recent).To(HaveKeyWithValue(faulty, BeNumerically("==", 0)))
			g.Expect(recent).To(HaveKeyWithValue(pods[1], BeNumerically(">", 0)))
		}).WithTimeout(40 * time.Second).WithPolling(250 * time.Millisecond).Should(Succeed())
		patchLabel(ctx, cs, faulty, trafficLabel, "yes")
		Expect(f.Heal(faulty)).To(Succeed())

		By("a deviation injected on one pod shows in the continuous and latency queries")
		deviant := pods[1]
		Expect(f.SetDeviation(deviant, 3)).To(Succeed())
		deviates := func(g Gomega) {
			for _, q := range []string{fleet.ContinuousPromQL, fleet.ContinuousQuery(ns), fleet.LatencyQuery(ns)} {
				byPod := vector(ctx, g, api, q)
				g.Expect(byPod).To(HaveLen(replicas), q)
				// Anomalous for a breaker with maxDeviationPercent 75: |1 - value| > 0.75.
				g.Expect(byPod[deviant]).To(BeNumerically(">", 2), "%s: %v", q, byPod)
				for _, p := range pods {
					if p != deviant {
						g.Expect(byPod[p]).To(BeNumerically("~", 1, 0.1), "%s: %v", q, byPod)
					}
				}
			}
		}
		start = time.Now()
		Eventually(deviates).WithTimeout(40 * time.Second).WithPolling(250 * time.Millisecond).Should(Succeed())
		AddReportEntry("deviation to continuous and latency queries", time.Since(start).Round(time.Millisecond).String())
		Consistently(deviates).WithTimeout(3*time.Second).WithPolling(500*time.Millisecond).Should(Succeed(), "a steady state, not a transient")
		Expect(f.Heal(deviant)).To(Succeed())

		By("the HTTP control endpoint injects and heals faults")
		Expect(httpPost(f.URL() + "/fault?pod=" + pods[2] + "&errors=0.5")).To(Equal(http.StatusOK))
		Expect(f.Anomalies()).To(Equal([]string{pods[2]}))
		Expect(httpPost(f.URL() + "/fault?pod=nobody&errors=0.5")).To(Equal(http.StatusNotFound))
		Expect(httpPost(f.URL() + "/heal")).To(Equal(http.StatusOK))
		Expect(f.Anomalies()).To(BeEmpty())
	}, SpecTimeout(4*time.Minute))

	It("lets a fleet play the kubelet for its own pods, which deleting their Deployment removes", func(ctx SpecContext) {
		const own = "harness-e2e-own"
		_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: own}}, metav1.CreateOptions{})
		Expect(err).NotTo(HaveOccurred())
		d := deployment("own", 2)
		_, err = cs.AppsV1().Deployments(own).Create(ctx, d, metav1.CreateOptions{})
		Expect(err).NotTo(HaveOccurred())
		ownFleet, err := fleet.Start(ctx, cs, fleet.Options{Namespace: own, Deployment: "own", RunKubelet: true,
			KubeletOptions: cluster.KubeletOptions{PodCIDR: "10.245.0.0/16"}})
		Expect(err).NotTo(HaveOccurred())
		defer ownFleet.Stop()
		Expect(ownFleet.WaitForPods(ctx, 2, 30*time.Second)).To(Succeed())
		pods, err := cs.CoreV1().Pods(own).List(ctx, metav1.ListOptions{})
		Expect(err).NotTo(HaveOccurred())
		Expect(pods.Items).To(HaveLen(2))
		for _, p := range pods.Items {
			Expect(p.Status.PodIP).To(HavePrefix("10.245."), "the fleet's kubelet gave pod %s its IP", p.Name)
		}
		victim := pods.Items[0].Name
		Expect(ownFleet.SetReady(victim, false)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(ownFleet.Pods()).To(ContainElement(fleet.PodInfo{Name: victim, Ready: false, InTraffic: false, Deviation: 1}))
		}).WithTimeout(10 * time.Second).Should(Succeed())

		Expect(cs.AppsV1().Deployments(own).Delete(ctx, "own", metav1.DeleteOptions{})).To(Succeed())
		Eventually(func(g Gomega) {
			pods, err := cs.CoreV1().Pods(own).List(ctx, metav1.ListOptions{})
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(pods.Items).To(BeEmpty())
		}).WithTimeout(30*time.Second).WithPolling(100*time.Millisecond).Should(Succeed(), "the garbage collector deleted the pods")
		Expect(cs.CoreV1().Namespaces().Delete(ctx, own, metav1.DeleteOptions{})).To(Succeed())
		Eventually(func() bool {
			_, err := cs.CoreV1().Namespaces().Get(ctx, own, metav1.GetOptions{})
			return apierrors.IsNotFound(err)
		}).WithTimeout(60*time.Second).WithPolling(200*time.Millisecond).Should(BeTrue(), "the namespace controller deleted the namespace")
	}, SpecTimeout(2*time.Minute))

	It("scales to KUBERVISOR_HARNESS_PODS pods (skipped unless set)", func(ctx SpecContext) {
		n, _ := strconv.Atoi(os.Getenv("KUBERVISOR_HARNESS_PODS"))
		if n <= 0 {
			Skip("KUBERVISOR_HARNESS_PODS is not set")
		}
		start := time.Now()
		_, err := cs.AppsV1().Deployments(ns).Create(ctx, deployment("scale", int32(n)), metav1.CreateOptions{})
		Expect(err).NotTo(HaveOccurred())
		_, err = cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "scale"},
			Spec:       corev1.ServiceSpec{Selector: map[string]string{appLabel: "scale"}, Ports: []corev1.ServicePort{{Port: 80}}},
		}, metav1.CreateOptions{})
		Expect(err).NotTo(HaveOccurred())
		Eventually(func(g Gomega) {
			g.Expect(readyEndpoints(ctx, g, cs, "scale")).To(HaveLen(n))
		}).WithTimeout(10 * time.Minute).WithPolling(time.Second).Should(Succeed())
		AddReportEntry(fmt.Sprintf("deployment of %d pods to ready endpoints", n), time.Since(start).Round(time.Millisecond).String())
		start = time.Now()
		Expect(cs.AppsV1().Deployments(ns).Delete(ctx, "scale", metav1.DeleteOptions{})).To(Succeed())
		Expect(cs.CoreV1().Services(ns).Delete(ctx, "scale", metav1.DeleteOptions{})).To(Succeed())
		Eventually(func(g Gomega) {
			pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: appLabel + "=scale"})
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(pods.Items).To(BeEmpty())
		}).WithTimeout(10 * time.Minute).WithPolling(time.Second).Should(Succeed())
		AddReportEntry(fmt.Sprintf("deleting the deployment of %d pods", n), time.Since(start).Round(time.Millisecond).String())
	}, SpecTimeout(25*time.Minute))

	It("stops Prometheus and starts it again on the same port and data", func(ctx SpecContext) {
		Expect(prom).NotTo(BeNil())
		api := prom.API()
		const samples = `count_over_time(up{job="fleet"}[1h])`
		before := scalarOf(ctx, Default, api, samples)
		Expect(before).To(BeNumerically(">=", 5))
		oldPid := prom.Process().Pid()

		Expect(prom.Stop()).To(Succeed())
		Expect(cluster.ProcessAlive(oldPid)).To(BeFalse())
		_, _, err := api.Query(ctx, "up", time.Now())
		Expect(err).To(HaveOccurred(), "Prometheus is down")

		start := time.Now()
		Expect(prom.Start(ctx)).To(Succeed())
		AddReportEntry("prometheus restart", time.Since(start).Round(time.Millisecond).String())
		Expect(prom.Process().Pid()).NotTo(Equal(oldPid))
		Expect(scalarOf(ctx, Default, api, samples)).To(BeNumerically(">=", before), "the samples before the restart are still there")
		Eventually(func(g Gomega) {
			g.Expect(discrete(ctx, g, api, fleet.DiscreteQuery(ns))).To(HaveLen(replicas))
		}).WithTimeout(30 * time.Second).WithPolling(500 * time.Millisecond).Should(Succeed())
	}, SpecTimeout(2*time.Minute))

	It("applies manifests (only the kinds asked for), which authorize the manager's identity", func(ctx SpecContext) {
		asManager, err := kubernetes.NewForConfig(c.ManagerConfig())
		Expect(err).NotTo(HaveOccurred())
		_, err = asManager.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "nothing authorizes the manager yet: %v", err)

		root, err := cluster.RepoRoot()
		Expect(err).NotTo(HaveOccurred())
		crds, err := filepath.Glob(filepath.Join(root, "config", "crd", "bases", "*.yaml"))
		Expect(err).NotTo(HaveOccurred())
		Expect(crds).NotTo(BeEmpty())
		var manifests []string
		for _, p := range crds {
			data, err := os.ReadFile(p)
			Expect(err).NotTo(HaveOccurred())
			manifests = append(manifests, string(data))
		}
		manifests = append(manifests, defaultLikeManifests)

		applied, err := c.Apply(ctx, []byte(strings.Join(manifests, "\n---\n")), cluster.ApplyOptions{Kinds: cluster.RBACKinds})
		Expect(err).NotTo(HaveOccurred())
		var kinds []string
		for _, u := range applied {
			kinds = append(kinds, u.GetKind())
		}
		Expect(kinds).To(Equal([]string{"CustomResourceDefinition", "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"}))
		_, err = cs.AppsV1().Deployments(cluster.ManagerNamespace).Get(ctx, "kubervisor-controller-manager", metav1.GetOptions{})
		Expect(apierrors.IsNotFound(err)).To(BeTrue(), "the Deployment was filtered out: %v", err)

		Eventually(func() error {
			_, err := asManager.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
			return err
		}).WithTimeout(10*time.Second).Should(Succeed(), "the applied ClusterRoleBinding authorizes the ServiceAccount identity")
		err = asManager.CoreV1().Services(ns).Delete(ctx, app, metav1.DeleteOptions{})
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "and nothing more: %v", err)

		_, err = c.Apply(ctx, []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bad, namespace: "+ns+"}\ndata: {a: [1]}\n"), cluster.ApplyOptions{})
		Expect(err).To(MatchError(ContainSubstring("ConfigMap "+ns+"/bad")), "a refused object is an error naming it")
	}, SpecTimeout(time.Minute))

	It("runs the manager as a process group with the ServiceAccount identity, and stops, kills and restarts it", func(ctx SpecContext) {
		dir := GinkgoT().TempDir()
		kubectl := filepath.Join(c.AssetsDir(), "kubectl")
		// A stand-in manager: it checks who it is, then spawns a child and waits, as a real binary's
		// helpers would. $3 is the --kubeconfig flag the harness appends.
		script := `"$1" auth whoami -o jsonpath='{.status.userInfo.username}' > "$2/whoami.$$"; ` +
			`echo "$3" > "$2/args.$$"; sleep 600 & echo $! > "$2/child.$$"; echo "$$" > "$2/pid"; wait`
		standIn := []string{"-c", script, "stand-in", kubectl, dir}
		pids := func() (leader, child int) {
			Eventually(func(g Gomega) {
				leader = readInt(g, filepath.Join(dir, "pid"))
				child = readInt(g, filepath.Join(dir, fmt.Sprintf("child.%d", leader)))
			}).WithTimeout(20 * time.Second).WithPolling(50 * time.Millisecond).Should(Succeed())
			return leader, child
		}

		By("start: the identity is the ServiceAccount's")
		Expect(c.StartManager("/bin/sh", standIn)).To(Succeed())
		leader, child := pids()
		Expect(leader).To(Equal(c.Manager().Pid()))
		Eventually(func() string {
			data, _ := os.ReadFile(filepath.Join(dir, fmt.Sprintf("whoami.%d", leader)))
			return string(data)
		}).WithTimeout(20 * time.Second).Should(Equal(cluster.ManagerUser().Name))
		Expect(os.ReadFile(filepath.Join(dir, fmt.Sprintf("args.%d", leader)))).To(ContainSubstring("--kubeconfig=" + c.ManagerKubeconfigPath()))
		Expect(c.StartManager("/bin/sh", standIn)).To(MatchError(ContainSubstring("already running")))

		By("stop (SIGTERM): the process and its child are gone")
		Expect(c.StopManager()).To(Succeed())
		Expect(cluster.ProcessAlive(leader)).To(BeFalse())
		Expect(cluster.ProcessAlive(child)).To(BeFalse())

		By("restart, then kill (SIGKILL)")
		Expect(os.Remove(filepath.Join(dir, "pid"))).To(Succeed())
		Expect(c.RestartManager()).To(Succeed())
		leader2, child2 := pids()
		Expect(leader2).NotTo(Equal(leader))
		Expect(c.KillManager()).To(Succeed())
		Expect(cluster.ProcessAlive(leader2)).To(BeFalse())
		Expect(cluster.ProcessAlive(child2)).To(BeFalse())

		By("a manager that ignores SIGTERM is killed after the grace period")
		Expect(os.Remove(filepath.Join(dir, "pid"))).To(Succeed())
		Expect(c.StartManager("/bin/sh", []string{"-c", "trap '' TERM; " + script, "stand-in", kubectl, dir})).To(Succeed())
		leader3, child3 := pids()
		start := time.Now()
		Expect(c.Manager().Stop(time.Second)).To(Succeed())
		Expect(time.Since(start)).To(BeNumerically(">=", time.Second))
		Expect(cluster.ProcessAlive(leader3)).To(BeFalse())
		Expect(cluster.ProcessAlive(child3)).To(BeFalse())

		By("a last one is left running for Stop to end")
		Expect(os.Remove(filepath.Join(dir, "pid"))).To(Succeed())
		Expect(c.StartManager("/bin/sh", standIn)).To(Succeed())
		pids()
		Expect(c.ManagerLog()).To(ContainSubstring("starting /bin/sh"))
	}, SpecTimeout(2*time.Minute))

	It("leaves no child process and no work directory after Stop", func(ctx SpecContext) {
		leader, child := c.Manager().Pid(), 0
		Expect(cluster.ProcessAlive(leader)).To(BeTrue())
		Expect(cluster.LiveChildren(os.Getpid())).NotTo(BeEmpty(), "the check below can fail")
		for _, p := range cluster.LiveChildren(leader) {
			child = p
		}
		Expect(child).NotTo(BeZero())
		pids := []int{leader, child, c.ControllerManager().Pid(), prom.Process().Pid()}
		// A watch nobody closes (a client the test left running, a pod whose connection died silently):
		// kube-apiserver's graceful stop must not wait for it past envtest's stop timeout.
		w, err := cs.CoreV1().Pods(ns).Watch(context.Background(), metav1.ListOptions{})
		Expect(err).NotTo(HaveOccurred())
		defer w.Stop()

		f.Stop()
		f = nil
		start := time.Now()
		Expect(c.Stop()).To(Succeed())
		AddReportEntry("cluster stop", time.Since(start).Round(time.Millisecond).String())
		for _, pid := range pids {
			Expect(cluster.ProcessAlive(pid)).To(BeFalse(), "pid %d", pid)
		}
		Expect(cluster.LiveChildren(os.Getpid())).To(BeEmpty(), "etcd and kube-apiserver are gone too")
		Expect(c.WorkDir()).NotTo(BeADirectory())
		Expect(c.Stop()).To(Succeed(), "Stop is idempotent")
	}, SpecTimeout(2*time.Minute))
})

// defaultLikeManifests stands for what `kustomize build config/default` adds around the CRD.
const defaultLikeManifests = `apiVersion: v1
kind: Namespace
metadata:
  name: kubervisor-system
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: kubervisor-controller-manager
  namespace: kubervisor-system
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: kubervisor-manager-role
rules:
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, patch]
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: kubervisor-manager-rolebinding
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: kubervisor-manager-role
subjects:
- kind: ServiceAccount
  name: kubervisor-controller-manager
  namespace: kubervisor-system
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: kubervisor-controller-manager
  namespace: kubervisor-system
spec:
  selector:
    matchLabels: {control-plane: controller-manager}
  template:
    metadata:
      labels: {control-plane: controller-manager}
    spec:
      serviceAccountName: kubervisor-controller-manager
      containers:
      - name: manager
        image: kubervisor/controller:latest
`

func deployment(name string, n int32) *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: &n,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{appLabel: name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{appLabel: name, trafficLabel: "yes"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "app", Image: "example.invalid/pricer:1",
					Ports: []corev1.ContainerPort{{ContainerPort: 80}},
				}}},
			},
		},
	}
}

func listPods(ctx context.Context, g Gomega, cs kubernetes.Interface) []corev1.Pod {
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: appLabel + "=" + app})
	g.Expect(err).NotTo(HaveOccurred())
	var out []corev1.Pod
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			out = append(out, p)
		}
	}
	return out
}

// readyEndpoints returns the pods listed as ready endpoints of the Service's EndpointSlices.
func readyEndpoints(ctx context.Context, g Gomega, cs kubernetes.Interface, svc string) map[string]bool {
	slices, err := cs.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + svc})
	g.Expect(err).NotTo(HaveOccurred())
	out := map[string]bool{}
	for _, s := range slices.Items {
		for _, e := range s.Endpoints {
			if e.TargetRef != nil && (e.Conditions.Ready == nil || *e.Conditions.Ready) {
				out[e.TargetRef.Name] = true
			}
		}
	}
	return out
}

func patchLabel(ctx context.Context, cs kubernetes.Interface, pod, key, value string) {
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%q}}}`, key, value)
	_, err := cs.CoreV1().Pods(ns).Patch(ctx, pod, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	Expect(err).NotTo(HaveOccurred())
}

func podNames(f *fleet.Fleet) []string {
	var out []string
	for _, p := range f.Pods() {
		out = append(out, p.Name)
	}
	return out
}

type counts struct{ good, bad float64 }

func (c counts) ratio() float64 {
	if c.good+c.bad == 0 {
		return 0
	}
	return c.bad / (c.good + c.bad)
}

// discrete evaluates a discrete-detector query and sums it by pod into good (code 200) and bad.
func discrete(ctx context.Context, g Gomega, api promv1.API, q string) map[string]counts {
	v, _, err := api.Query(ctx, q, time.Now())
	g.Expect(err).NotTo(HaveOccurred())
	vec, ok := v.(model.Vector)
	g.Expect(ok).To(BeTrue(), "%s returns a vector", q)
	out := map[string]counts{}
	for _, s := range vec {
		pod := string(s.Metric[fleet.PodLabel])
		c := out[pod]
		if string(s.Metric[fleet.DiscreteKey]) == fleet.DiscreteGoodValues[0] {
			c.good += float64(s.Value)
		} else {
			c.bad += float64(s.Value)
		}
		out[pod] = c
	}
	return out
}

// vector evaluates a one-value-per-pod query.
func vector(ctx context.Context, g Gomega, api promv1.API, q string) map[string]float64 {
	v, _, err := api.Query(ctx, q, time.Now())
	g.Expect(err).NotTo(HaveOccurred())
	vec, ok := v.(model.Vector)
	g.Expect(ok).To(BeTrue(), "%s returns a vector", q)
	out := map[string]float64{}
	for _, s := range vec {
		out[string(s.Metric[fleet.PodLabel])] = float64(s.Value)
	}
	return out
}

func scalarOf(ctx context.Context, g Gomega, api promv1.API, q string) float64 {
	v, _, err := api.Query(ctx, q, time.Now())
	g.Expect(err).NotTo(HaveOccurred())
	vec, ok := v.(model.Vector)
	g.Expect(ok).To(BeTrue())
	g.Expect(vec).To(HaveLen(1))
	return float64(vec[0].Value)
}

func httpGetBody(url string) string {
	resp, err := http.Get(url)
	Expect(err).NotTo(HaveOccurred())
	data, err := io.ReadAll(resp.Body)
	Expect(err).NotTo(HaveOccurred())
	Expect(resp.Body.Close()).To(Succeed())
	return string(data)
}

// httpPost posts an empty body to url and returns the status code.
func httpPost(url string) int {
	resp, err := http.Post(url, "", nil)
	Expect(err).NotTo(HaveOccurred())
	Expect(resp.Body.Close()).To(Succeed())
	return resp.StatusCode
}

func readInt(g Gomega, path string) int {
	data, err := os.ReadFile(path)
	g.Expect(err).NotTo(HaveOccurred())
	n, err := strconv.Atoi(strings.TrimSpace(string(data)))
	g.Expect(err).NotTo(HaveOccurred())
	return n
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}
