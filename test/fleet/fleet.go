// Package fleet is the demo fleet: it plays the role of the application running in the pods of a
// namespace that a label selector picks (a Deployment's, typically), on a cluster without a kubelet.
//
// A Fleet serves, on one 127.0.0.1 HTTP endpoint that Prometheus scrapes, per-pod metrics of a pretend
// price service: a request counter by code (MetricRequests), a price gauge (MetricPrice) and a
// latency histogram (MetricDuration). Requests only reach pods that receive traffic: the ready
// endpoints of Options.Service when it is set (so a pod Kubervisor ejects stops counting requests, as
// it would in production), else the Ready pods. Pods that appear are served at once; pods that
// disappear stop being served.
//
// Tests and users make chosen pods misbehave at runtime: SetErrorRate (a share of 500s), SetDeviation
// (a price and latency factor), Heal; the same through HTTP (POST /fault, POST /heal). The
// recommended PromQL for the detectors is in queries.go.
package fleet

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"

	"github.com/kubervisor/kubervisor/internal/podstate"
	"github.com/kubervisor/kubervisor/test/cluster"
)

// ErrUnknownPod is returned for a pod the fleet does not serve (not in the selection, or not running).
var ErrUnknownPod = errors.New("pod is not in the fleet")

// Options configures a Fleet.
type Options struct {
	// Namespace of the fleet's pods (required).
	Namespace string
	// Selector is a label selector of the fleet's pods. Either Selector or Deployment is required.
	Selector string
	// Deployment names a Deployment whose selector picks the fleet's pods.
	Deployment string
	// Service, when set, routes requests to the pods that are ready endpoints of its EndpointSlices
	// only; otherwise every Ready pod receives requests.
	Service string
	// ListenAddress of the metrics and control endpoint; default 127.0.0.1:0 (a free port).
	ListenAddress string
	// Interval between two rounds of requests; default 100ms.
	Interval time.Duration
	// RequestsPerInterval each pod in traffic answers per round; default 10 (100 requests/s).
	RequestsPerInterval int
	// BaselineErrorRate is the share of requests a healthy pod answers 404; 0 means 0.01, a negative
	// value means none. It stays well under a discrete breaker's default tolerance.
	BaselineErrorRate float64
	// BasePrice is a healthy pod's price; default 100.
	BasePrice float64
	// BaseLatency is a healthy pod's request duration; default 50ms.
	BaseLatency time.Duration
	// Kubelet, when set, is the fake kubelet SetReady goes through (the cluster's, typically).
	Kubelet *cluster.Kubelet
	// RunKubelet starts a fake kubelet restricted to the fleet's namespace and selector, for pods
	// that the cluster's own kubelet does not handle (a separate demo-fleet process, or a cluster
	// started with DisableKubelet or a kubelet restricted to another namespace).
	RunKubelet bool
	// KubeletOptions configures the kubelet of RunKubelet; its Namespace and Selector are the
	// fleet's. Give it a PodCIDR disjoint from the cluster kubelet's.
	KubeletOptions cluster.KubeletOptions
}

// PodInfo is what the fleet knows of one pod.
type PodInfo struct {
	// Name of the pod.
	Name string `json:"name"`
	// Ready is the pod's PodReady condition.
	Ready bool `json:"ready"`
	// InTraffic: the pod answers requests (a ready endpoint of Options.Service, or Ready).
	InTraffic bool `json:"inTraffic"`
	// ErrorRate is the share of requests answered 500 (SetErrorRate).
	ErrorRate float64 `json:"errorRate"`
	// Deviation is the factor on the pod's price and latency (SetDeviation); 1 is healthy, 0 a price of 0.
	Deviation float64 `json:"deviation"`
}

type podState struct {
	PodInfo
	errAcc, baseAcc float64 // fractional requests carried to the next round, so rates are exact
	seq             uint64
	phase           float64
}

// Fleet is a running demo fleet.
type Fleet struct {
	cs   kubernetes.Interface
	opts Options
	sel  labels.Selector

	registry *prometheus.Registry
	requests *prometheus.CounterVec
	price    *prometheus.GaugeVec
	duration *prometheus.HistogramVec

	pods       corelisters.PodLister
	slices     discoverylisters.EndpointSliceLister
	listener   net.Listener
	server     *http.Server
	kubelet    *cluster.Kubelet
	ownKubelet bool
	factories  []informers.SharedInformerFactory
	cancel     context.CancelFunc
	done       sync.WaitGroup

	mu    sync.Mutex
	state map[string]*podState
}

