//go:build e2e

// Package e2e proves Kubervisor the way a user sees it: on a local cluster with real endpoint controllers,
// a real Prometheus scraping a demo fleet, and the real manager binary running as the ServiceAccount of
// config/rbac, pods leave and re-enter a Service's EndpointSlices.
package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/rand"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/podstate"
	"github.com/kubervisor/kubervisor/test/cluster"
	"github.com/kubervisor/kubervisor/test/fleet"
)

const fleetLabel = "kubervisor-e2e/fleet"

var (
	root string
	cl   *cluster.Cluster
	prom *cluster.Prometheus
	k8s  client.Client
	ctx  = context.Background()
	// endpointsFile is the manager's --detector-endpoints file, absent until a spec writes it; the files
	// it names (CA, certificates, password, token) go beside it, in its directory.
	endpointsFile string
)

func TestE2E(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Kubervisor end-to-end")
}

var _ = BeforeSuite(func() {
	var err error
	root, err = cluster.RepoRoot()
	Expect(err).NotTo(HaveOccurred())
	manager := filepath.Join(root, "bin", "manager")
	Expect(manager).To(BeAnExistingFile(), "run `make build` (make test-e2e does) to build the manager")

	scheme := runtime.NewScheme()
	Expect(clientgoscheme.AddToScheme(scheme)).To(Succeed())
	Expect(kvv1.AddToScheme(scheme)).To(Succeed())

	By("starting etcd, kube-apiserver, kube-controller-manager and the fake kubelet")
	cl, err = cluster.Start(ctx, cluster.Options{
		Scheme: scheme,
		Log:    GinkgoWriter,
		// Only the fleets' pods are "run": the Deployment of config/default must not pretend to.
		Kubelet: cluster.KubeletOptions{Selector: fleetLabel + "=true"},
		// The status writes of KubervisorServices, for the specs that count them at the API server.
		AuditPolicy: statusAuditPolicy,
	})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() { Expect(cl.Stop()).To(Succeed()) })
	k8s = cl.Client()
	AddReportEntry("cluster start", cl.StartDuration().String())

	By("applying the CRD and the manager's RBAC from `kustomize build config/default`")
	rendered := kustomizeDefault()
	_, err = cl.Apply(ctx, rendered, cluster.ApplyOptions{Kinds: cluster.RBACKinds})
	Expect(err).NotTo(HaveOccurred())

	By("starting Prometheus")
	prom, err = cl.StartPrometheus(ctx, cluster.PrometheusOptions{Log: GinkgoWriter})
	Expect(err).NotTo(HaveOccurred())

	endpointsDir, err := os.MkdirTemp("", "kubervisor-e2e-endpoints-")
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(os.RemoveAll, endpointsDir)
	endpointsFile = filepath.Join(endpointsDir, "endpoints.yaml")

	By("starting the manager binary as the ServiceAccount of config/rbac")
	Expect(cl.StartManager(manager, managerArgs())).To(Succeed())
})

var _ = ReportAfterEach(func(r SpecReport) {
	if r.Failed() && cl != nil {
		AddReportEntry("manager log (tail)", cluster.LastLines(cl.ManagerLog(), 120))
	}
})

// statusAuditPolicy logs every write to a KubervisorService's status, with its answer.
const statusAuditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
  verbs: ["patch", "update"]
  resources:
  - group: breaker.kubervisor.io
    resources: ["kubervisorservices/status"]
