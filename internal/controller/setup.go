package controller

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	"k8s.io/utils/keymutex"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/detector"
	"github.com/kubervisor/kubervisor/internal/endpoints"
	"github.com/kubervisor/kubervisor/internal/podstate"
)

// Field index keys, registered once by SetupIndexes for cmd/main.go and the tests alike.
const (
	// IndexServiceName indexes KubervisorServices by spec.service.
	IndexServiceName = "spec.service"
	// IndexOwner indexes pods by the value of their kubervisor/name label.
	IndexOwner = "metadata.labels.kubervisor/name"
	// IndexLabel indexes pods by each of their labels, as key=value.
	IndexLabel = "metadata.labels"
	// IndexSelector indexes Services by each key=value of their selector, kubervisor/traffic aside.
	IndexSelector = "spec.selector"
)

// DefaultMaxConcurrentEvaluations is the default number of KubervisorService workers.
const DefaultMaxConcurrentEvaluations = 64

// fieldManager names Kubervisor in managedFields and events.
const fieldManager = "kubervisor"

// EndpointResolver resolves a named detector endpoint for a namespace (SPEC §2.3); *endpoints.Registry is
// the production one.
type EndpointResolver interface {
	// Resolve returns the endpoint name ("" for the default) as the KubervisorServices of namespace use it.
	Resolve(name, namespace string) (*endpoints.Target, error)
	// Generation moves when the configuration changes: detectors built before are built again.
	Generation() uint64
	// Problem says why the configuration in use is not the file's (it does not parse), "" when it is.
	Problem() string
}

// DetectorFactory builds the detector of one breaker; detector.New is the production one.
type DetectorFactory func(b *kvv1.BreakerStrategy, opts detector.Options) (detector.Detector, error)

// Options configure the reconcilers. The zero value is usable: real clock, default HTTP client, the real
// detectors.
type Options struct {
	// Clock drives every time-based decision; tests inject a fake one.
	Clock clock.WithTicker
	// HTTPClient is shared by every detector (Prometheus and custom services).
	HTTPClient *http.Client
	// MaxConcurrentReconciles is the number of workers of the Service and Pod controllers.
	MaxConcurrentReconciles int
	// MaxConcurrentEvaluations is the number of workers of the KubervisorService controller, so the number
	// of breaker passes in flight at once. NOTE: a pass holds its worker for its queries' round trip, at most
	// queryWait (200 ms): a slower query is left in flight and its answer judged by a later pass (doc.go), so
	// a detector that hangs never delays the other KubervisorServices; many workers keep the passes of slow
	// detectors short (at 100 ms per query, 64 workers allow 640 evaluations a second), and the work queue
	// never hands one KubervisorService to two workers, so each one's passes stay in order.
	MaxConcurrentEvaluations int
	// NewDetector builds each breaker's detector; tests inject an in-memory one. nil uses detector.New.
	NewDetector DetectorFactory
	// Endpoints resolves the named detector endpoints (SPEC §2.3): *endpoints.Registry. nil: none are
	// defined, and a breaker that names one, or no address, fails with DetectorError.
	Endpoints EndpointResolver

	// KubervisorServiceSelector, when set, restricts this manager to the KubervisorServices it selects (a
	// shard, docs/scaling.md); CacheOptions must be given the same selector.
	KubervisorServiceSelector labels.Selector

	// adoptions is shared by the reconcilers built from one Options (SetupWithManager).
	adoptions *adoptionFailures
}

func (o *Options) defaults() {
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.MaxConcurrentEvaluations == 0 {
		o.MaxConcurrentEvaluations = DefaultMaxConcurrentEvaluations
	}
	if o.HTTPClient == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		// Every evaluation in flight may query the same Prometheus: keep that many connections alive
		// instead of the default 2 per host.
		t.MaxIdleConnsPerHost = o.MaxConcurrentEvaluations
		o.HTTPClient = &http.Client{Transport: t}
	}
	if o.MaxConcurrentReconciles == 0 {
		o.MaxConcurrentReconciles = 4
	}
	if o.NewDetector == nil {
		o.NewDetector = detector.New
	}
	if o.adoptions == nil {
		o.adoptions = newAdoptionFailures()
	}
}

// KubervisorServiceByService is the index function of IndexServiceName.
func KubervisorServiceByService(o client.Object) []string {
	kvs, ok := o.(*kvv1.KubervisorService)
	if !ok {
		return nil
	}
	return []string{kvs.Spec.Service}
}

// PodByOwner is the index function of IndexOwner.
func PodByOwner(o client.Object) []string {
	if name, ok := podstate.OwnerLabel(o.GetLabels()); ok {
		return []string{name}
	}
	return nil
}

// PodByLabel is the index function of IndexLabel.
func PodByLabel(o client.Object) []string {
	out := make([]string, 0, len(o.GetLabels()))
	for k, v := range o.GetLabels() {
		out = append(out, k+"="+v)
	}
	return out
}