// Start starts a fleet: it watches the pods (and the Service's EndpointSlices), listens, and sends
// requests every Interval until Stop or ctx is done.
func Start(ctx context.Context, cs kubernetes.Interface, opts Options) (*Fleet, error) {
	if opts.Namespace == "" {
		return nil, errors.New("fleet: a namespace is required")
	}
	if opts.ListenAddress == "" {
		opts.ListenAddress = "127.0.0.1:0"
	}
	if opts.Interval <= 0 {
		opts.Interval = 100 * time.Millisecond
	}
	if opts.RequestsPerInterval <= 0 {
		opts.RequestsPerInterval = 10
	}
	if opts.BaselineErrorRate == 0 {
		opts.BaselineErrorRate = 0.01
	}
	opts.BaselineErrorRate = max(opts.BaselineErrorRate, 0)
	if opts.BasePrice <= 0 {
		opts.BasePrice = 100
	}
	if opts.BaseLatency <= 0 {
		opts.BaseLatency = 50 * time.Millisecond
	}
	if opts.Deployment != "" {
		d, err := cs.AppsV1().Deployments(opts.Namespace).Get(ctx, opts.Deployment, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("fleet: reading Deployment %s/%s: %w", opts.Namespace, opts.Deployment, err)
		}
		sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
		if err != nil {
			return nil, fmt.Errorf("fleet: selector of Deployment %s/%s: %w", opts.Namespace, opts.Deployment, err)
		}
		opts.Selector = sel.String()
	}
	if opts.Selector == "" {
		return nil, errors.New("fleet: a selector or a Deployment is required")
	}
	sel, err := labels.Parse(opts.Selector)
	if err != nil {
		return nil, fmt.Errorf("fleet: parsing selector %q: %w", opts.Selector, err)
	}

	f := &Fleet{cs: cs, opts: opts, sel: sel, state: map[string]*podState{}, kubelet: opts.Kubelet}
	f.registry = prometheus.NewRegistry()
	f.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricRequests, Help: "Requests answered by the demo fleet's pods, by code.",
	}, []string{NamespaceLabel, PodLabel, CodeLabel})
	f.price = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: MetricPrice, Help: "The price each demo pod computes.",
	}, []string{NamespaceLabel, PodLabel})
	f.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: MetricDuration, Help: "Request durations of the demo fleet's pods.",
		Buckets: []float64{0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5},
	}, []string{NamespaceLabel, PodLabel})
	f.registry.MustRegister(f.requests, f.price, f.duration)

	bg, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	ok := false
	defer func() {
		if !ok {
			f.Stop()
		}
	}()

	podFactory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(opts.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = opts.Selector }))
	f.pods = podFactory.Core().V1().Pods().Lister()
	podFactory.Core().V1().Pods().Informer()
	podFactory.Start(bg.Done())
	f.factories = []informers.SharedInformerFactory{podFactory}
	if opts.Service != "" {
		sliceFactory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(opts.Namespace),
			informers.WithTweakListOptions(func(o *metav1.ListOptions) {
				o.LabelSelector = discoveryv1.LabelServiceName + "=" + opts.Service
			}))
		f.slices = sliceFactory.Discovery().V1().EndpointSlices().Lister()
		sliceFactory.Discovery().V1().EndpointSlices().Informer()
		sliceFactory.Start(bg.Done())
		f.factories = append(f.factories, sliceFactory)
	}
	for _, fac := range f.factories {
		for typ, synced := range fac.WaitForCacheSync(ctx.Done()) {
			if !synced {
				return nil, fmt.Errorf("fleet: syncing the cache of %v", typ)
			}
		}
	}

	if opts.RunKubelet {
		kopts := opts.KubeletOptions
		kopts.Namespace, kopts.Selector = opts.Namespace, opts.Selector
		k, err := cluster.NewKubelet(cs, kopts)
		if err != nil {
			return nil, err
		}
		if err := k.Start(bg); err != nil {
			return nil, fmt.Errorf("fleet: starting the fake kubelet: %w", err)
		}
		f.kubelet, f.ownKubelet = k, true
	}

	if f.listener, err = net.Listen("tcp", opts.ListenAddress); err != nil {
		return nil, fmt.Errorf("fleet: listening on %s: %w", opts.ListenAddress, err)
	}
	f.server = &http.Server{Handler: f.Handler(), ReadHeaderTimeout: 10 * time.Second}
	f.done.Go(func() { _ = f.server.Serve(f.listener) })
	f.done.Go(func() {
		t := time.NewTicker(opts.Interval)
		defer t.Stop()
		for {
			select {
			case <-bg.Done():
				return
			case now := <-t.C:
				f.tick(now)
			}
		}
	})
	f.tick(time.Now())
	ok = true
	return f, nil
}

