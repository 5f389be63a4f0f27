package controller_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/rand"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/controller"
)

// These tests run the real manager, with all three reconcilers, against a real kube-apiserver and etcd
// (envtest). They assert through k8sClient, which does not read from the manager's cache.

var (
	cfg         *rest.Config
	k8sClient   client.Client
	testEnv     *envtest.Environment
	scheme      = runtime.NewScheme()
	detectors   *fakeDetectors
	metricsAddr string
	stopManager context.CancelFunc
	managerDone chan struct{}
	// requests records every request the manager sends to the API server.
	requests = &requestLog{}
)

func TestControllers(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Controller Suite")
}

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	Expect(clientgoscheme.AddToScheme(scheme)).To(Succeed())
	Expect(kvv1.AddToScheme(scheme)).To(Succeed())

	By("starting the control plane")
	testEnv = &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assetsDir(),
	}
	var err error
	cfg, err = testEnv.Start()
	Expect(err).NotTo(HaveOccurred())
	k8sClient, err = client.New(cfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())

	detectors = newFakeDetectors()
	DeferCleanup(detectors.server.Close)

	startManager()
})

var _ = AfterSuite(func() {
	if stopManager != nil {
		stopManager()
		<-managerDone
	}
	By("stopping the control plane")
	Expect(testEnv.Stop()).To(Succeed())
})

// startManager starts a manager wired exactly as cmd/main.go wires it (same cache options, same setup).
func startManager() { startManagerWith("", controller.Options{}) }

// startManagerWith starts a manager as startManager does, restricted to namespace (a namespaced install; ""
// for none) and with opts.
func startManagerWith(namespace string, opts controller.Options) {
	metricsAddr = fmt.Sprintf("127.0.0.1:%d", freePort())
	// The manager talks through a transport that records each request, so that tests can count writes.
	mcfg := rest.CopyConfig(cfg)
	mcfg.Wrap(requests.wrap)
	mgr, err := ctrl.NewManager(mcfg, ctrl.Options{
		Scheme:  scheme,
		Metrics: metricsserver.Options{BindAddress: metricsAddr},
		Cache:   controller.CacheOptions(namespace, nil, nil),
		// Tests restart the manager in one process: controller names are registered again.
		Controller: ctrlConfigSkipNameValidation(),
	})
	Expect(err).NotTo(HaveOccurred())
	ctx, cancel := context.WithCancel(context.Background())
	Expect(controller.SetupWithManager(ctx, mgr, opts)).To(Succeed())
	stopManager = cancel
	managerDone = make(chan struct{})
	go func() {
		defer GinkgoRecover()
		defer close(managerDone)
		Expect(mgr.Start(ctx)).To(Succeed())
	}()
}

// restartManager stops the running manager and starts a new one: nothing but the cluster carries over.
func restartManager() {
	stopManager()
	<-managerDone
	startManager()
}

// assetsDir is where the control-plane binaries are: the Makefile sets KUBEBUILDER_ASSETS from its
// ENVTEST_K8S_VERSION, the one place the version is written.
func assetsDir() string {
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		Fail("KUBEBUILDER_ASSETS is not set: run the tests with `make test`, which builds the control-plane binaries and sets it")
	}
	return dir
}

// requestLog records the requests of a client, in order.
type requestLog struct {
	mu      sync.Mutex
	entries []sentRequest
}

// sentRequest is one request: its method and URL.
type sentRequest struct {
	method string
	url    *url.URL
}

func (s sentRequest) String() string { return s.method + " " + s.url.RequestURI() }

func (l *requestLog) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		l.mu.Lock()
		l.entries = append(l.entries, sentRequest{method: req.Method, url: req.URL})
		l.mu.Unlock()
		return rt.RoundTrip(req)
	})
}

// mark returns a position in the log, for since.
func (l *requestLog) mark() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.entries)
}

// since returns the requests after mark that concern namespace ns and that match keep.
func (l *requestLog) since(mark int, ns string, keep func(sentRequest) bool) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, r := range l.entries[mark:] {
		if strings.Contains(r.url.Path, "/namespaces/"+ns+"/") && keep(r) {
			out = append(out, r.String())
		}
	}
	return out
}

// isWrite is every request but a read (GET, which covers get, list and watch).
func isWrite(r sentRequest) bool { return r.method != http.MethodGet }

// isLivePodList is a LIST of pods in one namespace: the manager's cache lists and watches pods across
// the cluster, so a namespaced list is a read that bypasses the cache.
func isLivePodList(r sentRequest) bool {
	return r.method == http.MethodGet && strings.HasSuffix(r.url.Path, "/pods") && r.url.Query().Get("watch") == ""
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// fakeDetectors is a custom detector service whose answers tests set per breaker, keyed
// "namespace/kubervisorservice/breaker". Unknown keys answer an empty list (NoData).
type fakeDetectors struct {
	mu      sync.Mutex
	answers map[string][]string
	fail    map[string]int
	calls   map[string]int
	server  *httptest.Server
}

func newFakeDetectors() *fakeDetectors {
	f := &fakeDetectors{answers: map[string][]string{}, fail: map[string]int{}, calls: map[string]int{}}
	f.server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		key := q.Get("namespace") + "/" + q.Get("kubervisorservice") + "/" + q.Get("breaker")
		f.mu.Lock()
		f.calls[key]++
		pods, code := f.answers[key], f.fail[key]
		f.mu.Unlock()
		if code != 0 {
			http.Error(w, "detector broken", code)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string][]string{"pods": pods})
	}))
	return f
}

