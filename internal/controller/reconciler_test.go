package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/detector"
	"github.com/kubervisor/kubervisor/internal/podstate"
)

// These tests drive the reconcilers directly, the way Kueue tests its Pod reconcilers: a fake client with
// the production indexes, a fake clock, an in-memory detector, a recording event recorder, and exact
// expectations on the result (RequeueAfter), the pod patches sent, the events and the status.

const testNS = "ns"

var testScheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := kvv1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}()

// --- fixtures --------------------------------------------------------------------------------------------

func testService(trafficKey bool) *corev1.Service {
	sel := map[string]string{"app": "a"}
	if trafficKey {
		sel[kvv1.LabelTraffic] = kvv1.TrafficYes
	}
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: "svc"}, Spec: corev1.ServiceSpec{Selector: sel}}
}

// testPod is a Ready pod of the Service, adopted by "kvs", with the given traffic label ("" for none).
func testPod(name, traffic string, annotations map[string]string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: name, Annotations: annotations,
			Labels: map[string]string{"app": "a", kvv1.LabelName: "kvs"}},
		Status: corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
	if traffic != "" {
		p.Labels[kvv1.LabelTraffic] = traffic
	}
	return p
}

// pausedBy is a pod that breaker paused.
func pausedBy(name, breakerName string) *corev1.Pod {
	p := testPod(name, kvv1.TrafficPause, nil)
	p.Labels[kvv1.LabelStrategy] = breakerName
	return p
}

// ejectedPod is a pod ejected by breaker "b" at breakAt with the given retry count, as the breaker writes it
// but with no activator fingerprint, as a version that recorded none wrote it (the activator then judges it
// by the activator in force, whatever it is).
func ejectedPod(name string, retries int32, breakAt time.Time) *corev1.Pod {
	return ejectedUnder(name, retries, breakAt, "")
}

// recordedPod is ejectedPod as this version writes it under a KubervisorService that sets neither mode nor
// maxRetryCount: with the fingerprint of the built-in activator.
func recordedPod(name string, retries int32, breakAt time.Time) *corev1.Pod {
	return ejectedUnder(name, retries, breakAt, defaultFingerprint)
}

func ejectedUnder(name string, retries int32, breakAt time.Time, fingerprint string) *corev1.Pod {
	p := testPod(name, kvv1.TrafficYes, nil)
	podstate.Eject(podstate.State{RetryCount: retries - 1}, "b", breakAt, fingerprint).ApplyTo(&p.ObjectMeta)
	return p
}

// defaultFingerprint is the fingerprint of the built-in activator (periodic, the default maxRetryCount), the
// one in force for breaker "b" of a KubervisorService that sets neither mode nor maxRetryCount.
var defaultFingerprint = kvv1.ResolvedActivator{Mode: kvv1.ActivatorModePeriodic, MaxRetryCount: kvv1.DefaultMaxRetryCount}.Fingerprint()

// testKVS has one customService breaker per name, every 5s, its finalizer already set.
func testKVS(mutate func(*kvv1.KubervisorService), breakers ...string) *kvv1.KubervisorService {
	k := &kvv1.KubervisorService{
		ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: "kvs", Generation: 1, Finalizers: []string{kvv1.Finalizer},
			CreationTimestamp: metav1.NewTime(t0.Add(-time.Hour))},
		Spec: kvv1.KubervisorServiceSpec{Service: "svc"},
	}
	five := intstr.FromInt32(5)
	for _, b := range breakers {
		k.Spec.Breakers = append(k.Spec.Breakers, kvv1.BreakerStrategy{
			Name: b, EvaluationPeriod: &five, CustomService: &kvv1.CustomService{URL: "detector:8080/" + b}})
	}
	if mutate != nil {
		mutate(k)
	}
	return k
}

// --- doubles ---------------------------------------------------------------------------------------------

// fakeDetector answers what a test sets, counting its calls.
type fakeDetector struct {
	mu    sync.Mutex
	pods  []string
	err   error
	calls int
}

func (d *fakeDetector) Detect(_ context.Context, req detector.Request) (detector.Result, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls++
	if d.err != nil {
		return detector.Result{}, d.err
	}
	var res detector.Result
	for _, p := range d.pods {
		if _, ok := req.Pods[p]; ok {
			res.Anomalies = append(res.Anomalies, detector.Anomaly{Pod: p, Reason: "flagged"})
		}
	}
	res.NoData = len(res.Anomalies) == 0
	// As the Prometheus detectors say it: every sample (here, every flagged pod) about a pod out of traffic.
	res.OutOfTrafficOnly = !res.NoData && req.InTraffic != nil && !slices.ContainsFunc(res.Anomalies, func(a detector.Anomaly) bool {
		_, in := req.InTraffic[a.Pod]
		return in
	})
	return res, nil
}

// eventLog records events as "Type Reason Action Kind/name: note".
type eventLog struct {
	mu     sync.Mutex
	events []string
}

func (l *eventLog) Eventf(regarding, _ runtime.Object, eventtype, reason, action, note string, args ...any) {
	name := "?"
	switch o := regarding.(type) {
	case *kvv1.KubervisorService:
		name = "KubervisorService/" + o.Name
	case *corev1.Pod:
		name = "Pod/" + o.Name
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, fmt.Sprintf("%s %s %s %s: %s", eventtype, reason, action, name, fmt.Sprintf(note, args...)))
}

func (l *eventLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.events
	l.events = nil
	return out
}

// fakeEvictor records evictions and answers err.
type fakeEvictor struct {
	err     error
	evicted []string
}

func (e *fakeEvictor) Evict(_ context.Context, namespace, name string) error {
	e.evicted = append(e.evicted, namespace+"/"+name)
	return e.err
}

// harness wires a reconciler on a fake client that records what is sent.
type harness struct {
	t      *testing.T
	client client.Client
	clock  *clocktesting.FakeClock
	events *eventLog
	// detectors are the breakers' fake detectors, built by the pass's concurrent queries (detectorsMu).
	detectorsMu sync.Mutex
	detectors   map[string]*fakeDetector
	evictor     *fakeEvictor
	// patches are the pod patches sent, as "name: body"; statusWrites counts status updates; liveLists
	// counts pod lists through the API reader.
	patches []string
	// statusPatches are the pod subresource patches sent, as "name/subresource type: body".
	statusPatches []string
	statusWrites  int
	liveLists     int
	// failStatus makes the next status writes fail (a server error); conflictPods makes every patch of these
	// pods fail with a conflict.
	failStatus   int
	conflictPods map[string]bool
	// refusePods makes every patch of these pods fail as an admission webhook's refusal does.
	refusePods map[string]bool
	// lists counts the cache lists by list type and field selector ("*v1alpha1.KubervisorServiceList
	// spec.service=svc").
	lists map[string]int
	// gets counts the cache reads of single objects by type ("*v1alpha1.KubervisorService").
	gets map[string]int
	// adoptions is shared by the reconcilers the harness builds, as SetupWithManager shares it.
	adoptions *adoptionFailures
}

func newHarness(t *testing.T, objs ...client.Object) *harness {
	h := &harness{t: t, clock: clocktesting.NewFakeClock(t0), events: &eventLog{}, detectors: map[string]*fakeDetector{},
		evictor: &fakeEvictor{}, adoptions: newAdoptionFailures(), lists: map[string]int{},
		gets: map[string]int{}}
	builder := fake.NewClientBuilder().WithScheme(testScheme)
	// The production indexes, through the function cmd/main.go calls.
	if err := SetupIndexes(context.Background(), builderIndexer{builder}); err != nil {
		t.Fatal(err)
	}
	h.client = builder.
		WithStatusSubresource(&kvv1.KubervisorService{}, &corev1.Pod{}).
		WithObjects(objs...).
		WithInterceptorFuncs(interceptor.Funcs{
			Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
				if _, ok := obj.(*corev1.Pod); ok {
					data, err := patch.Data(obj)
					if err != nil {
						return err
					}
					h.patches = append(h.patches, obj.GetName()+": "+string(data))
					if h.refusePods[obj.GetName()] {
						return apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, obj.GetName(),
							errors.New(`admission webhook "labels.example.com" denied the request: kubervisor labels are not allowed`))
					}
					if h.conflictPods[obj.GetName()] {
						return apierrors.NewConflict(schema.GroupResource{Resource: "pods"}, obj.GetName(), errors.New("the object has been modified"))
					}
				}
				return c.Patch(ctx, obj, patch, opts...)
			},
			Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
				h.gets[fmt.Sprintf("%T", obj)]++
				return c.Get(ctx, key, obj, opts...)
			},
			List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
				o := &client.ListOptions{}
				o.ApplyOptions(opts)
				key := fmt.Sprintf("%T", list)
				if o.FieldSelector != nil {
					key += " " + o.FieldSelector.String()
				}
				h.lists[key]++
				return c.List(ctx, list, opts...)
			},
			SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch,
				opts ...client.SubResourcePatchOption) error {
				if _, ok := obj.(*kvv1.KubervisorService); ok {
					h.statusWrites++
					if h.failStatus > 0 {
						h.failStatus--
						return apierrors.NewInternalError(errors.New("etcdserver: request timed out"))
					}
				}
				if _, ok := obj.(*corev1.Pod); ok {
					data, err := patch.Data(obj)
					if err != nil {
						return err
					}
					h.statusPatches = append(h.statusPatches, fmt.Sprintf("%s/%s %s: %s", obj.GetName(), sub, patch.Type(), data))
				}
				return c.SubResource(sub).Patch(ctx, obj, patch, opts...)
			},
			SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
				h.statusWrites++
				if h.failStatus > 0 {
					h.failStatus--
					return apierrors.NewConflict(schema.GroupResource{Group: kvv1.GroupVersion.Group, Resource: "kubervisorservices"},
						obj.GetName(), errors.New("the object has been modified"))
				}
				return c.SubResource(sub).Update(ctx, obj, opts...)
			},
		}).Build()
	return h
}