// Stop stops serving and sending requests (and the fleet's own kubelet, if any).
func (f *Fleet) Stop() {
	if f.server != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = f.server.Shutdown(ctx)
		cancel()
	}
	if f.ownKubelet {
		f.kubelet.Stop()
	}
	if f.cancel != nil {
		f.cancel()
	}
	f.done.Wait()
	for _, fac := range f.factories {
		fac.Shutdown()
	}
}

// Addr is the host:port Prometheus scrapes (/metrics) and users control the fleet on.
func (f *Fleet) Addr() string { return f.listener.Addr().String() }

// URL is the base URL of the fleet's HTTP endpoint.
func (f *Fleet) URL() string { return "http://" + f.Addr() }

// Namespace is the fleet's namespace.
func (f *Fleet) Namespace() string { return f.opts.Namespace }

// Selector is the label selector of the fleet's pods.
func (f *Fleet) Selector() string { return f.opts.Selector }

// Registry is the fleet's own Prometheus registry.
func (f *Fleet) Registry() *prometheus.Registry { return f.registry }

// SetErrorRate makes pod answer a share ratio (0..1) of its requests with code 500.
func (f *Fleet) SetErrorRate(pod string, ratio float64) error {
	if ratio < 0 || ratio > 1 || math.IsNaN(ratio) {
		return fmt.Errorf("error rate %v is not within 0..1", ratio)
	}
	return f.update(pod, func(p *podState) { p.ErrorRate = ratio })
}

// SetDeviation multiplies pod's price and latency by factor (>= 0; 1 is healthy). A factor of 0 is the
// KubeCon pricer's fault: the pod answers price 0 (at once).
func (f *Fleet) SetDeviation(pod string, factor float64) error {
	if !(factor >= 0) || math.IsInf(factor, 0) {
		return fmt.Errorf("deviation factor %v is not a non-negative number", factor)
	}
	return f.update(pod, func(p *podState) { p.Deviation = factor })
}

// Heal removes pod's faults.
func (f *Fleet) Heal(pod string) error {
	return f.update(pod, func(p *podState) { p.ErrorRate, p.Deviation = 0, 1 })
}

// HealAll removes the faults of every pod.
func (f *Fleet) HealAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range f.state {
		p.ErrorRate, p.Deviation = 0, 1
	}
}

// SetReady forces pod's readiness through the fake kubelet (Options.Kubelet or RunKubelet).
func (f *Fleet) SetReady(pod string, ready bool) error {
	if f.kubelet == nil {
		return errors.New("the fleet has no kubelet to change readiness through")
	}
	if err := f.update(pod, func(*podState) {}); err != nil {
		return err
	}
	f.kubelet.SetReady(f.opts.Namespace, pod, ready)
	return nil
}

func (f *Fleet) update(pod string, fn func(*podState)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.syncLocked()
	p, ok := f.state[pod]
	if !ok {
		return fmt.Errorf("%w: %s/%s", ErrUnknownPod, f.opts.Namespace, pod)
	}
	fn(p)
	return nil
}

// Pods returns the pods the fleet serves, by name.
func (f *Fleet) Pods() []PodInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.syncLocked()
	out := make([]PodInfo, 0, len(f.state))
	for _, p := range f.state {
		out = append(out, p.PodInfo)
	}
	slices.SortFunc(out, func(a, b PodInfo) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// WaitForPods waits until the fleet serves at least n pods that receive traffic.
func (f *Fleet) WaitForPods(ctx context.Context, n int, timeout time.Duration) error {
	var got int
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		got = 0
		for _, p := range f.Pods() {
			if p.InTraffic {
				got++
			}
		}
		return got >= n, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for %d pods in traffic (have %d): %w", n, got, err)
	}
	return nil
}

// Anomalies returns the pods with a fault, worst first: by error rate, then by how far their
// deviation is from 1. It is what the fleet's custom detector endpoint answers.
func (f *Fleet) Anomalies() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.syncLocked()
	var bad []*podState
	for _, p := range f.state {
		if p.ErrorRate > 0 || p.Deviation != 1 {
			bad = append(bad, p)
		}
	}
	slices.SortFunc(bad, func(a, b *podState) int {
		return cmp.Or(
			cmp.Compare(b.ErrorRate, a.ErrorRate),
			cmp.Compare(math.Abs(math.Log(b.Deviation)), math.Abs(math.Log(a.Deviation))),
			strings.Compare(a.Name, b.Name),
		)
	})
	names := make([]string, len(bad))
	for i, p := range bad {
		names[i] = p.Name
	}
	return names
}