// ServiceBySelector is the index function of IndexSelector: the pairs of the selector of the pods to
// supervise (podstate.ManagedSelector).
func ServiceBySelector(o client.Object) []string {
	svc, ok := o.(*corev1.Service)
	if !ok {
		return nil
	}
	return podstate.ManagedPairs(svc.Spec.Selector)
}

// SetupIndexes registers the field indexes the reconcilers' map functions rely on. Tests building a fake
// client register the same functions (KubervisorServiceByService, PodByOwner, PodByLabel, ServiceBySelector).
func SetupIndexes(ctx context.Context, indexer client.FieldIndexer) error {
	if err := indexer.IndexField(ctx, &kvv1.KubervisorService{}, IndexServiceName, KubervisorServiceByService); err != nil {
		return fmt.Errorf("indexing KubervisorServices by service: %w", err)
	}
	if err := indexer.IndexField(ctx, &corev1.Pod{}, IndexOwner, PodByOwner); err != nil {
		return fmt.Errorf("indexing pods by %s: %w", kvv1.LabelName, err)
	}
	if err := indexer.IndexField(ctx, &corev1.Pod{}, IndexLabel, PodByLabel); err != nil {
		return fmt.Errorf("indexing pods by label: %w", err)
	}
	if err := indexer.IndexField(ctx, &corev1.Service{}, IndexSelector, ServiceBySelector); err != nil {
		return fmt.Errorf("indexing Services by selector: %w", err)
	}
	return nil
}

// SetupWithManager registers the indexes and the three reconcilers on mgr.
func SetupWithManager(ctx context.Context, mgr manager.Manager, opts Options) error {
	opts.defaults()
	if err := SetupIndexes(ctx, mgr.GetFieldIndexer()); err != nil {
		return err
	}
	rec := mgr.GetEventRecorder(fieldManager)
	kvs := NewKubervisorServiceReconciler(mgr.GetClient(), mgr.GetAPIReader(), rec, opts)
	var err error
	if kvs.podStore, err = storeOf(ctx, mgr.GetCache(), &corev1.Pod{}); err != nil {
		return err
	}
	if kvs.kvsStore, err = storeOf(ctx, mgr.GetCache(), &kvv1.KubervisorService{}); err != nil {
		return err
	}
	if err := kvs.SetupWithManager(mgr, opts.MaxConcurrentEvaluations); err != nil {
		return fmt.Errorf("setting up the KubervisorService controller: %w", err)
	}
	svc := &ServiceReconciler{Client: mgr.GetClient(), adoptions: opts.adoptions,
		shard: newShard(opts.KubervisorServiceSelector, mgr.GetAPIReader(), opts.Clock)}
	if err := svc.SetupWithManager(mgr, opts.MaxConcurrentReconciles); err != nil {
		return fmt.Errorf("setting up the Service controller: %w", err)
	}
	evictor, err := NewEvictor(mgr.GetConfig())
	if err != nil {
		return err
	}
	pod := NewPodReconciler(mgr.GetClient(), mgr.GetAPIReader(), rec, evictor, opts)
	if err := pod.SetupWithManager(mgr, opts.MaxConcurrentReconciles); err != nil {
		return fmt.Errorf("setting up the Pod controller: %w", err)
	}
	return nil
}

// NewKubervisorServiceReconciler returns the breaker reconciler. c reads from the cache and writes;
// apiReader reads live.
func NewKubervisorServiceReconciler(c client.Client, apiReader client.Reader, rec events.EventRecorder, opts Options) *KubervisorServiceReconciler {
	opts.defaults()
	return &KubervisorServiceReconciler{
		Client: c, APIReader: apiReader, Recorder: rec, Clock: opts.Clock, HTTP: opts.HTTPClient,
		newDetector: opts.NewDetector, endpoints: opts.Endpoints, memory: newMemory(), adoptions: opts.adoptions,
	}
}

// NewPodReconciler returns the activator and adoption reconciler. c reads from the cache and writes;
// apiReader reads live.
func NewPodReconciler(c client.Client, apiReader client.Reader, rec events.EventRecorder, evictor Evictor, opts Options) *PodReconciler {
	opts.defaults()
	return &PodReconciler{Client: c, APIReader: apiReader, Recorder: rec, Clock: opts.Clock, Evictor: evictor, adoptions: opts.adoptions,
		pauses: keymutex.NewHashed(0),
		shard:  newShard(opts.KubervisorServiceSelector, apiReader, opts.Clock)}
}