func (f *fakeDetectors) set(ns, kvs, breaker string, pods ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answers[ns+"/"+kvs+"/"+breaker] = pods
	delete(f.fail, ns+"/"+kvs+"/"+breaker)
}

func (f *fakeDetectors) failWith(ns, kvs, breaker string, code int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail[ns+"/"+kvs+"/"+breaker] = code
}

func (f *fakeDetectors) callCount(ns, kvs, breaker string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[ns+"/"+kvs+"/"+breaker]
}

// --- object builders -------------------------------------------------------------------------------------

func newNamespace() string {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "t-" + rand.String(6)}}
	Expect(k8sClient.Create(context.Background(), ns)).To(Succeed())
	return ns.Name
}

func newService(ns, name string, selector map[string]string) *corev1.Service {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{
			Selector: selector,
			Ports:    []corev1.ServicePort{{Port: 80}},
		},
	}
	Expect(k8sClient.Create(context.Background(), svc)).To(Succeed())
	return svc
}

// newPod creates a pod and, when ready, sets its Ready condition through the status subresource (there is no
// kubelet in envtest).
func newPod(ns, name string, labels map[string]string, ready bool) *corev1.Pod {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:1"}}},
	}
	Expect(k8sClient.Create(context.Background(), pod)).To(Succeed())
	setReady(pod, ready)
	return pod
}

func setReady(pod *corev1.Pod, ready bool) {
	ctx := context.Background()
	Eventually(func() error {
		if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
			return err
		}
		status := corev1.ConditionFalse
		if ready {
			status = corev1.ConditionTrue
		}
		pod.Status.Phase = corev1.PodRunning
		pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: status, LastTransitionTime: metav1.Now()}}
		return k8sClient.Status().Update(ctx, pod)
	}).Should(Succeed())
}

// newKVS creates a KubervisorService with one custom-service breaker per name, answered by detectors.
func newKVS(ns, name, service string, mutate func(*kvv1.KubervisorService), breakers ...string) *kvv1.KubervisorService {
	if len(breakers) == 0 {
		breakers = []string{"b"}
	}
	kvs := &kvv1.KubervisorService{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       kvv1.KubervisorServiceSpec{Service: service},
	}
	for _, b := range breakers {
		kvs.Spec.Breakers = append(kvs.Spec.Breakers, kvv1.BreakerStrategy{
			Name:             b,
			EvaluationPeriod: ptrIntOrString("200ms"),
			CustomService:    &kvv1.CustomService{URL: detectors.server.URL + "/anomalies"},
		})
	}
	if mutate != nil {
		mutate(kvs)
	}
	Expect(k8sClient.Create(context.Background(), kvs)).To(Succeed())
	return kvs
}

func getPod(ns, name string) *corev1.Pod {
	pod := &corev1.Pod{}
	Expect(k8sClient.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, pod)).To(Succeed())
	return pod
}

func getKVS(ns, name string) *kvv1.KubervisorService {
	kvs := &kvv1.KubervisorService{}
	Expect(k8sClient.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, kvs)).To(Succeed())
	return kvs
}

// editKVS changes a KubervisorService's spec, read afresh at each try: the manager writes its status and
// finalizer meanwhile, and an update on a stale resourceVersion is refused (a conflict).
func editKVS(ns, name string, mutate func(*kvv1.KubervisorService)) {
	Eventually(func() error {
		kvs := getKVS(ns, name)
		mutate(kvs)
		return k8sClient.Update(context.Background(), kvs)
	}).Should(Succeed())
}

// podLabels returns a function for Eventually that reads a pod's labels through the non-cached client.
func podLabels(ns, name string) func() map[string]string {
	return func() map[string]string {
		pod := &corev1.Pod{}
		if err := k8sClient.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, pod); err != nil {
			return nil
		}
		return pod.Labels
	}
}

func podCounts(ns, name string) func() kvv1.PodCounts {
	return func() kvv1.PodCounts {
		kvs := &kvv1.KubervisorService{}
		if err := k8sClient.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, kvs); err != nil {
			return kvv1.PodCounts{Managed: -1}
		}
		return kvs.Status.Pods
	}
}

func condition(ns, name, t string) func() metav1.Condition {
	return func() metav1.Condition {
		kvs := &kvv1.KubervisorService{}
		if err := k8sClient.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, kvs); err != nil {
			return metav1.Condition{}
		}
		for _, c := range kvs.Status.Conditions {
			if c.Type == t {
				return c
			}
		}
		return metav1.Condition{}
	}
}

func patchLabels(obj client.Object, set map[string]string) {
	ctx := context.Background()
	Eventually(func() error {
		if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		base := obj.DeepCopyObject().(client.Object)
		l := obj.GetLabels()
		if l == nil {
			l = map[string]string{}
		}
		maps.Copy(l, set)
		obj.SetLabels(l)
		return k8sClient.Patch(ctx, obj, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}))
	}).Should(Succeed())
}

func setSelector(ns, name string, selector map[string]string) {
	ctx := context.Background()
	Eventually(func() error {
		svc := &corev1.Service{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, svc); err != nil {
			return err
		}
		svc.Spec.Selector = selector
		return k8sClient.Update(ctx, svc)
	}).Should(Succeed())
}

func init() {
	SetDefaultEventuallyTimeout(20 * time.Second)
	SetDefaultEventuallyPollingInterval(100 * time.Millisecond)
	SetDefaultConsistentlyDuration(2 * time.Second)
	SetDefaultConsistentlyPollingInterval(200 * time.Millisecond)
}