// syncLocked reconciles the served pods with the informers' view: new running pods get their series,
// vanished ones lose them, and readiness and traffic are refreshed.
func (f *Fleet) syncLocked() {
	pods, err := f.pods.Pods(f.opts.Namespace).List(f.sel)
	if err != nil {
		return
	}
	var endpoints map[string]bool
	if f.slices != nil {
		endpoints = map[string]bool{}
		eps, _ := f.slices.EndpointSlices(f.opts.Namespace).List(labels.Everything())
		for _, s := range eps {
			for _, e := range s.Endpoints {
				if e.TargetRef != nil && e.TargetRef.Kind == "Pod" && (e.Conditions.Ready == nil || *e.Conditions.Ready) {
					endpoints[e.TargetRef.Name] = true
				}
			}
		}
	}
	seen := map[string]bool{}
	for _, pod := range pods {
		if pod.Status.Phase != corev1.PodRunning {
			continue
		}
		seen[pod.Name] = true
		p, ok := f.state[pod.Name]
		if !ok {
			p = &podState{PodInfo: PodInfo{Name: pod.Name, Deviation: 1}, phase: float64(len(f.state)) * 0.7}
			f.state[pod.Name] = p
			// Series start at zero so that increase() sees the first errors of a pod.
			for _, code := range []string{"200", "404", "500"} {
				f.requests.WithLabelValues(f.opts.Namespace, pod.Name, code)
			}
		}
		p.Ready = podstate.Ready(pod)
		if endpoints != nil {
			p.InTraffic = endpoints[pod.Name]
		} else {
			p.InTraffic = p.Ready && pod.DeletionTimestamp == nil
		}
	}
	for name := range f.state {
		if !seen[name] {
			delete(f.state, name)
			match := prometheus.Labels{NamespaceLabel: f.opts.Namespace, PodLabel: name}
			f.requests.DeletePartialMatch(match)
			f.price.DeletePartialMatch(match)
			f.duration.DeletePartialMatch(match)
		}
	}
}

// tick is one round: every pod publishes its price, every pod in traffic answers its requests.
func (f *Fleet) tick(now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.syncLocked()
	ns := f.opts.Namespace
	t := float64(now.UnixNano()) / 1e9
	for _, p := range f.state {
		f.price.WithLabelValues(ns, p.Name).Set(f.opts.BasePrice * p.Deviation * (1 + 0.01*math.Sin(t/10+p.phase)))
		if !p.InTraffic {
			continue
		}
		n := float64(f.opts.RequestsPerInterval)
		p.errAcc += n * p.ErrorRate
		errs := math.Floor(p.errAcc)
		p.errAcc -= errs
		p.baseAcc += (n - errs) * f.opts.BaselineErrorRate
		notFound := math.Floor(p.baseAcc)
		p.baseAcc -= notFound
		f.requests.WithLabelValues(ns, p.Name, "500").Add(errs)
		f.requests.WithLabelValues(ns, p.Name, "404").Add(notFound)
		f.requests.WithLabelValues(ns, p.Name, "200").Add(n - errs - notFound)
		h := f.duration.WithLabelValues(ns, p.Name)
		base := f.opts.BaseLatency.Seconds() * p.Deviation
		for range f.opts.RequestsPerInterval {
			// A deterministic spread of ±20% around the pod's latency (golden-ratio sequence).
			p.seq++
			frac := math.Mod(float64(p.seq)*0.6180339887, 1)
			h.Observe(base * (0.8 + 0.4*frac))
		}
	}
}

// Handler serves the fleet's endpoints:
//
//	GET  /metrics                                 the metrics, for Prometheus
//	GET  /pods                                    the pods as JSON
//	GET  /anomalies                               {"pods":[...]}, faulty pods worst first (a customService detector)
//	POST /fault?pod=NAME&errors=0.8&deviation=3   inject a fault (either parameter or both)
//	POST /heal[?pod=NAME]                         heal one pod, or every pod
//	POST /ready?pod=NAME&ready=false              force readiness (through the fake kubelet)
func (f *Fleet) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(f.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /pods", f.handlePods)
	mux.HandleFunc("GET "+CustomDetectorPath, f.handleAnomalies)
	mux.HandleFunc("POST /fault", f.handleFault)
	mux.HandleFunc("POST /heal", f.handleHeal)
	mux.HandleFunc("POST /ready", f.handleReady)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, helpText)
	})
	return mux
}

const helpText = `demo fleet
  GET  /metrics                                 metrics for Prometheus
  GET  /pods                                    the pods as JSON
  GET  /anomalies                               {"pods":[...]}: pods with a fault, worst first
  POST /fault?pod=NAME&errors=0.8&deviation=3   make a pod answer 80% 500s and/or deviate 3x
  POST /heal[?pod=NAME]                         heal one pod, or every pod
  POST /ready?pod=NAME&ready=false              force a pod's readiness
`