// CacheOptions trims the cache to what the reconcilers read (SPEC §9): pods keep their metadata, phase,
// readiness gates and the Ready, ContainersReady and kubervisor.io/in-traffic conditions only, and pods
// Kubervisor has no part in are stubs (TrimPod); Services keep their metadata without annotations and their
// selector (TrimService); managedFields are dropped everywhere. A non-empty namespace
// restricts the cache (namespaced install); kvsSelector restricts the KubervisorServices (a shard) and
// podSelector the pods (--pod-selector: pods outside it are neither seen nor supervised). Both cmd/main.go
// and the tests use it so that tests run what production runs.
func CacheOptions(namespace string, kvsSelector, podSelector labels.Selector) cache.Options {
	pods := cache.ByObject{Transform: TrimPod}
	if podSelector != nil && !podSelector.Empty() {
		pods.Label = podSelector
	}
	o := cache.Options{
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject:         map[client.Object]cache.ByObject{&corev1.Pod{}: pods, &corev1.Service{}: {Transform: TrimService}},
	}
	if kvsSelector != nil && !kvsSelector.Empty() {
		o.ByObject[&kvv1.KubervisorService{}] = cache.ByObject{Label: kvsSelector}
	}
	if namespace != "" {
		o.DefaultNamespaces = map[string]cache.Config{namespace: {}}
	}
	return o
}

// TrimPod keeps what the reconcilers read of a pod: metadata (without managedFields), phase, readiness
// gates and the Ready, ContainersReady and kubervisor.io/in-traffic conditions. NOTE: pods are only ever
// patched from these trimmed copies with a patch computed against a trimmed original (a merge patch of
// the metadata; a strategic merge patch of the status, whose conditions merge by type), so the dropped
// fields are never part of a write.
//
// A pod Kubervisor has no part in (no kubervisor/ label or annotation, no kubervisor.io/in-traffic gate
// or condition: most pods of a cluster) is kept as a stub (stubPod): what deciding to adopt it reads.
func TrimPod(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	if !kubervisorsPod(pod) {
		return stubPod(pod), nil
	}
	trimmed := &corev1.Pod{TypeMeta: pod.TypeMeta, ObjectMeta: pod.ObjectMeta}
	trimmed.ManagedFields = nil
	trimmed.Spec.NodeName = pod.Spec.NodeName
	trimmed.Spec.ReadinessGates = pod.Spec.ReadinessGates
	trimmed.Status.Phase = pod.Status.Phase
	for _, c := range pod.Status.Conditions {
		switch c.Type {
		case corev1.PodReady, corev1.ContainersReady, kvv1.ConditionInTraffic:
			trimmed.Status.Conditions = append(trimmed.Status.Conditions, c)
		}
	}
	return trimmed, nil
}

// TrimService keeps what the reconcilers read of a Service: its metadata without annotations (a Service
// applied with kubectl carries a copy of itself in kubectl.kubernetes.io/last-applied-configuration) and
// its selector. NOTE: the manager never writes a Service (RBAC: get, list, watch), so nothing is ever
// computed from a trimmed one but decisions.
func TrimService(obj any) (any, error) {
	svc, ok := obj.(*corev1.Service)
	if !ok {
		return obj, nil
	}
	trimmed := &corev1.Service{TypeMeta: svc.TypeMeta, ObjectMeta: svc.ObjectMeta}
	trimmed.ManagedFields, trimmed.Annotations = nil, nil
	trimmed.Spec.Selector = svc.Spec.Selector
	return trimmed, nil
}

// stubPod is what the cache keeps of a pod Kubervisor has no part in: its identity, resourceVersion (the
// optimistic lock of the adoption patch), labels (whether a supervised Service selects it), deletion
// timestamp (a terminating pod is not adopted) and phase. NOTE: what the reconcilers do with such a pod is
// adopt it or leave it alone; adoption is a merge patch of labels computed against this stub, and the watch
// event it causes brings the whole pod (now labelled) back through TrimPod. Each other pod of the cluster
// still costs its corev1.Pod struct, labels and index entries (4.8 KiB of RSS measured, docs/scaling.md;
// --pod-selector removes even that).
func stubPod(pod *corev1.Pod) *corev1.Pod {
	return &corev1.Pod{
		TypeMeta: pod.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID, ResourceVersion: pod.ResourceVersion,
			Labels: pod.Labels, DeletionTimestamp: pod.DeletionTimestamp,
		},
		Status: corev1.PodStatus{Phase: pod.Status.Phase},
	}
}

// kubervisorsPod reports whether Kubervisor has a part in the pod: a kubervisor/ label or annotation (it
// supervises or supervised it, or someone asks it to act on it), or the kubervisor.io/in-traffic readiness
// gate or condition (the pod waits for Kubervisor to become Ready, SPEC §11).
func kubervisorsPod(pod *corev1.Pod) bool {
	for _, m := range []map[string]string{pod.Labels, pod.Annotations} {
		for k := range m {
			if strings.HasPrefix(k, kvv1.KeyPrefix) {
				return true
			}
		}
	}
	return podstate.HasGate(pod) || podstate.GateStatus(pod) != ""
}