// builderIndexer registers indexes on a fake client builder, so that SetupIndexes serves the unit tests too.
type builderIndexer struct{ b *fake.ClientBuilder }

func (i builderIndexer) IndexField(_ context.Context, obj client.Object, field string, extract client.IndexerFunc) error {
	i.b.WithIndex(obj, field, extract)
	return nil
}

// answer sets what breaker b's detector says.
func (h *harness) answer(b string, err error, pods ...string) {
	h.detectorsMu.Lock()
	defer h.detectorsMu.Unlock()
	d, ok := h.detectors[b]
	if !ok {
		d = &fakeDetector{}
		h.detectors[b] = d
	}
	d.pods, d.err = pods, err
}

func (h *harness) calls(b string) int {
	h.detectorsMu.Lock()
	defer h.detectorsMu.Unlock()
	if d, ok := h.detectors[b]; ok {
		return d.calls
	}
	return 0
}

// liveReader counts the pod lists that bypass the cache.
type liveReader struct {
	client.Reader
	h *harness
}

func (l liveReader) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	if _, ok := list.(*corev1.PodList); ok {
		l.h.liveLists++
	}
	return l.Reader.List(ctx, list, opts...)
}

func (h *harness) opts() Options {
	return Options{Clock: h.clock, adoptions: h.adoptions, NewDetector: func(b *kvv1.BreakerStrategy, _ detector.Options) (detector.Detector, error) {
		h.detectorsMu.Lock()
		defer h.detectorsMu.Unlock()
		d, ok := h.detectors[b.Name]
		if !ok {
			d = &fakeDetector{}
			h.detectors[b.Name] = d
		}
		return d, nil
	}}
}

func (h *harness) kvsReconciler() *KubervisorServiceReconciler {
	return NewKubervisorServiceReconciler(h.client, liveReader{Reader: h.client, h: h}, h.events, h.opts())
}

func (h *harness) podReconciler() *PodReconciler {
	return NewPodReconciler(h.client, liveReader{Reader: h.client, h: h}, h.events, h.evictor, h.opts())
}

func (h *harness) kvs() *kvv1.KubervisorService {
	k := &kvv1.KubervisorService{}
	if err := h.client.Get(context.Background(), client.ObjectKey{Namespace: testNS, Name: "kvs"}, k); err != nil {
		h.t.Fatal(err)
	}
	return k
}

func (h *harness) traffic(names ...string) []string {
	out := make([]string, 0, len(names))
	for _, n := range names {
		p := &corev1.Pod{}
		if err := h.client.Get(context.Background(), client.ObjectKey{Namespace: testNS, Name: n}, p); err != nil {
			out = append(out, "gone")
			continue
		}
		out = append(out, p.Labels[kvv1.LabelTraffic])
	}
	return out
}

// pass runs one reconcile of the KubervisorService; counters are reset before it.
func (h *harness) pass(r *KubervisorServiceReconciler) (ctrl.Result, error) {
	h.patches, h.statusWrites, h.liveLists = nil, 0, 0
	h.events.take()
	return r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKey{Namespace: testNS, Name: "kvs"}})
}

// conditionsOf summarises conditions as "Type=Status/Reason".
func conditionsOf(k *kvv1.KubervisorService) []string {
	var out []string
	for _, c := range k.Status.Conditions {
		out = append(out, fmt.Sprintf("%s=%s/%s", c.Type, c.Status, c.Reason))
	}
	return out
}

// --- breaker -----------------------------------------------------------------------------------------

// ejectPatch is the exact patch an ejection by breaker b at t0 sends, for a pod at resourceVersion rv with
// the given previous retry count.
func ejectPatch(name, rv string, retries int) string {
	return fmt.Sprintf(`%s: {"metadata":{"annotations":{"controller.kubernetes.io/pod-deletion-cost":"-2147483648","kubervisor/activator":"%s","kubervisor/break-at":"2026-03-14T15:09:26.54Z","kubervisor/retry-count":"%d"},`+
		`"labels":{"kubervisor/strategy":"b","kubervisor/traffic":"no"},"resourceVersion":"%s"}}`, name, defaultFingerprint, retries+1, rv)
}

// onNoDataErrorKVS is a KubervisorService whose breaker "b" is a Prometheus detector with onNoData: error.
func onNoDataErrorKVS() *kvv1.KubervisorService {
	return testKVS(func(k *kvv1.KubervisorService) {
		k.Spec.Breakers[0].CustomService = nil
		k.Spec.Breakers[0].DiscreteValueOutOfList = &kvv1.DiscreteValueOutOfList{PrometheusService: "prometheus:9090",
			PromQL: "sum(rate(x[1m])) by (code, pod)", Key: "code", PodNameKey: "pod", GoodValues: []string{"200"}}
		k.Spec.Breakers[0].OnNoData = kvv1.OnNoDataError
	}, "b")
}

