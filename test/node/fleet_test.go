//go:build e2e

package node

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
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
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/podstate"
	"github.com/kubervisor/kubervisor/test/cluster"
)

// fleet is a Deployment of test/node/app behind a Service, a client sending it traffic, and Prometheus
// scraping its pods.
type fleet struct {
	ns, name string
	gated    bool
	load     *load
}

// newFleet creates namespace, Deployment (n real pods with a real readiness probe) and Service, has
// Prometheus scrape the pods, waits until every pod is a ready endpoint and starts the client.
func newFleet(n int, gated bool) *fleet {
	f := &fleet{ns: "node-" + rand.String(5), name: "pricer", gated: gated}
	Expect(k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: f.ns}})).To(Succeed())
	DeferCleanup(func() { _ = k8s.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: f.ns}}) })
	// The ServiceAccount admission plugin wants the namespace's default ServiceAccount.
	Eventually(func() error {
		return k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "default"}, &corev1.ServiceAccount{})
	}).WithTimeout(time.Minute).Should(Succeed())
	app := map[string]string{"app": f.name}
	selector := map[string]string{"app": f.name, kvv1.LabelTraffic: kvv1.TrafficYes}
	spec := corev1.PodSpec{
		TerminationGracePeriodSeconds: new(int64(10)),
		Containers: []corev1.Container{{
			Name: "app", Image: fleetImage, ImagePullPolicy: corev1.PullNever,
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: appPort}},
			ReadinessProbe: &corev1.Probe{
				ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt(appPort)}},
				PeriodSeconds: 1, FailureThreshold: 1,
			},
			SecurityContext: &corev1.SecurityContext{
				RunAsNonRoot: new(true), AllowPrivilegeEscalation: new(false), ReadOnlyRootFilesystem: new(true),
				Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			},
		}},
	}
	if gated {
		spec.ReadinessGates = []corev1.PodReadinessGate{{ConditionType: kvv1.ConditionInTraffic}}
		selector = app // readinessGate mode: the Service selects the application only
	}
	Expect(k8s.Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: f.name},
		Spec: appsv1.DeploymentSpec{
			Replicas: new(int32(n)),
			Selector: &metav1.LabelSelector{MatchLabels: app},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": f.name, kvv1.LabelTraffic: kvv1.TrafficYes}},
				Spec:       spec,
			},
		},
	})).To(Succeed())
	Expect(k8s.Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: f.name},
		Spec:       corev1.ServiceSpec{Selector: selector, Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt(appPort)}}},
	})).To(Succeed())
	targets := filepath.Join(cl.WorkDir(), f.ns+"-targets.json")
	f.writeTargets(targets)
	stopTargets := make(chan struct{})
	go func() {
		for {
			select {
			case <-stopTargets:
				return
			case <-time.After(500 * time.Millisecond):
				f.writeTargets(targets)
			}
		}
	}()
	DeferCleanup(func() { close(stopTargets) })
	Expect(prom.SetJobs(ctx, []cluster.ScrapeJob{{Name: f.ns, Files: []string{targets}}})).To(Succeed())
	Eventually(f.endpoints).WithTimeout(2*time.Minute).Should(HaveLen(n), func() string {
		out, _ := kubectl("-n", f.ns, "get", "pods", "-o", "wide")
		return out
	})
	f.load = startLoad(f)
	DeferCleanup(f.load.stop)
	return f
}

// writeTargets plays Prometheus's Kubernetes service discovery (Debian's Prometheus has none): every
// running pod of the fleet, at its IP, labelled with its name and namespace as the fleet's queries expect.
// The file is replaced atomically, and only when it changes.
func (f *fleet) writeTargets(path string) {
	type group struct {
		Targets []string          `json:"targets"`
		Labels  map[string]string `json:"labels"`
	}
	var list corev1.PodList
	if err := k8s.List(ctx, &list, client.InNamespace(f.ns), client.MatchingLabels{"app": f.name}); err != nil {
		return // the next round tries again
	}
	groups := []group{}
	for _, p := range list.Items {
		if p.Status.PodIP != "" && p.Status.Phase == corev1.PodRunning {
			groups = append(groups, group{
				Targets: []string{net.JoinHostPort(p.Status.PodIP, strconv.Itoa(appPort))},
				Labels:  map[string]string{"pod": p.Name, "namespace": p.Namespace},
			})
		}
	}
	slices.SortFunc(groups, func(a, b group) int { return strings.Compare(a.Labels["pod"], b.Labels["pod"]) })
	data, err := json.Marshal(groups)
	Expect(err).NotTo(HaveOccurred())
	if old, err := os.ReadFile(path); err == nil && string(old) == string(data) {
		return
	}
	Expect(os.WriteFile(path+".tmp", data, 0o644)).To(Succeed())
	Expect(os.Rename(path+".tmp", path)).To(Succeed())
}