- level: None
`

func managerArgs() []string {
	metrics, err := cluster.FreeAddr()
	Expect(err).NotTo(HaveOccurred())
	probes, err := cluster.FreeAddr()
	Expect(err).NotTo(HaveOccurred())
	return []string{
		"--metrics-bind-address=" + metrics, "--metrics-secure=false", "--health-probe-bind-address=" + probes,
		"--leader-elect", "--leader-election-namespace=" + cluster.ManagerNamespace, "--zap-log-level=debug",
		"--detector-endpoints=" + endpointsFile,
	}
}

func kustomizeDefault() []byte {
	out, err := exec.Command(filepath.Join(root, "bin", "kustomize"), "build", filepath.Join(root, "config", "default")).Output()
	Expect(err).NotTo(HaveOccurred(), "kustomize build config/default (make test-e2e installs bin/kustomize)")
	return out
}

// scenario is one Service with its Deployment, demo fleet and Prometheus job, in its own namespace.
type scenario struct {
	ns, name string
	fleet    *fleet.Fleet
}

// newScenario creates a namespace, a Deployment of n pods (template labels include kubervisor/traffic=yes,
// the selector does not), a Service selecting app + kubervisor/traffic=yes, and a demo fleet scraped by
// Prometheus; it returns once every pod is a ready endpoint and Prometheus scrapes the fleet.
func newScenario(n int) *scenario {
	s := &scenario{ns: "e2e-" + rand.String(5), name: "pricer"}
	Expect(k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: s.ns}})).To(Succeed())
	app := map[string]string{"app": s.name}
	Expect(k8s.Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: s.name},
		Spec: appsv1.DeploymentSpec{
			Replicas: new(int32(n)),
			Selector: &metav1.LabelSelector{MatchLabels: app},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": s.name, kvv1.LabelTraffic: kvv1.TrafficYes, fleetLabel: "true"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "pricer:1"}}},
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
	Eventually(s.endpoints).WithTimeout(time.Minute).Should(HaveLen(n))

	var err error
	s.fleet, err = fleet.Start(ctx, cl.Clientset(), fleet.Options{
		Namespace: s.ns, Deployment: s.name, Service: s.name, Kubelet: cl.Kubelet(), BaselineErrorRate: -1,
	})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(s.fleet.Stop)
	Expect(s.fleet.WaitForPods(ctx, n, time.Minute)).To(Succeed())

	// Scenarios run one at a time: Prometheus scrapes the current fleet only (a finished scenario's fleet
	// is stopped, and its target would never be up again).
	Expect(prom.SetJobs(ctx, []cluster.ScrapeJob{{Name: s.ns, Targets: []string{s.fleet.Addr()}}})).To(Succeed())
	return s
}

// pods returns the names of the scenario's pods, sorted.
func (s *scenario) pods() []string {
	var list corev1.PodList
	Expect(k8s.List(ctx, &list, client.InNamespace(s.ns), client.MatchingLabels{"app": s.name})).To(Succeed())
	var out []string
	for _, p := range list.Items {
		if p.DeletionTimestamp.IsZero() {
			out = append(out, p.Name)
		}
	}
	slices.Sort(out)
	return out
}

// endpoints returns the pods that are ready endpoints of the Service's EndpointSlices, sorted.
func (s *scenario) endpoints() []string { return readyEndpoints(s.ns, s.name) }

// readyEndpoints returns the pods that are ready endpoints of the EndpointSlices of Service ns/svc, sorted.
func readyEndpoints(ns, svc string) []string {
	out, err := cluster.ReadyEndpoints(ctx, k8s, ns, svc)
	Expect(err).NotTo(HaveOccurred())
	return out
}

func (s *scenario) traffic(pod string) func() string {
	return func() string {
		p := &corev1.Pod{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: pod}, p); err != nil {
			return "<gone>"
		}
		return p.Labels[kvv1.LabelTraffic]
	}
}

func (s *scenario) pod(name string) *corev1.Pod {
	p := &corev1.Pod{}
	Expect(k8s.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: name}, p)).To(Succeed())
	return p
}

// state reads a pod's Kubervisor labels and annotations as the manager does.
func (s *scenario) state(name string) podstate.State {
	return podstate.Of(s.pod(name), time.Now())
}

func (s *scenario) kvs() *kvv1.KubervisorService {
	k := &kvv1.KubervisorService{}
	Expect(k8s.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: s.name}, k)).To(Succeed())
	return k
}

func (s *scenario) condition(t string) func() metav1.Condition {
	return func() metav1.Condition {
		if c := meta.FindStatusCondition(s.kvs().Status.Conditions, t); c != nil {
			return *c
		}
		return metav1.Condition{}
	}
}

func (s *scenario) breaker() func() kvv1.BreakerStatus {
	return func() kvv1.BreakerStatus {
		if b := s.kvs().Status.Breakers; len(b) > 0 {
			return b[0]
		}
		return kvv1.BreakerStatus{}
	}
}

// discrete returns a breaker judging the fleet's HTTP codes through real PromQL.
func (s *scenario) discrete() kvv1.BreakerStrategy {
	return kvv1.BreakerStrategy{
		Name:             "http-errors",
		EvaluationPeriod: intOrString("1s"),
		DiscreteValueOutOfList: &kvv1.DiscreteValueOutOfList{
			PrometheusService: prom.Addr(),
			PromQL:            fleet.DiscreteQuery(s.ns),
			Key:               fleet.DiscreteKey,
			PodNameKey:        fleet.PodLabel,
			GoodValues:        fleet.DiscreteGoodValues,
			Tolerance:         new(int32(20)),
			MinActivity:       new(int32(5)),
		},
	}
}

// continuous returns a breaker judging the fleet's prices through real PromQL.
func (s *scenario) continuous() kvv1.BreakerStrategy {
	return kvv1.BreakerStrategy{
		Name:             "price-deviation",
		EvaluationPeriod: intOrString("1s"),
		ContinuousValueDeviation: &kvv1.ContinuousValueDeviation{
			PrometheusService:   "http://" + prom.Addr(),
			PromQL:              fleet.ContinuousQuery(s.ns),
			PodNameKey:          fleet.PodLabel,
			MaxDeviationPercent: new(int32(50)),
		},
	}
}

func (s *scenario) createKVS(b kvv1.BreakerStrategy, mutate func(*kvv1.KubervisorService)) {
	k := &kvv1.KubervisorService{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: s.name},
		Spec: kvv1.KubervisorServiceSpec{
			Service:          s.name,
			Breakers:         []kvv1.BreakerStrategy{b},
			DefaultActivator: &kvv1.ActivatorStrategy{Mode: kvv1.ActivatorModePeriodic, Period: intOrString("1h")},
		},
	}
	if mutate != nil {
		mutate(k)
	}
	Expect(k8s.Create(ctx, k)).To(Succeed())
	Eventually(s.condition(kvv1.ConditionReady)).WithTimeout(time.Minute).Should(HaveField("Status", metav1.ConditionTrue))
}

// timeToLeave injects nothing itself: it returns how long after since the pod left the EndpointSlice.
func (s *scenario) timeToLeave(pod string, since time.Time) time.Duration {
	Eventually(s.endpoints).WithTimeout(time.Minute).WithPolling(20 * time.Millisecond).ShouldNot(ContainElement(pod))
	return time.Since(since)
}

func without(all []string, drop ...string) []string {
	var out []string
	for _, p := range all {
		keep := true
		for _, d := range drop {
			keep = keep && p != d
		}
		if keep {
			out = append(out, p)
		}
	}
	return out
}

func intOrString(s string) *intstr.IntOrString { v := intstr.FromString(s); return &v }

func init() {
	SetDefaultEventuallyTimeout(45 * time.Second)
	SetDefaultEventuallyPollingInterval(200 * time.Millisecond)
	SetDefaultConsistentlyDuration(4 * time.Second)
	SetDefaultConsistentlyPollingInterval(200 * time.Millisecond)
}