func TestBreakerPass(t *testing.T) {
	floor3 := func(k *kvv1.KubervisorService) { k.Spec.Breakers[0].MinPodsAvailableCount = new(int32(3)) }
	fleet := func() []client.Object {
		return []client.Object{testService(true), testPod("p0", "yes", nil), testPod("p1", "yes", nil), testPod("p2", "yes", nil),
			testPod("p3", "yes", nil)}
	}
	// fleetN is n Ready pods p0..p(n-1) in traffic; the named ones are terminating (held by a finalizer).
	fleetN := func(n int, terminating ...string) []client.Object {
		objs := []client.Object{testService(true)}
		for i := range n {
			p := testPod(fmt.Sprintf("p%d", i), "yes", nil)
			if slices.Contains(terminating, p.Name) {
				p.Finalizers = []string{"example.com/drain"}
				p.DeletionTimestamp = new(metav1.NewTime(t0.Add(-time.Second)))
			}
			objs = append(objs, p)
		}
		return objs
	}
	healthy := []string{"ServiceFound=True/ServiceFound", "TrafficControlled=True/SelectorHasTrafficKey", "Conflict=False/NoConflict", "ReadinessGateMissing=False/SelectorMode"}
	invalidPeriod := "The spec holds values the controller cannot use: spec.breakers[0].evaluationPeriod: period 0s: must be more than zero and at most 24h0m0s"
	storm := "5 of 8 Ready pods anomalous, more than maxAnomalousPercent 50%: the detector is suspect, nobody is ejected"
	cases := map[string]struct {
		objs []client.Object
		kvs  *kvv1.KubervisorService
		// answers per breaker: pods flagged, or an error.
		answers map[string][]string
		errs    map[string]error
		// before runs passes (or anything else) before the pass under test.
		before func(h *harness, r *KubervisorServiceReconciler)

		wantResult       ctrl.Result
		wantErr          bool
		wantTraffic      []string // of p0..p3
		wantPatches      []string
		wantEvents       []string
		wantBreakers     []kvv1.BreakerStatus // times and anomalies ignored
		wantDecisions    []string             // status anomalies[] as "breaker/pod=Decision"
		wantConditions   []string
		wantStatusWrites int
		wantLiveLists    int
		wantCalls        map[string]int // in the pass under test
	}{
		"due: ejects the worst anomaly, withholds the rest to hold the floor, one Warning": {
			objs: fleet(), kvs: testKVS(floor3, "b"), answers: map[string][]string{"b": {"p2", "p1"}},
			wantResult:  ctrl.Result{RequeueAfter: 5 * time.Second},
			wantTraffic: []string{"yes", "yes", "no", "yes"},
			wantPatches: []string{ejectPatch("p2", "999", 0)},
			wantEvents: []string{
				"Normal Ejected Eject KubervisorService/kvs: Breaker b took pod p2 out of traffic: flagged",
				"Normal Ejected Eject Pod/p2: Breaker b took pod p2 out of traffic: flagged",
				"Warning EjectionWithheld Evaluate KubervisorService/kvs: Breaker b kept 1 anomalous pods in traffic to hold the floor: p1",
			},
			wantBreakers: []kvv1.BreakerStatus{{Name: "b", LastResult: "OK", AnomalousPods: []string{"p2", "p1"},
				EjectedPods: []string{"p2"}, WithheldPods: []string{"p1"}}},
			wantDecisions: []string{"b/p2=Ejected", "b/p1=Withheld"},
			wantConditions: []string{"ServiceFound=True/ServiceFound", "TrafficControlled=True/SelectorHasTrafficKey",
				"Conflict=False/NoConflict", "ReadinessGateMissing=False/SelectorMode", "EjectionAllowed=False/FloorReached", "Ready=True/BreakersHealthy"},
			wantStatusWrites: 1, wantCalls: map[string]int{"b": 1},
		},
		"a drain: terminating pods do not serve, so the floor withholds both anomalies": {
			objs:        fleetN(8, "p5", "p6", "p7"),
			kvs:         testKVS(func(k *kvv1.KubervisorService) { k.Spec.Breakers[0].MinPodsAvailableCount = new(int32(5)) }, "b"),
			answers:     map[string][]string{"b": {"p3", "p4"}},
			wantResult:  ctrl.Result{RequeueAfter: 5 * time.Second},
			wantTraffic: []string{"yes", "yes", "yes", "yes"},
			wantEvents: []string{
				"Warning EjectionWithheld Evaluate KubervisorService/kvs: Breaker b kept 2 anomalous pods in traffic to hold the floor: p3, p4",
			},
			wantBreakers: []kvv1.BreakerStatus{{Name: "b", LastResult: "OK", AnomalousPods: []string{"p3", "p4"},
				WithheldPods: []string{"p3", "p4"}}},
			wantDecisions:    []string{"b/p3=Withheld", "b/p4=Withheld"},
			wantConditions:   append(slices.Clone(healthy), "EjectionAllowed=False/FloorReached", "Ready=True/BreakersHealthy"),
			wantStatusWrites: 1, wantCalls: map[string]int{"b": 1},
		},
		"the ratio's base is every pod not terminating, Ready or not": {
			// 10 pods, 4 NotReady: 50% of 10 keeps 5 in traffic, so 1 of the 6 serving pods may leave.
			objs: func() []client.Object {
				objs := fleetN(10)
				for _, o := range objs[7:] {
					o.(*corev1.Pod).Status.Conditions[0].Status = corev1.ConditionFalse
				}
				return objs
			}(),
			kvs: testKVS(func(k *kvv1.KubervisorService) {
				k.Spec.Breakers[0].MinPodsAvailableRatio = new(int32(50))
				k.Spec.Breakers[0].MaxAnomalousPercent = new(int32(100))
			}, "b"),
			answers:     map[string][]string{"b": {"p0", "p1", "p2"}},
			wantResult:  ctrl.Result{RequeueAfter: 5 * time.Second},
			wantTraffic: []string{"no", "yes", "yes", "yes"},
			wantPatches: []string{ejectPatch("p0", "999", 0)},
			wantEvents: []string{
				"Normal Ejected Eject KubervisorService/kvs: Breaker b took pod p0 out of traffic: flagged",
				"Normal Ejected Eject Pod/p0: Breaker b took pod p0 out of traffic: flagged",
				"Warning EjectionWithheld Evaluate KubervisorService/kvs: Breaker b kept 2 anomalous pods in traffic to hold the floor: p1, p2",
			},
			wantBreakers: []kvv1.BreakerStatus{{Name: "b", LastResult: "OK", AnomalousPods: []string{"p0", "p1", "p2"},
				EjectedPods: []string{"p0"}, WithheldPods: []string{"p1", "p2"}}},
			wantDecisions:    []string{"b/p0=Ejected", "b/p1=Withheld", "b/p2=Withheld"},
			wantConditions:   append(slices.Clone(healthy), "EjectionAllowed=False/FloorReached", "Ready=True/BreakersHealthy"),
			wantStatusWrites: 1, wantCalls: map[string]int{"b": 1},
		},
		"a storm: 5 of 8 flagged, nobody ejected, one Warning": {
			objs: fleetN(8), kvs: testKVS(nil, "b"), answers: map[string][]string{"b": {"p0", "p1", "p2", "p3", "p4"}},
			wantResult:  ctrl.Result{RequeueAfter: 5 * time.Second},
			wantTraffic: []string{"yes", "yes", "yes", "yes"},
			wantEvents:  []string{"Warning StormSuspected Evaluate KubervisorService/kvs: Breaker b: " + storm},
			wantBreakers: []kvv1.BreakerStatus{{Name: "b", LastResult: "StormSuspected", AnomalousPods: []string{"p0", "p1", "p2", "p3", "p4"},
				WithheldPods: []string{"p0", "p1", "p2", "p3", "p4"}}},
			wantDecisions:    []string{"b/p0=Withheld", "b/p1=Withheld", "b/p2=Withheld", "b/p3=Withheld", "b/p4=Withheld"},
			wantConditions:   append(slices.Clone(healthy), "EjectionAllowed=False/StormSuspected", "Ready=True/BreakersHealthy"),
			wantStatusWrites: 1, wantCalls: map[string]int{"b": 1},
		},
		"after a storm, nobody is ejected until the cooldown is over, and no second Warning": {
			objs: fleetN(8),
			kvs: testKVS(func(k *kvv1.KubervisorService) {
				k.Spec.Breakers[0].StormCooldown = new(intstr.FromString("1m"))
			}, "b"),
			answers: map[string][]string{"b": {"p0", "p1", "p2", "p3", "p4"}},
			before: func(h *harness, r *KubervisorServiceReconciler) {
				mustPass(h, r)
				h.answer("b", nil, "p1", "p2")
				h.clock.Step(5 * time.Second)
			},
			wantResult:  ctrl.Result{RequeueAfter: 5 * time.Second},
			wantTraffic: []string{"yes", "yes", "yes", "yes"},
			wantBreakers: []kvv1.BreakerStatus{{Name: "b", LastResult: "StormSuspected", AnomalousPods: []string{"p1", "p2"},
				WithheldPods: []string{"p1", "p2"}, LastStormTime: new(apiTime(t0))}},
			wantDecisions:    []string{"b/p1=Withheld", "b/p2=Withheld"},
			wantConditions:   append(slices.Clone(healthy), "EjectionAllowed=False/StormSuspected", "Ready=True/BreakersHealthy"),
			wantStatusWrites: 1, wantCalls: map[string]int{"b": 1},
		},
		"onNoData error on a Prometheus detector: an empty answer is an error": {
			objs:        fleetN(4),
			kvs:         onNoDataErrorKVS(),
			wantResult:  ctrl.Result{RequeueAfter: 5 * time.Second},
			wantTraffic: []string{"yes", "yes", "yes", "yes"},
			wantEvents: []string{"Warning DetectorFailed Evaluate KubervisorService/kvs: Breaker b: the answer holds no sample about " +
				"any managed pod in traffic (onNoData: error): is the query broken?; no pod is ejected on this evaluation"},
			wantBreakers: []kvv1.BreakerStatus{{Name: "b", LastResult: "Error: the answer holds no sample about any managed pod " +
				"in traffic (onNoData: error): is the query broken?"}},
			wantConditions:   append(slices.Clone(healthy), "EjectionAllowed=True/WithinFloor", "Ready=False/DetectorError"),
			wantStatusWrites: 1, wantCalls: map[string]int{"b": 1},
		},
		"onNoData error: an answer about an ejected pod only (its stale series) is an error too": {
			objs: []client.Object{testService(true), testPod("p0", "yes", nil), testPod("p1", "yes", nil), testPod("p2", "yes", nil),
				testPod("p3", "yes", nil), recordedPod("e", 1, t0.Add(-time.Second))},
			kvs:         onNoDataErrorKVS(),
			answers:     map[string][]string{"b": {"e"}},
			wantResult:  ctrl.Result{RequeueAfter: 5 * time.Second},
			wantTraffic: []string{"yes", "yes", "yes", "yes"},
			wantEvents: []string{"Warning DetectorFailed Evaluate KubervisorService/kvs: Breaker b: the answer holds no sample about " +
				"any managed pod in traffic (onNoData: error): is the query broken?; no pod is ejected on this evaluation"},
			wantBreakers: []kvv1.BreakerStatus{{Name: "b", LastResult: "Error: the answer holds no sample about any managed pod " +
				"in traffic (onNoData: error): is the query broken?", EjectedPods: []string{"e"}}},
			wantConditions:   append(slices.Clone(healthy), "EjectionAllowed=True/WithinFloor", "Ready=False/DetectorError"),
			wantStatusWrites: 1, wantCalls: map[string]int{"b": 1},
		},
		"fewer Ready pods than minPodsToJudge: nobody is judged": {
			objs:             fleetN(4),
			kvs:              testKVS(func(k *kvv1.KubervisorService) { k.Spec.Breakers[0].MinPodsToJudge = new(int32(5)) }, "b"),
			answers:          map[string][]string{"b": {"p0"}},
			wantResult:       ctrl.Result{RequeueAfter: 5 * time.Second},
			wantTraffic:      []string{"yes", "yes", "yes", "yes"},
			wantBreakers:     []kvv1.BreakerStatus{{Name: "b", LastResult: "FleetTooSmall"}},
			wantConditions:   append(slices.Clone(healthy), "EjectionAllowed=True/WithinFloor", "Ready=True/BreakersHealthy"),
			wantStatusWrites: 1, wantCalls: map[string]int{"b": 1},
		},
		"not due: no query, no read, no write, requeue at the remaining time": {
			objs: fleet(), kvs: testKVS(nil, "b"), answers: map[string][]string{"b": {"p2"}},
			before: func(h *harness, r *KubervisorServiceReconciler) {
				mustPass(h, r)
				h.clock.Step(1500 * time.Millisecond)
			},
			wantResult:  ctrl.Result{RequeueAfter: 3500 * time.Millisecond},
			wantTraffic: []string{"yes", "yes", "no", "yes"},
			wantBreakers: []kvv1.BreakerStatus{{Name: "b", LastResult: "OK", AnomalousPods: []string{"p2"},
				EjectedPods: []string{"p2"}}},
			wantDecisions: []string{"b/p2=Ejected"},
			wantConditions: []string{"ServiceFound=True/ServiceFound", "TrafficControlled=True/SelectorHasTrafficKey",
				"Conflict=False/NoConflict", "ReadinessGateMissing=False/SelectorMode", "EjectionAllowed=True/WithinFloor", "Ready=True/BreakersHealthy"},
			wantCalls: map[string]int{"b": 0},
		},
		"due again, flagging only pods already out: no live read, no write (ejectedPods still names the pod held out), no patch": {
			objs: fleet(), kvs: testKVS(nil, "b"), answers: map[string][]string{"b": {"p2"}},
			before: func(h *harness, r *KubervisorServiceReconciler) {
				mustPass(h, r)
				h.clock.Step(5 * time.Second)
			},
			wantResult:    ctrl.Result{RequeueAfter: 5 * time.Second},
			wantTraffic:   []string{"yes", "yes", "no", "yes"},
			wantBreakers:  []kvv1.BreakerStatus{{Name: "b", LastResult: "OK", AnomalousPods: []string{"p2"}, EjectedPods: []string{"p2"}}},
			wantDecisions: []string{"b/p2=Ejected"},
			wantConditions: []string{"ServiceFound=True/ServiceFound", "TrafficControlled=True/SelectorHasTrafficKey",
				"Conflict=False/NoConflict", "ReadinessGateMissing=False/SelectorMode", "EjectionAllowed=True/WithinFloor", "Ready=True/BreakersHealthy"},
			wantCalls: map[string]int{"b": 1},
		},
		"steady: the same answer again sends nothing at all": {
			objs: fleet(), kvs: testKVS(nil, "b", "quiet"), answers: map[string][]string{"b": {"p2"}},
			before: func(h *harness, r *KubervisorServiceReconciler) {
				mustPass(h, r)
				h.clock.Step(5 * time.Second)
				mustPass(h, r)
				h.clock.Step(5*time.Second + 300*time.Millisecond)
			},
			wantResult:  ctrl.Result{RequeueAfter: 5 * time.Second},
			wantTraffic: []string{"yes", "yes", "no", "yes"},
			wantBreakers: []kvv1.BreakerStatus{{Name: "b", LastResult: "OK", AnomalousPods: []string{"p2"}, EjectedPods: []string{"p2"}},
				{Name: "quiet", LastResult: "NoData"}},
			wantDecisions: []string{"b/p2=Ejected"},
			wantConditions: []string{"ServiceFound=True/ServiceFound", "TrafficControlled=True/SelectorHasTrafficKey",
				"Conflict=False/NoConflict", "ReadinessGateMissing=False/SelectorMode", "EjectionAllowed=True/WithinFloor", "Ready=True/BreakersHealthy"},
			wantCalls: map[string]int{"b": 1, "quiet": 1},
		},
		"detector error: nothing ejected, one Warning, Ready=False": {
			objs: fleet(), kvs: testKVS(nil, "b"), errs: map[string]error{"b": errors.New("connection refused")},
			wantResult:  ctrl.Result{RequeueAfter: 5 * time.Second},
			wantTraffic: []string{"yes", "yes", "yes", "yes"},
			wantEvents: []string{
				"Warning DetectorFailed Evaluate KubervisorService/kvs: Breaker b: connection refused; no pod is ejected on this evaluation",
			},
			wantBreakers: []kvv1.BreakerStatus{{Name: "b", LastResult: "Error: connection refused"}},
			wantConditions: []string{"ServiceFound=True/ServiceFound", "TrafficControlled=True/SelectorHasTrafficKey",
				"Conflict=False/NoConflict", "ReadinessGateMissing=False/SelectorMode", "EjectionAllowed=True/WithinFloor", "Ready=False/DetectorError"},
			wantStatusWrites: 1, wantCalls: map[string]int{"b": 1},
		},
		"a failed status write is returned (the queue's back-off); the next pass writes the outcome without asking again": {
			objs: fleet(), kvs: testKVS(nil, "b"), answers: map[string][]string{"b": {"p1"}},
			before: func(h *harness, r *KubervisorServiceReconciler) {
				h.failStatus = 1
				res, err := h.pass(r)
				if !apierrors.IsInternalError(err) || res != (ctrl.Result{}) {
					h.t.Fatalf("failing pass = %+v, %v; want the server's error, for the queue's back-off", res, err)
				}
				h.clock.Step(conflictRetry)
			},
			wantResult:  ctrl.Result{RequeueAfter: 5*time.Second - conflictRetry},
			wantTraffic: []string{"yes", "no", "yes", "yes"},
			wantBreakers: []kvv1.BreakerStatus{{Name: "b", LastResult: "OK", AnomalousPods: []string{"p1"},
				EjectedPods: []string{"p1"}}},
			wantDecisions: []string{"b/p1=Ejected"},
			wantConditions: []string{"ServiceFound=True/ServiceFound", "TrafficControlled=True/SelectorHasTrafficKey",
				"Conflict=False/NoConflict", "ReadinessGateMissing=False/SelectorMode", "EjectionAllowed=True/WithinFloor", "Ready=True/BreakersHealthy"},
			wantStatusWrites: 1, wantCalls: map[string]int{"b": 0},
		},
		"selector without the traffic key: dry run, would-eject reported, no pod touched": {
			objs: []client.Object{testService(false), testPod("p0", "yes", nil), testPod("p1", "yes", nil), testPod("p2", "yes", nil),
				testPod("p3", "yes", nil)},
			kvs: testKVS(nil, "b"), answers: map[string][]string{"b": {"p3"}},
			wantResult:  ctrl.Result{RequeueAfter: 5 * time.Second},
			wantTraffic: []string{"yes", "yes", "yes", "yes"},
			wantEvents: []string{
				`Normal WouldEject Evaluate KubervisorService/kvs: Breaker b would take pod p3 out of traffic (the Service selector lacks kubervisor/traffic: "yes"): flagged`,
			},
			wantBreakers:  []kvv1.BreakerStatus{{Name: "b", LastResult: "OK", AnomalousPods: []string{"p3"}, WouldEjectPods: []string{"p3"}}},
			wantDecisions: []string{"b/p3=WouldEject"},
			wantConditions: []string{"ServiceFound=True/ServiceFound", "TrafficControlled=False/SelectorLacksTrafficKey",
				"Conflict=False/NoConflict", "ReadinessGateMissing=False/SelectorMode", "EjectionAllowed=True/WithinFloor", "Ready=True/BreakersHealthy"},
			wantStatusWrites: 1, wantCalls: map[string]int{"b": 1},
		},
		"an unusable evaluationPeriod: that breaker is not evaluated, Ready=False/InvalidSpec names the field, one Warning": {
			objs: fleet(),
			kvs: testKVS(func(k *kvv1.KubervisorService) {
				k.Spec.Breakers[0].EvaluationPeriod = new(intstr.FromString("0s"))
			}, "b", "c"),
			answers:     map[string][]string{"b": {"p0"}},
			wantResult:  ctrl.Result{RequeueAfter: 5 * time.Second},
			wantTraffic: []string{"yes", "yes", "yes", "yes"},
			wantEvents:  []string{"Warning InvalidSpec Evaluate KubervisorService/kvs: " + invalidPeriod},
			wantBreakers: []kvv1.BreakerStatus{
				{Name: "b", LastResult: "Error: invalid spec: evaluationPeriod: period 0s: must be more than zero and at most 24h0m0s"},
				{Name: "c", LastResult: "NoData"}},
			wantConditions:   append(slices.Clone(healthy), "EjectionAllowed=True/WithinFloor", "Ready=False/InvalidSpec"),
			wantStatusWrites: 1, wantCalls: map[string]int{"b": 0, "c": 1},
		},
		"an unusable stormCooldown and defaultActivator period: both named, the breaker not evaluated": {
			objs: fleet(),
			kvs: testKVS(func(k *kvv1.KubervisorService) {
				k.Spec.Breakers[0].StormCooldown = new(intstr.FromString("-5s"))
				k.Spec.DefaultActivator = &kvv1.ActivatorStrategy{Period: new(intstr.FromInt32(0))}
			}, "b"),
			answers:     map[string][]string{"b": {"p0"}},
			wantResult:  ctrl.Result{RequeueAfter: kvv1.MaxPeriod},
			wantTraffic: []string{"yes", "yes", "yes", "yes"},
			wantEvents: []string{"Warning InvalidSpec Evaluate KubervisorService/kvs: The spec holds values the controller cannot use: " +
				"spec.defaultActivator.period: period 0s: must be more than zero and at most 24h0m0s; " +
				"spec.breakers[0].stormCooldown: period -5s: must be more than zero and at most 24h0m0s"},
			wantBreakers: []kvv1.BreakerStatus{
				{Name: "b", LastResult: "Error: invalid spec: stormCooldown: period -5s: must be more than zero and at most 24h0m0s"}},
			wantConditions:   append(slices.Clone(healthy), "EjectionAllowed=True/WithinFloor", "Ready=False/InvalidSpec"),
			wantStatusWrites: 1, wantCalls: map[string]int{"b": 0},
		},
		"an unusable spec already reported: no event, no write": {
			objs: fleet(),
			kvs: testKVS(func(k *kvv1.KubervisorService) {
				k.Spec.Breakers[0].EvaluationPeriod = new(intstr.FromString("0s"))
			}, "b", "c"),
			before: func(h *harness, r *KubervisorServiceReconciler) {
				mustPass(h, r)
				h.clock.Step(5 * time.Second)
			},
			wantResult:  ctrl.Result{RequeueAfter: 5 * time.Second},
			wantTraffic: []string{"yes", "yes", "yes", "yes"},
			wantBreakers: []kvv1.BreakerStatus{
				{Name: "b", LastResult: "Error: invalid spec: evaluationPeriod: period 0s: must be more than zero and at most 24h0m0s"},
				{Name: "c", LastResult: "NoData"}},
			wantConditions: append(slices.Clone(healthy), "EjectionAllowed=True/WithinFloor", "Ready=False/InvalidSpec"),
			wantCalls:      map[string]int{"b": 0, "c": 1},
		},
		"forgiveness: 2 × forgiveAfter in traffic since restored lowers retry 3 to 1, so the ejection is retry 2": {
			objs: []client.Object{testService(true), testPod("p0", "yes", nil), testPod("p1", "yes", map[string]string{
				kvv1.AnnotationRetryCount: "3", kvv1.AnnotationRestoredAt: podstate.FormatTime(t0.Add(-20*time.Minute - time.Second))}),
				testPod("p2", "yes", nil), testPod("p3", "yes", nil)},
			kvs: testKVS(func(k *kvv1.KubervisorService) {
				k.Spec.DefaultActivator = &kvv1.ActivatorStrategy{ForgiveAfter: new(intstr.FromString("10m"))}
			}, "b"),
			answers:     map[string][]string{"b": {"p1"}},
			wantResult:  ctrl.Result{RequeueAfter: 5 * time.Second},
			wantTraffic: []string{"yes", "no", "yes", "yes"},
			wantPatches: []string{ejectPatch("p1", "999", 1)},
			wantEvents: []string{
				"Normal Ejected Eject KubervisorService/kvs: Breaker b took pod p1 out of traffic: flagged",
				"Normal Ejected Eject Pod/p1: Breaker b took pod p1 out of traffic: flagged",
			},
			wantBreakers:     []kvv1.BreakerStatus{{Name: "b", LastResult: "OK", AnomalousPods: []string{"p1"}, EjectedPods: []string{"p1"}}},
			wantDecisions:    []string{"b/p1=Ejected"},
			wantConditions:   append(slices.Clone(healthy), "EjectionAllowed=True/WithinFloor", "Ready=True/BreakersHealthy"),
			wantStatusWrites: 1, wantCalls: map[string]int{"b": 1},
		},
		"probation: a pod restored 10s ago is judged, not ejected; one restored 40s ago is ejected": {
			objs: []client.Object{testService(true), testPod("p0", "yes", nil),
				testPod("p1", "yes", map[string]string{kvv1.AnnotationRestoredAt: podstate.FormatTime(t0.Add(-10 * time.Second))}),
				testPod("p2", "yes", map[string]string{kvv1.AnnotationRestoredAt: podstate.FormatTime(t0.Add(-40 * time.Second))}),
				testPod("p3", "yes", nil)},
			kvs: testKVS(func(k *kvv1.KubervisorService) {
				k.Spec.Breakers[0].Probation = new(intstr.FromString("30s"))
			}, "b"),
			answers:     map[string][]string{"b": {"p1", "p2"}},
			wantResult:  ctrl.Result{RequeueAfter: 5 * time.Second},
			wantTraffic: []string{"yes", "yes", "no", "yes"},
			wantPatches: []string{ejectPatch("p2", "999", 0)},
			wantEvents: []string{
				"Normal Ejected Eject KubervisorService/kvs: Breaker b took pod p2 out of traffic: flagged",
				"Normal Ejected Eject Pod/p2: Breaker b took pod p2 out of traffic: flagged",
			},
			wantBreakers:     []kvv1.BreakerStatus{{Name: "b", LastResult: "OK", AnomalousPods: []string{"p1", "p2"}, EjectedPods: []string{"p2"}}},
			wantDecisions:    []string{"b/p1=Probation", "b/p2=Ejected"},
			wantConditions:   append(slices.Clone(healthy), "EjectionAllowed=True/WithinFloor", "Ready=True/BreakersHealthy"),
			wantStatusWrites: 1, wantCalls: map[string]int{"b": 1},
		},
		"a lost ejection race: the breaker is due again at once": {
			objs: fleet(), kvs: testKVS(nil, "b"), answers: map[string][]string{"b": {"p0"}},
			before: func(h *harness, _ *KubervisorServiceReconciler) {
				// Another writer moves p0 between the live read and the patch.
				h.conflictPods = map[string]bool{"p0": true}
			},
			wantResult:    ctrl.Result{RequeueAfter: conflictRetry},
			wantTraffic:   []string{"yes", "yes", "yes", "yes"},
			wantPatches:   []string{ejectPatch("p0", "999", 0)},
			wantBreakers:  []kvv1.BreakerStatus{{Name: "b", LastResult: "OK", AnomalousPods: []string{"p0"}}},
			wantDecisions: []string{"b/p0=Withheld"},
			wantConditions: []string{"ServiceFound=True/ServiceFound", "TrafficControlled=True/SelectorHasTrafficKey",
				"Conflict=False/NoConflict", "ReadinessGateMissing=False/SelectorMode", "EjectionAllowed=True/WithinFloor", "Ready=True/BreakersHealthy"},
			wantStatusWrites: 1, wantCalls: map[string]int{"b": 1},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, append(tc.objs, tc.kvs)...)
			for b, pods := range tc.answers {
				h.answer(b, nil, pods...)
			}
			for b, err := range tc.errs {
				h.answer(b, err)
			}
			r := h.kvsReconciler()
			if tc.before != nil {
				tc.before(h, r)
			}
			calls := map[string]int{}
			for b := range tc.wantCalls {
				calls[b] = h.calls(b)
			}
			res, err := h.pass(r)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Reconcile error = %v, want error %t", err, tc.wantErr)
			}
			if d := cmp.Diff(tc.wantResult, res); d != "" {
				t.Errorf("result mismatch (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tc.wantTraffic, h.traffic("p0", "p1", "p2", "p3")); d != "" {
				t.Errorf("traffic labels mismatch (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tc.wantPatches, h.patches); d != "" {
				t.Errorf("pod patches mismatch (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tc.wantEvents, h.events.take()); d != "" {
				t.Errorf("events mismatch (-want +got):\n%s", d)
			}
			k := h.kvs()
			got := slices.Clone(k.Status.Breakers)
			var decisions []string
			for i := range got {
				if got[i].LastEvaluationTime == nil {
					t.Errorf("breaker %s has no lastEvaluationTime", got[i].Name)
				}
				got[i].LastEvaluationTime = nil
				for _, d := range got[i].Anomalies {
					decisions = append(decisions, fmt.Sprintf("%s/%s=%s", got[i].Name, d.Pod, d.Decision))
				}
				got[i].Anomalies = nil
			}
			if d := cmp.Diff(tc.wantDecisions, decisions); d != "" {
				t.Errorf("status anomalies mismatch (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tc.wantBreakers, got); d != "" {
				t.Errorf("status.breakers mismatch (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tc.wantConditions, conditionsOf(k)); d != "" {
				t.Errorf("conditions mismatch (-want +got):\n%s", d)
			}
			if h.statusWrites != tc.wantStatusWrites || h.liveLists != tc.wantLiveLists {
				t.Errorf("sent %d status writes and %d live pod lists, want %d and %d", h.statusWrites, h.liveLists,
					tc.wantStatusWrites, tc.wantLiveLists)
			}
			for b, want := range tc.wantCalls {
				if got := h.calls(b) - calls[b]; got != want {
					t.Errorf("breaker %s queried %d times, want %d", b, got, want)
				}
			}
		})
	}
}

func mustPass(h *harness, r *KubervisorServiceReconciler) {
	h.t.Helper()
	if _, err := h.pass(r); err != nil {
		h.t.Fatalf("preparing pass: %v", err)
	}
}

// --- activator ---------------------------------------------------------------------------------------

// TestAdoptionStall: a KubervisorService with pods that cannot be adopted says so in Ready, with one event,
// instead of keeping Ready=True from an older pass (SPEC §2.2), and its breakers judge the adopted pods
// meanwhile: one refused pod does not stop them.
func TestAdoptionStall(t *testing.T) {
	unadopted := func() *corev1.Pod {
		p := testPod("p1", "", nil)
		delete(p.Labels, kvv1.LabelName)
		return p
	}
	ready := func(h *harness) string {
		k := h.kvs()
		for _, c := range k.Status.Conditions {
			if c.Type == kvv1.ConditionReady {
				return fmt.Sprintf("%s/%s: %s", c.Status, c.Reason, c.Message)
			}
		}
		return ""
	}
	adoptPod := func(h *harness) error {
		_, err := h.podReconciler().Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKey{Namespace: testNS, Name: "p1"}})
		return err
	}
	refusal := `patching pod ns/p1: pods "p1" is forbidden: admission webhook "labels.example.com" denied the request: kubervisor labels are not allowed`

	t.Run("a refused adoption: Ready=False/AdoptionFailed with the refusal, one event, the adopted pods judged, Ready again once adopted", func(t *testing.T) {
		h := newHarness(t, testService(true), testPod("p0", "yes", nil), unadopted(), testKVS(nil, "b"))
		r := h.kvsReconciler()
		mustPass(h, r)
		h.events.take()
		h.refusePods = map[string]bool{"p1": true}
		if err := adoptPod(h); err == nil {
			t.Fatal("adoption of p1 succeeded; want the refusal")
		}
		mustPass(h, r)
		if h.calls("b") != 1 {
			t.Errorf("detector called %d times while p1 is refused, want once: the adopted pods are judged", h.calls("b"))
		}
		want := "False/AdoptionFailed: 1 of the pods Service svc selects could not be adopted: p1: " + refusal +
			"; the breakers judge the adopted pods only"
		if got := ready(h); got != want {
			t.Errorf("Ready = %q\nwant    %q", got, want)
		}
		wantEvents := []string{"Warning AdoptionFailed Evaluate KubervisorService/kvs: " + strings.TrimPrefix(want, "False/AdoptionFailed: ")}
		if d := cmp.Diff(wantEvents, h.events.take()); d != "" {
			t.Errorf("events mismatch (-want +got):\n%s", d)
		}
		h.clock.Step(time.Second)
		mustPass(h, r)
		if ev := h.events.take(); len(ev) != 0 || h.statusWrites != 0 {
			t.Errorf("a pass with nothing new sent %d status writes and events %q; want none", h.statusWrites, ev)
		}

		h.refusePods = nil
		if err := adoptPod(h); err != nil {
			t.Fatalf("adoption of p1: %v", err)
		}
		mustPass(h, r)
		if got := ready(h); !strings.HasPrefix(got, "True/BreakersHealthy") {
			t.Errorf("Ready after adoption = %q, want True/BreakersHealthy", got)
		}
		if h.calls("b") != 1 {
			t.Errorf("detector called %d times, want once (its period had not passed)", h.calls("b"))
		}
	})
}