// pods returns the names of the fleet's pods that are not terminating, sorted.
func (f *fleet) pods() []string {
	var out []string
	for _, p := range f.podList() {
		if p.DeletionTimestamp.IsZero() {
			out = append(out, p.Name)
		}
	}
	slices.Sort(out)
	return out
}

func (f *fleet) podList() []corev1.Pod {
	var list corev1.PodList
	Expect(k8s.List(ctx, &list, client.InNamespace(f.ns), client.MatchingLabels{"app": f.name})).To(Succeed())
	return list.Items
}

// endpoints returns the pods that are ready endpoints of the Service, sorted.
func (f *fleet) endpoints() []string {
	out, err := cluster.ReadyEndpoints(ctx, k8s, f.ns, f.name)
	Expect(err).NotTo(HaveOccurred())
	return out
}

func (f *fleet) pod(name string) *corev1.Pod {
	p := &corev1.Pod{}
	Expect(k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: name}, p)).To(Succeed())
	return p
}

func (f *fleet) state(name string) podstate.State { return podstate.Of(f.pod(name), time.Now()) }

func (f *fleet) traffic(name string) func() string {
	return func() string {
		p := &corev1.Pod{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: name}, p); err != nil {
			return "<gone>"
		}
		return p.Labels[kvv1.LabelTraffic]
	}
}

// condition returns a pod condition's status ("" when absent).
func (f *fleet) condition(name string, t corev1.PodConditionType) func() corev1.ConditionStatus {
	return func() corev1.ConditionStatus {
		for _, c := range f.pod(name).Status.Conditions {
			if c.Type == t {
				return c.Status
			}
		}
		return ""
	}
}

// control sends one of test/node/app's controls (/fault, /heal, /ready) to a pod, on its IP.
func (f *fleet) control(name, pathAndQuery string) {
	ip := f.pod(name).Status.PodIP
	Expect(ip).NotTo(BeEmpty())
	resp, err := http.Post("http://"+net.JoinHostPort(ip, strconv.Itoa(appPort))+pathAndQuery, "", nil)
	Expect(err).NotTo(HaveOccurred())
	_ = resp.Body.Close()
	Expect(resp.StatusCode).To(Equal(http.StatusOK), "POST %s to %s", pathAndQuery, name)
}

func (f *fleet) fail(name string, rate float64) {
	f.control(name, "/fault?errorRate="+strconv.FormatFloat(rate, 'f', -1, 64))
}
func (f *fleet) heal(name string) { f.control(name, "/heal") }

// discrete is a breaker over the fleet's HTTP codes through real PromQL, on a short window so that a
// healed pod's past errors are gone by the time its activator brings it back.
func (f *fleet) discrete(minInTraffic int32) kvv1.BreakerStrategy {
	return kvv1.BreakerStrategy{
		Name:                  "http-errors",
		EvaluationPeriod:      new(intstr.FromString("1s")),
		MinPodsAvailableCount: new(minInTraffic),
		DiscreteValueOutOfList: &kvv1.DiscreteValueOutOfList{
			PrometheusService: prom.Addr(),
			PromQL:            fmt.Sprintf(`sum(increase(demo_http_requests_total{namespace=%q}[6s])) by (code, pod)`, f.ns),
			Key:               "code",
			PodNameKey:        "pod",
			GoodValues:        []string{"200"},
			Tolerance:         new(int32(20)),
			MinActivity:       new(int32(5)),
		},
	}
}

func (f *fleet) createKVS(b kvv1.BreakerStrategy, activator *kvv1.ActivatorStrategy, mode kvv1.TrafficControl) {
	Expect(k8s.Create(ctx, &kvv1.KubervisorService{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: f.name},
		Spec: kvv1.KubervisorServiceSpec{
			Service: f.name, TrafficControl: mode, Breakers: []kvv1.BreakerStrategy{b}, DefaultActivator: activator,
		},
	})).To(Succeed())
	Eventually(func() metav1.ConditionStatus {
		if c := meta.FindStatusCondition(f.kvs().Status.Conditions, kvv1.ConditionReady); c != nil {
			return c.Status
		}
		return ""
	}).WithTimeout(time.Minute).Should(Equal(metav1.ConditionTrue), func() string { return describeManagers() })
}

