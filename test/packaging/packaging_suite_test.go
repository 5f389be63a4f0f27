//go:build e2e

// Package packaging installs Kubervisor the way platform teams do (SPEC §12) on the local cluster of
// test/cluster, which starts without the CRD: `helm install` of dist/chart, the manager binary run with
// the arguments of the chart's rendered Deployment under the chart's ServiceAccount (the harness has no
// kubelet to run the Deployment itself), an ejection through a real Prometheus, the documented
// uninstall that leaves no Kubervisor object behind; then the chart's namespaced install, checked
// against the API server's audit log.
package packaging

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
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
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/test/cluster"
	"github.com/kubervisor/kubervisor/test/fleet"
)

const fleetLabel = "kubervisor-packaging/fleet"

var (
	root string
	cl   *cluster.Cluster
	prom *cluster.Prometheus
	k8s  client.Client
	ctx  = context.Background()
)

func TestPackaging(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Kubervisor packaging end-to-end")
}

var _ = BeforeSuite(func() {
	var err error
	root, err = cluster.RepoRoot()
	Expect(err).NotTo(HaveOccurred())
	Expect(filepath.Join(root, "bin", "manager")).To(BeAnExistingFile(), "run `make build` (make test-e2e does)")
	Expect(filepath.Join(root, "bin", "helm")).To(BeAnExistingFile(), "run `make helm` (make test-e2e does)")

	scheme := runtime.NewScheme()
	Expect(clientgoscheme.AddToScheme(scheme)).To(Succeed())
	Expect(kvv1.AddToScheme(scheme)).To(Succeed())

	By("starting a local cluster without the CRD (the chart installs it), auditing ServiceAccounts")
	cl, err = cluster.Start(ctx, cluster.Options{
		Scheme:            scheme,
		Log:               GinkgoWriter,
		CRDDirectoryPaths: []string{},
		Kubelet:           cluster.KubeletOptions{Selector: fleetLabel + "=true"},
		// Every request of a ServiceAccount at level Metadata: the managers run as ServiceAccounts, the
		// harness and helm as administrators.
		AuditPolicy: `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
  userGroups: ["system:serviceaccounts"]
- level: None
`,
	})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() { Expect(cl.Stop()).To(Succeed()) })
	k8s = cl.Client()

	prom, err = cl.StartPrometheus(ctx, cluster.PrometheusOptions{Log: GinkgoWriter})
	Expect(err).NotTo(HaveOccurred())
})

var _ = ReportAfterEach(func(r SpecReport) {
	if r.Failed() && cl != nil {
		AddReportEntry("manager log (tail)", cluster.LastLines(cl.ManagerLog(), 120))
	}
})

// helm runs bin/helm against the cluster as its administrator and returns its combined output.
func helm(args ...string) string {
	cmd := exec.Command(filepath.Join(root, "bin", "helm"), append(args, "--kubeconfig", cl.KubeconfigPath())...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+GinkgoT().TempDir(), "HELM_CONFIG_HOME="+GinkgoT().TempDir(),
		"HELM_DATA_HOME="+GinkgoT().TempDir())
	out, err := cmd.CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), "helm %s:\n%s", strings.Join(args, " "), out)
	return string(out)
}

// startChartManager starts bin/manager as the Deployment of release `release` in namespace ns would
// run it: the arguments of its rendered container, then the harness's own listen addresses (later flags
// win), under the ServiceAccount that Deployment names. Out of a pod, the manager cannot read its
// namespace from the ServiceAccount token, so --leader-election-namespace is added. It returns the
// manager's identity once its /readyz answers.
func startChartManager(ns, release string) envtest.User {
	chartArgs, serviceAccount := chartContainer(ns, release)
	metrics, err := cluster.FreeAddr()
	Expect(err).NotTo(HaveOccurred())
	probes, err := cluster.FreeAddr()
	Expect(err).NotTo(HaveOccurred())
	args := slices.Concat(chartArgs, []string{
		"--metrics-bind-address=" + metrics, "--health-probe-bind-address=" + probes,
		"--leader-election-namespace=" + ns,
	})
	AddReportEntry("manager args ("+release+")", strings.Join(args, " "))
	user := cluster.ServiceAccountUser(ns, serviceAccount)
	Expect(cl.SetManagerUser(user)).To(Succeed())
	Expect(cl.StartManager(filepath.Join(root, "bin", "manager"), args)).To(Succeed())
	Expect(cluster.WaitForHTTP(ctx, "http://"+probes+"/readyz", time.Minute)).To(Succeed())
	return user
}

// chartContainer returns the manager container's arguments and the ServiceAccount of the Deployment
// that release `release` rendered in namespace ns.
func chartContainer(ns, release string) (args []string, serviceAccount string) {
	var deps appsv1.DeploymentList
	Expect(k8s.List(ctx, &deps, client.InNamespace(ns), client.MatchingLabels{"app.kubernetes.io/instance": release})).To(Succeed())
	Expect(deps.Items).To(HaveLen(1), "the chart renders one Deployment")
	spec := deps.Items[0].Spec.Template.Spec
	Expect(spec.ServiceAccountName).NotTo(BeEmpty())
	Expect(spec.Containers).NotTo(BeEmpty())
	Expect(spec.Containers[0].Command).To(Equal([]string{"/manager"}))
	return spec.Containers[0].Args, spec.ServiceAccountName
}

// app is one Service with its Deployment and demo fleet, scraped by the suite's Prometheus.
type app struct {
	ns, name string
	fleet    *fleet.Fleet
}