func TestActivatorPass(t *testing.T) {
	activatorKVS := func(a kvv1.ActivatorStrategy) *kvv1.KubervisorService {
		return testKVS(func(k *kvv1.KubervisorService) { k.Spec.DefaultActivator = &a }, "b")
	}
	periodic10s := kvv1.ActivatorStrategy{Mode: kvv1.ActivatorModePeriodic, Period: new(intstr.FromString("10s"))}
	kill := func(period string) kvv1.ActivatorStrategy {
		return kvv1.ActivatorStrategy{Mode: kvv1.ActivatorModeRetryAndKill, Period: new(intstr.FromString(period)), MaxRetryCount: new(int32(3))}
	}
	pauseOne := kvv1.ActivatorStrategy{Mode: kvv1.ActivatorModeRetryAndPause, Period: new(intstr.FromString("10s")),
		MaxRetryCount: new(int32(1)), MaxPauseCount: new(int32(1))}
	tooMany := apierrors.NewTooManyRequests("Cannot evict pod as it would violate the pod's disruption budget.", 10)

	cases := map[string]struct {
		objs       []client.Object
		evictErr   error
		wantResult ctrl.Result
		wantErr    bool
		// wantTraffic of pod "e" ("gone" when evicted through the fake evictor, which deletes nothing).
		wantTraffic  string
		wantPatches  []string
		wantEvents   []string
		wantEvicted  []string
		wantLiveList int
	}{
		"waits until due: requeue at exactly break-at + period": {
			objs:        []client.Object{testService(true), activatorKVS(periodic10s), ejectedPod("e", 1, t0.Add(-3*time.Second))},
			wantResult:  ctrl.Result{RequeueAfter: 7 * time.Second},
			wantTraffic: "no",
		},
		"restores when due, keeping the retry count and recording restored-at": {
			objs:        []client.Object{testService(true), activatorKVS(periodic10s), ejectedPod("e", 4, t0.Add(-10*time.Second))},
			wantTraffic: "yes",
			wantPatches: []string{`e: {"metadata":{"annotations":{"controller.kubernetes.io/pod-deletion-cost":null,"kubervisor/restored-at":"2026-03-14T15:09:26.54Z"},` +
				`"labels":{"kubervisor/traffic":"yes"},"resourceVersion":"999"}}`},
			wantEvents: []string{
				"Normal Restored Restore KubervisorService/kvs: Pod e back in traffic: retry 4 (periodic): back in traffic after 10s",
				"Normal Restored Restore Pod/e: Pod e back in traffic: retry 4 (periodic): back in traffic after 10s",
			},
		},
		"pauses at the last free pause slot": {
			objs:         []client.Object{testService(true), activatorKVS(pauseOne), ejectedPod("e", 2, t0)},
			wantTraffic:  "pause",
			wantPatches:  []string{`e: {"metadata":{"labels":{"kubervisor/traffic":"pause"},"resourceVersion":"999"}}`},
			wantLiveList: 1,
			wantEvents: []string{
				"Normal Paused Pause KubervisorService/kvs: Pod e paused out of traffic for investigation: " +
					"retry 2 exceeds maxRetryCount 1 (retryAndPause): pausing the pod, 0 of maxPauseCount 1 paused before it",
				"Normal Paused Pause Pod/e: Pod e paused out of traffic for investigation: " +
					"retry 2 exceeds maxRetryCount 1 (retryAndPause): pausing the pod, 0 of maxPauseCount 1 paused before it",
			},
		},
		"a breaker's own maxPauseCount counts the pods it paused, not another breaker's": {
			objs: []client.Object{testService(true), testKVS(func(k *kvv1.KubervisorService) {
				k.Spec.Breakers[0].Activator = &pauseOne
			}, "b"), ejectedPod("e", 2, t0), pausedBy("paused", "other")},
			wantTraffic:  "pause",
			wantPatches:  []string{`e: {"metadata":{"labels":{"kubervisor/traffic":"pause"},"resourceVersion":"999"}}`},
			wantLiveList: 1,
			wantEvents: []string{
				"Normal Paused Pause KubervisorService/kvs: Pod e paused out of traffic for investigation: " +
					"retry 2 exceeds maxRetryCount 1 (retryAndPause): pausing the pod, 0 of maxPauseCount 1 paused before it",
				"Normal Paused Pause Pod/e: Pod e paused out of traffic for investigation: " +
					"retry 2 exceeds maxRetryCount 1 (retryAndPause): pausing the pod, 0 of maxPauseCount 1 paused before it",
			},
		},
		"defaultActivator's maxPauseCount counts every paused pod of the KubervisorService": {
			objs:         []client.Object{testService(true), activatorKVS(pauseOne), ejectedPod("e", 2, t0), pausedBy("paused", "other")},
			wantTraffic:  "no",
			wantEvicted:  []string{"ns/e"},
			wantLiveList: 1,
			wantEvents: []string{
				"Normal Killed Kill KubervisorService/kvs: Pod e evicted: retry 2 exceeds maxRetryCount 1 (retryAndPause): " +
					"killing the pod instead of pausing it, 1 paused already (maxPauseCount 1)",
				"Normal Killed Kill Pod/e: Pod e evicted: retry 2 exceeds maxRetryCount 1 (retryAndPause): " +
					"killing the pod instead of pausing it, 1 paused already (maxPauseCount 1)",
			},
		},
		"kills instead of pausing when every pause slot is taken": {
			objs: []client.Object{testService(true), activatorKVS(pauseOne), ejectedPod("e", 2, t0),
				testPod("paused", kvv1.TrafficPause, nil)},
			wantTraffic:  "no",
			wantEvicted:  []string{"ns/e"},
			wantLiveList: 1,
			wantEvents: []string{
				"Normal Killed Kill KubervisorService/kvs: Pod e evicted: retry 2 exceeds maxRetryCount 1 (retryAndPause): " +
					"killing the pod instead of pausing it, 1 paused already (maxPauseCount 1)",
				"Normal Killed Kill Pod/e: Pod e evicted: retry 2 exceeds maxRetryCount 1 (retryAndPause): " +
					"killing the pod instead of pausing it, 1 paused already (maxPauseCount 1)",
			},
		},
		"kills past maxRetryCount (retryAndKill)": {
			objs:        []client.Object{testService(true), activatorKVS(kill("10s")), ejectedPod("e", 4, t0)},
			wantTraffic: "no",
			wantEvicted: []string{"ns/e"},
			wantEvents: []string{
				"Normal Killed Kill KubervisorService/kvs: Pod e evicted: retry 4 exceeds maxRetryCount 3 (retryAndKill): killing the pod",
				"Normal Killed Kill Pod/e: Pod e evicted: retry 4 exceeds maxRetryCount 3 (retryAndKill): killing the pod",
			},
		},
		"eviction refused: retried after the period when shorter than 30s": {
			objs:        []client.Object{testService(true), activatorKVS(kill("10s")), ejectedPod("e", 4, t0)},
			evictErr:    tooMany,
			wantResult:  ctrl.Result{RequeueAfter: 10 * time.Second},
			wantTraffic: "no",
			wantEvicted: []string{"ns/e"},
			wantEvents: []string{
				"Warning EvictionRefused Kill KubervisorService/kvs: Eviction of pod e refused (" + tooMany.Error() +
					"); it stays out of traffic and is retried in 10s",
				"Warning EvictionRefused Kill Pod/e: Eviction of pod e refused (" + tooMany.Error() +
					"); it stays out of traffic and is retried in 10s",
			},
		},
		"eviction refused: retried after 30s at most": {
			objs:        []client.Object{testService(true), activatorKVS(kill("1m")), ejectedPod("e", 4, t0)},
			evictErr:    tooMany,
			wantResult:  ctrl.Result{RequeueAfter: 30 * time.Second},
			wantTraffic: "no",
			wantEvicted: []string{"ns/e"},
			wantEvents: []string{
				"Warning EvictionRefused Kill KubervisorService/kvs: Eviction of pod e refused (" + tooMany.Error() +
					"); it stays out of traffic and is retried in 30s",
				"Warning EvictionRefused Kill Pod/e: Eviction of pod e refused (" + tooMany.Error() +
					"); it stays out of traffic and is retried in 30s",
			},
		},
		"dry run restores when due, never kills": {
			objs: []client.Object{testService(true), testKVS(func(k *kvv1.KubervisorService) {
				k.Spec.DryRun = true
				k.Spec.DefaultActivator = new(kill("10s"))
			}, "b"), ejectedPod("e", 4, t0)},
			wantTraffic: "yes",
			wantPatches: []string{`e: {"metadata":{"annotations":{"controller.kubernetes.io/pod-deletion-cost":null,"kubervisor/restored-at":"2026-03-14T15:09:26.54Z"},` +
				`"labels":{"kubervisor/traffic":"yes"},"resourceVersion":"999"}}`},
			wantEvents: []string{
				"Normal Restored Restore KubervisorService/kvs: Pod e back in traffic: retry 4 exceeds maxRetryCount 3 (retryAndKill): " +
					"killing the pod; restored instead, never paused or killed: dry run",
				"Normal Restored Restore Pod/e: Pod e back in traffic: retry 4 exceeds maxRetryCount 3 (retryAndKill): " +
					"killing the pod; restored instead, never paused or killed: dry run",
			},
		},
		"an orphan (its KubervisorService gone) is released and back in traffic, with an event": {
			objs: []client.Object{testService(true), func() *corev1.Pod {
				p := ejectedPod("e", 2, t0)
				p.Labels[kvv1.LabelName] = "gone"
				return p
			}()},
			wantTraffic: "yes",
			// Its only annotations were Kubervisor's: the merge patch drops the emptied map whole.
			wantPatches: []string{`e: {"metadata":{"annotations":null,` +
				`"labels":{"kubervisor/name":null,"kubervisor/strategy":null,"kubervisor/traffic":"yes"},"resourceVersion":"999"}}`},
			wantEvents: []string{"Normal OrphanReleased Release Pod/e: Pod e is labelled for KubervisorService gone, which does not exist: " +
				"released and put back in traffic"},
		},
		"a breaker in dry run: its pods wait for their period, then come back": {
			objs: []client.Object{testService(true), testKVS(func(k *kvv1.KubervisorService) {
				k.Spec.Breakers[0].DryRun = true
				k.Spec.DefaultActivator = &periodic10s
			}, "b"), ejectedPod("e", 1, t0.Add(-4*time.Second))},
			wantResult:  ctrl.Result{RequeueAfter: 6 * time.Second},
			wantTraffic: "no",
		},
		"the selector lacks the traffic key: a pod past its retries is restored, not paused": {
			objs:        []client.Object{testService(false), activatorKVS(pauseOne), ejectedPod("e", 2, t0)},
			wantTraffic: "yes",
			wantPatches: []string{`e: {"metadata":{"annotations":{"controller.kubernetes.io/pod-deletion-cost":null,"kubervisor/restored-at":"2026-03-14T15:09:26.54Z"},` +
				`"labels":{"kubervisor/traffic":"yes"},"resourceVersion":"999"}}`},
			wantEvents: []string{
				"Normal Restored Restore KubervisorService/kvs: Pod e back in traffic: retry 2 exceeds maxRetryCount 1 (retryAndPause): " +
					"pausing the pod, 0 of maxPauseCount 1 paused before it; restored instead, never paused or killed: " +
					"the selector of Service svc lacks kubervisor/traffic=yes",
				"Normal Restored Restore Pod/e: Pod e back in traffic: retry 2 exceeds maxRetryCount 1 (retryAndPause): " +
					"pausing the pod, 0 of maxPauseCount 1 paused before it; restored instead, never paused or killed: " +
					"the selector of Service svc lacks kubervisor/traffic=yes",
			},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, tc.objs...)
			h.evictor.err = tc.evictErr
			r := h.podReconciler()
			res, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKey{Namespace: testNS, Name: "e"}})
			if (err != nil) != tc.wantErr {
				t.Fatalf("Reconcile error = %v, want error %t", err, tc.wantErr)
			}
			if d := cmp.Diff(tc.wantResult, res); d != "" {
				t.Errorf("result mismatch (-want +got):\n%s", d)
			}
			if d := cmp.Diff([]string{tc.wantTraffic}, h.traffic("e")); d != "" {
				t.Errorf("traffic mismatch (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tc.wantPatches, h.patches); d != "" {
				t.Errorf("pod patches mismatch (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tc.wantEvents, h.events.take()); d != "" {
				t.Errorf("events mismatch (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tc.wantEvicted, h.evictor.evicted); d != "" {
				t.Errorf("evictions mismatch (-want +got):\n%s", d)
			}
			if h.liveLists != tc.wantLiveList {
				t.Errorf("live pod lists = %d, want %d", h.liveLists, tc.wantLiveList)
			}
		})
	}
}