func (f *fleet) kvs() *kvv1.KubervisorService {
	k := &kvv1.KubervisorService{}
	Expect(k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: f.name}, k)).To(Succeed())
	return k
}

// events returns the events of the KubervisorService's namespace with reason, oldest first.
func (f *fleet) events(reason string) []eventsv1.Event {
	var list eventsv1.EventList
	Expect(k8s.List(ctx, &list, client.InNamespace(f.ns))).To(Succeed())
	var out []eventsv1.Event
	for _, e := range list.Items {
		if e.Reason == reason {
			out = append(out, e)
		}
	}
	return out
}

// load is the fleet's client: it sends requests to the Service's ready endpoints in turn, as a mesh's
// client balancing over EndpointSlices would (there is no kube-proxy), and counts the answers by pod.
type load struct {
	f    *fleet
	quit chan struct{}
	wg   sync.WaitGroup

	mu      sync.Mutex
	targets []target
	next    int
	codes   map[string]map[int]int // pod -> status code (0: no answer) -> count
}

type target struct{ pod, addr string }

func startLoad(f *fleet) *load {
	l := &load{f: f, quit: make(chan struct{}), codes: map[string]map[int]int{}}
	l.refresh()
	l.wg.Go(func() {
		for {
			select {
			case <-l.quit:
				return
			case <-time.After(200 * time.Millisecond):
				l.refresh()
			}
		}
	})
	hc := &http.Client{Timeout: 2 * time.Second}
	for range 4 {
		l.wg.Go(func() {
			for {
				select {
				case <-l.quit:
					return
				case <-time.After(10 * time.Millisecond):
				}
				t, ok := l.pick()
				if !ok {
					continue
				}
				code := 0
				if resp, err := hc.Get("http://" + t.addr + "/"); err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					_ = resp.Body.Close()
					code = resp.StatusCode
				}
				l.record(t.pod, code)
			}
		})
	}
	return l
}

// refresh reads the ready endpoints of the Service's EndpointSlices.
func (l *load) refresh() {
	var list discoveryv1.EndpointSliceList
	if err := k8s.List(ctx, &list, client.InNamespace(l.f.ns), client.MatchingLabels{discoveryv1.LabelServiceName: l.f.name}); err != nil {
		return
	}
	var ts []target
	for _, sl := range list.Items {
		for _, e := range sl.Endpoints {
			if e.TargetRef == nil || len(e.Addresses) == 0 || (e.Conditions.Ready != nil && !*e.Conditions.Ready) {
				continue
			}
			ts = append(ts, target{pod: e.TargetRef.Name, addr: net.JoinHostPort(e.Addresses[0], strconv.Itoa(appPort))})
		}
	}
	l.mu.Lock()
	l.targets = ts
	l.mu.Unlock()
}

func (l *load) pick() (target, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.targets) == 0 {
		return target{}, false
	}
	l.next = (l.next + 1) % len(l.targets)
	return l.targets[l.next], true
}

func (l *load) record(pod string, code int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.codes[pod] == nil {
		l.codes[pod] = map[int]int{}
	}
	l.codes[pod][code]++
}

// failures returns the answers other than 200 (0: no answer at all) of pods other than except.
func (l *load) failures(except ...string) map[string]map[int]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]map[int]int{}
	for pod, codes := range l.codes {
		if slices.Contains(except, pod) {
			continue
		}
		for code, n := range codes {
			if code != http.StatusOK {
				if out[pod] == nil {
					out[pod] = map[int]int{}
				}
				out[pod][code] += n
			}
		}
	}
	return out
}

// total is the number of requests sent so far.
func (l *load) total() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, codes := range l.codes {
		for _, c := range codes {
			n += c
		}
	}
	return n
}

func (l *load) stop() {
	select {
	case <-l.quit:
	default:
		close(l.quit)
	}
	l.wg.Wait()
}

// watchFloor polls the Service's ready endpoints every 50ms until stopped and returns the fewest seen.
func (f *fleet) watchFloor() (stop func() int) {
	quit, done := make(chan struct{}), make(chan int)
	go func() {
		least := 1 << 30
		for {
			if eps, err := cluster.ReadyEndpoints(ctx, k8s, f.ns, f.name); err == nil {
				least = min(least, len(eps))
			}
			select {
			case <-quit:
				done <- least
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return func() int { close(quit); return <-done }
}