// newApp creates a Deployment of n pods labelled kubervisor/traffic=yes, a Service selecting it with
// the traffic key, and a demo fleet, in namespace ns (created if missing); Prometheus scrapes every
// fleet in fleets.
func newApp(ns string, n int) *app {
	a := &app{ns: ns, name: "pricer"}
	err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	Expect(client.IgnoreAlreadyExists(err)).To(Succeed())
	labels := map[string]string{"app": a.name}
	Expect(k8s.Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: a.name},
		Spec: appsv1.DeploymentSpec{
			Replicas: new(int32(n)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": a.name, kvv1.LabelTraffic: kvv1.TrafficYes, fleetLabel: "true"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "pricer:1"}}},
			},
		},
	})).To(Succeed())
	Expect(k8s.Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: a.name},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": a.name, kvv1.LabelTraffic: kvv1.TrafficYes},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80}},
		},
	})).To(Succeed())
	Eventually(a.endpoints).WithTimeout(time.Minute).Should(HaveLen(n))
	a.fleet, err = fleet.Start(ctx, cl.Clientset(), fleet.Options{
		Namespace: ns, Deployment: a.name, Service: a.name, Kubelet: cl.Kubelet(), BaselineErrorRate: -1,
	})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(a.fleet.Stop)
	Expect(a.fleet.WaitForPods(ctx, n, time.Minute)).To(Succeed())
	return a
}

// scrape makes Prometheus scrape exactly these apps' fleets.
func scrape(apps ...*app) {
	var jobs []cluster.ScrapeJob
	for _, a := range apps {
		jobs = append(jobs, cluster.ScrapeJob{Name: a.ns, Targets: []string{a.fleet.Addr()}})
	}
	Expect(prom.SetJobs(ctx, jobs)).To(Succeed())
}

func (a *app) pods() []corev1.Pod {
	var list corev1.PodList
	Expect(k8s.List(ctx, &list, client.InNamespace(a.ns), client.MatchingLabels{"app": a.name})).To(Succeed())
	slices.SortFunc(list.Items, func(x, y corev1.Pod) int { return strings.Compare(x.Name, y.Name) })
	return list.Items
}

func (a *app) podNames() []string {
	var out []string
	for _, p := range a.pods() {
		out = append(out, p.Name)
	}
	return out
}

// endpoints returns the pods that are ready endpoints of the app's Service, sorted.
func (a *app) endpoints() []string {
	out, err := cluster.ReadyEndpoints(ctx, k8s, a.ns, a.name)
	Expect(err).NotTo(HaveOccurred())
	return out
}

// createKVS creates a KubervisorService of the app with one PromQL breaker on the fleet's HTTP codes,
// evaluated every second, and an activator that brings nobody back during the test.
func (a *app) createKVS() {
	period := intstr.FromString("1s")
	hour := intstr.FromString("1h")
	Expect(k8s.Create(ctx, &kvv1.KubervisorService{
		ObjectMeta: metav1.ObjectMeta{Namespace: a.ns, Name: a.name},
		Spec: kvv1.KubervisorServiceSpec{
			Service: a.name,
			Breakers: []kvv1.BreakerStrategy{{
				Name:             "http-errors",
				EvaluationPeriod: &period,
				DiscreteValueOutOfList: &kvv1.DiscreteValueOutOfList{
					PrometheusService: prom.Addr(),
					PromQL:            fleet.DiscreteQuery(a.ns),
					Key:               fleet.DiscreteKey,
					PodNameKey:        fleet.PodLabel,
					GoodValues:        fleet.DiscreteGoodValues,
					Tolerance:         new(int32(20)),
					MinActivity:       new(int32(5)),
				},
			}},
			DefaultActivator: &kvv1.ActivatorStrategy{Mode: kvv1.ActivatorModePeriodic, Period: &hour},
		},
	})).To(Succeed())
}

func (a *app) kvs() *kvv1.KubervisorService {
	k := &kvv1.KubervisorService{}
	Expect(k8s.Get(ctx, client.ObjectKey{Namespace: a.ns, Name: a.name}, k)).To(Succeed())
	return k
}

func (a *app) ready() metav1.Condition {
	if c := meta.FindStatusCondition(a.kvs().Status.Conditions, kvv1.ConditionReady); c != nil {
		return *c
	}
	return metav1.Condition{}
}

// kubervisorMarks returns, per pod of the app, the Kubervisor labels and annotations it carries besides
// kubervisor/traffic=yes (which the pod template sets).
func (a *app) kubervisorMarks() map[string][]string {
	out := map[string][]string{}
	for _, p := range a.pods() {
		for k, v := range p.Labels {
			if strings.HasPrefix(k, "kubervisor/") && (k != kvv1.LabelTraffic || v != kvv1.TrafficYes) {
				out[p.Name] = append(out[p.Name], k+"="+v)
			}
		}
		for k := range p.Annotations {
			if strings.HasPrefix(k, "kubervisor/") {
				out[p.Name] = append(out[p.Name], k)
			}
		}
	}
	return out
}

// audited returns the requests of user in the audit log so far, one entry per request.
func audited(user string) []cluster.AuditEntry {
	time.Sleep(time.Second) // the API server writes an entry when the request completes
	out, err := cl.Audited(func(e cluster.AuditEntry) bool { return e.User.Username == user })
	Expect(err).NotTo(HaveOccurred())
	return out
}

func init() {
	SetDefaultEventuallyTimeout(45 * time.Second)
	SetDefaultEventuallyPollingInterval(200 * time.Millisecond)
	SetDefaultConsistentlyDuration(4 * time.Second)
	SetDefaultConsistentlyPollingInterval(200 * time.Millisecond)
}