// TestActivatorEditAfterUpgrade: a pod ejected by a version that recorded no activator, then an edit of its
// activator after the upgrade that puts the pod past its retries: the pod is restored once on the new
// schedule, never paused or killed by the edit (SPEC §6). The first pass after the upgrade records the
// activator in force on the pod, in one write, never repeated; the edit then differs from it.
func TestActivatorEditAfterUpgrade(t *testing.T) {
	period := new(intstr.FromString("10s"))
	cases := map[string]struct {
		before, after kvv1.ActivatorStrategy
		// recorded is what the first pass records: the fingerprint of before.
		recorded kvv1.ResolvedActivator
		// waitBefore is when the pod is due under before; 30s (retry 3 of the edited activator, linear) after it.
		waitBefore time.Duration
		reason     string
	}{
		"periodic, then retryAndKill with maxRetryCount 3": {
			before:     kvv1.ActivatorStrategy{Mode: kvv1.ActivatorModePeriodic, Period: period},
			after:      kvv1.ActivatorStrategy{Mode: kvv1.ActivatorModeRetryAndKill, Period: period, MaxRetryCount: new(int32(3))},
			recorded:   kvv1.ResolvedActivator{Mode: kvv1.ActivatorModePeriodic, MaxRetryCount: kvv1.DefaultMaxRetryCount},
			waitBefore: 10 * time.Second,
			reason:     "retry 4 exceeds maxRetryCount 3 (retryAndKill)",
		},
		"retryAndPause with maxRetryCount 5, then 3": {
			before: kvv1.ActivatorStrategy{Mode: kvv1.ActivatorModeRetryAndPause, Period: period, MaxRetryCount: new(int32(5)),
				MaxPauseCount: new(int32(1))},
			after: kvv1.ActivatorStrategy{Mode: kvv1.ActivatorModeRetryAndPause, Period: period, MaxRetryCount: new(int32(3)),
				MaxPauseCount: new(int32(1))},
			recorded:   kvv1.ResolvedActivator{Mode: kvv1.ActivatorModeRetryAndPause, MaxRetryCount: 5},
			waitBefore: 40 * time.Second,
			reason:     "retry 4 exceeds maxRetryCount 3 (retryAndPause)",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			// Ejected at t0 by the older version, its 4th ejection: no kubervisor/activator on it.
			h := newHarness(t, testService(true), testPod("p0", "yes", nil), testPod("p1", "yes", nil), testPod("p2", "yes", nil),
				testPod("p3", "yes", nil), ejectedPod("e", 4, t0),
				testKVS(func(k *kvv1.KubervisorService) { k.Spec.DefaultActivator = &tc.before }, "b"))
			kvsR, podR := h.kvsReconciler(), h.podReconciler()
			var sent []string // every pod patch of the test
			pass := func() []string {
				t.Helper()
				mustPass(h, kvsR)
				sent = append(sent, h.patches...)
				return h.patches
			}
			activate := func() (ctrl.Result, []string) {
				t.Helper()
				h.patches = nil
				res, err := podR.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKey{Namespace: testNS, Name: "e"}})
				if err != nil {
					t.Fatalf("activator: %v", err)
				}
				sent = append(sent, h.patches...)
				return res, h.patches
			}

			stamp := `e: {"metadata":{"annotations":{"kubervisor/activator":"` + tc.recorded.Fingerprint() + `"},"resourceVersion":"999"}}`
			if d := cmp.Diff([]string{stamp}, pass()); d != "" {
				t.Errorf("first pass after the upgrade: pod patches mismatch (-want +got):\n%s", d)
			}
			if res, patches := activate(); res.RequeueAfter != tc.waitBefore || len(patches) > 0 {
				t.Errorf("before the edit: activator %+v, patches %v; want a wait of %s and no write", res, patches, tc.waitBefore)
			}
			h.clock.Step(time.Second)
			if patches := pass(); len(patches) > 0 {
				t.Errorf("second pass: pod patches %v, want none (recorded once)", patches)
			}

			k := h.kvs()
			k.Spec.DefaultActivator = &tc.after
			if err := h.client.Update(ctx, k); err != nil {
				t.Fatal(err)
			}
			h.events.take()
			if res, patches := activate(); res.RequeueAfter != 29*time.Second || len(patches) > 0 {
				t.Errorf("right after the edit: activator %+v, patches %v; want a wait of 29s and no write", res, patches)
			}
			h.clock.Step(29 * time.Second)
			restore := strings.Replace(restorePatch("e", t0.Add(30*time.Second)), `"resourceVersion":"999"`, `"resourceVersion":"1000"`, 1)
			if _, patches := activate(); !cmp.Equal([]string{restore}, patches) {
				t.Errorf("due on the new schedule: patches %v, want the restore %v", patches, restore)
			}
			note := "Pod e back in traffic: " + tc.reason +
				", but the activator changed since the ejection: restored once, never punished by an edit: back in traffic after 30s"
			if d := cmp.Diff([]string{"Normal Restored Restore KubervisorService/kvs: " + note, "Normal Restored Restore Pod/e: " + note},
				h.events.take()); d != "" {
				t.Errorf("events mismatch (-want +got):\n%s", d)
			}
			if patches := pass(); len(patches) > 0 {
				t.Errorf("pass after the restore: pod patches %v, want none", patches)
			}
			if got := h.traffic("e"); got[0] != kvv1.TrafficYes || len(h.evictor.evicted) > 0 {
				t.Errorf("pod e: traffic %v, evicted %v; want restored, never evicted", got, h.evictor.evicted)
			}
			stamps := 0
			for _, p := range sent {
				if strings.Contains(p, kvv1.AnnotationActivator) {
					stamps++
				}
			}
			if len(sent) != 2 || stamps != 1 {
				t.Errorf("pod patches %v, want 2: the record of the activator once, then the restore", sent)
			}
		})
	}
}

func TestRivalsOf(t *testing.T) {
	other := testKVS(nil, "b")
	other.Name = "younger"
	elsewhere := testKVS(nil, "b")
	elsewhere.Name, elsewhere.Spec.Service = "elsewhere", "other-svc"
	h := newHarness(t, testKVS(nil, "b"), other, elsewhere)
	got := h.kvsReconciler().rivalsOf(context.Background(), testKVS(nil, "b"))
	want := []ctrl.Request{{NamespacedName: client.ObjectKey{Namespace: testNS, Name: "younger"}}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("rivalsOf mismatch (-want +got):\n%s", d)
	}
}
