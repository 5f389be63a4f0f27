package controller

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/metrics"
	"github.com/kubervisor/kubervisor/internal/podstate"
)

// maxQueryTimeout bounds one detector query whatever the evaluation period, unless the breaker's detector
// endpoint sets a timeout of its own (queryTimeout): a backend that hangs is reported within seconds, not
// after the hour of a breaker evaluated hourly.
const maxQueryTimeout = 10 * time.Second

// conflictRetry is the wait before a pass that lost an optimistic-lock race (its status write, or a pod
// patch) is run again.
const conflictRetry = 250 * time.Millisecond

// adoptionWait is the fallback requeue while the Service's pods are being adopted.
const adoptionWait = time.Second

// KubervisorServiceReconciler runs the breaker loop of each KubervisorService and owns its status and
// finalizer.
type KubervisorServiceReconciler struct {
	client.Client
	// APIReader reads pods live, bypassing the cache: before a manual request is carried out and when the
	// KubervisorService is deleted. (An ejection needs none: the pass counts its own writes, memory.go.)
	APIReader client.Reader
	Recorder  events.EventRecorder
	Clock     clock.Clock
	HTTP      *http.Client

	newDetector DetectorFactory
	endpoints   EndpointResolver
	// podStore and kvsStore are the pod and KubervisorService informers' indexers the passes read from
	// (podstore.go); nil: they list.
	podStore, kvsStore toolscache.Indexer
	memory             *memory
	adoptions          *adoptionFailures
	// wake asks for a pass of a KubervisorService whose detector query answered after its pass stopped
	// waiting for it (flights.go); SetupWithManager sends it through a channel source of the controller. nil
	// (a reconciler without a controller): the requeue at the query's timeout picks the answer up.
	wake func(types.NamespacedName)
}

// +kubebuilder:rbac:groups=breaker.kubervisor.io,resources=kubervisorservices,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=breaker.kubervisor.io,resources=kubervisorservices/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=breaker.kubervisor.io,resources=kubervisorservices/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile runs one pass. Data flows one way: observe, evaluate, act, then a pure desiredStatus.
//
//  1. A KubervisorService being deleted releases its pods, then its finalizer.
//  2. Observe (cache): the Service, conflicts with other KubervisorServices, the managed pods.
//  3. Fail-open: under the floor, put back pods the breakers ejected (restore.go), in every pass.
//     Then evaluate: query the detectors of the breakers that are due.
//  4. Act: plan with one shared quota, patch the ejected pods, events, metrics; remember the outcomes.
//  5. desiredStatus from the observation and the remembered outcomes; write it once, only if it differs.
//  6. Requeue at the next due breaker (a breaker whose query is in flight: at the query's timeout, unless
//     its answer wakes the KubervisorService first).
func (r *KubervisorServiceReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	// NOTE: read only, without a deep copy (make bench-scale: the copy was 5 % of the steady CPU): kvs shares
	// its slices and maps with the cache's object. Every write goes to a DeepCopy: a write's answer is
	// decoded into the object sent, which must never share a map with the cache.
	kvs := &kvv1.KubervisorService{}
	if err := r.Get(ctx, req.NamespacedName, kvs, client.UnsafeDisableDeepCopy); err != nil {
		if apierrors.IsNotFound(err) {
			r.memory.forget(req.NamespacedName)
			metrics.Forget(req.Namespace, req.Name)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("getting KubervisorService %s: %w", req, err)
	}
	if !kvs.DeletionTimestamp.IsZero() {
		// Its detector queries in flight are of no use any more.
		r.memory.flights.drop(req.NamespacedName)
		return requeueOnConflict(ctx, r.finalize(ctx, kvs.DeepCopy()))
	}
	mem := r.memory.of(kvs, r.Clock.Now())
	if mem.stale(kvs) {
		logf.FromContext(ctx).V(1).Info("The cache has not seen our last write yet; waiting for it")
		return ctrl.Result{RequeueAfter: conflictRetry}, nil
	}
	mem.caughtUp()
	if !controllerutil.ContainsFinalizer(kvs, kvv1.Finalizer) {
		orig := kvs
		kvs = kvs.DeepCopy()
		controllerutil.AddFinalizer(kvs, kvv1.Finalizer)
		if err := r.Patch(ctx, kvs, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
			return requeueOnConflict(ctx, fmt.Errorf("adding finalizer to KubervisorService %s: %w", req, err))
		}
		mem.wrote(orig.ResourceVersion)
	}

	obs, err := r.observe(ctx, kvs)
	if err != nil {
		return ctrl.Result{}, err
	}
	// The pass's own writes the cache has not shown yet count as written (§5.5); this pass's join them.
	mem.overlay(obs.pods)
	defer func() { mem.expect(obs.writes) }()
	now := r.Clock.Now()
	var l lesson
	var queued eventQueue
	var actErr error
	switch {
	case obs.evaluable():
		var restoreErr error
		l.breach, queued, restoreErr = r.restoreFloor(ctx, kvs, obs, mem, now)
		actErr = errors.Join(restoreErr, r.markOutOfTraffic(ctx, kvs, obs, now), r.carryOutRequests(ctx, kvs, obs, now))
		start := now
		l.ev = r.evaluate(ctx, kvs, obs, mem, now)
		if len(l.ev.breakers) > 0 {
			var reported eventQueue
			l.outcomes, reported, err = r.act(ctx, kvs, obs, &l.ev, mem.outcomes, now)
			actErr = errors.Join(actErr, err)
			queued = append(queued, reported...)
			// NOTE: a pod the plan ejects was not ejected (a lost race, an unreachable API server): the
			// breakers are due again at once instead of after their period (SPEC §5.11).
			l.retry = actErr != nil
			metrics.EvaluationDuration.WithLabelValues(kvs.Namespace, kvs.Name).Observe(r.Clock.Since(start).Seconds())
		}
	case obs.adopting():
		// Adoption labels the pods within moments and each label change requeues this KubervisorService; the
		// fallback requeue covers a lost event.
		logf.FromContext(ctx).V(1).Info("Waiting for pods to be adopted before evaluating", "unadopted", len(obs.unadopted))
		// Fail-open does not wait for adoption: the pods adopted so far are restored if the floor needs them.
		var restoreErr error
		l.breach, queued, restoreErr = r.restoreFloor(ctx, kvs, obs, mem, now)
		actErr = errors.Join(restoreErr, r.markOutOfTraffic(ctx, kvs, obs, now))
	default:
		// Nothing to evaluate: forget the schedule so that evaluation starts afresh when the Service is back.
		r.memory.forget(req.NamespacedName)
		mem = &kvsMemory{}
	}

	mem.learn(&l)
	status := desiredStatus(kvs, obs, recalled{outcomes: mem.outcomes, breach: mem.breach, storms: mem.storms,
		stormActive: mem.stormActive}, now)
	if obs.adopting() {
		// The status keeps its counts during adoption; the metrics follow every pod.
		recordPodMetrics(kvs, countPods(obs.pods, kvs.Spec.GateMode()), mem)
	} else {
		recordPodMetrics(kvs, status.Pods, mem)
	}
	if e, ok := notReadyEvent(kvs, status); ok {
		queued = append(queued, e)
	}
	// NOTE: the events that report what the status records go out once it is written (JobSet's way): a
	// write that fails keeps them for the pass that writes it, so they are neither lost nor sent twice.
	mem.held = heldWith(mem.held, queued)
	if !sameStatus(&kvs.Status, &status) {
		from := kvs.ResourceVersion
		kvs = kvs.DeepCopy()
		kvs.Status = status
		// NOTE: a merge patch of the whole status, with no resourceVersion: it cannot lose an optimistic-lock
		// race against a cache that lags (after an API server restart, while the informers re-list, an update
		// would be sent, and refused, every 250 ms). The status is the reconciler's alone (one writer), and
		// the patch says every field, so it is exact whatever the server holds. A write that fails anyway is
		// returned: the work queue retries it with its exponential back-off.
		patch, err := statusPatch(&status)
		if err != nil {
			return ctrl.Result{}, err
		}
		if err := r.Status().Patch(ctx, kvs, patch); err != nil {
			return ctrl.Result{}, fmt.Errorf("patching status of KubervisorService %s: %w", req, err)
		}
		mem.wrote(from)
	}
	for _, e := range mem.held {
		r.Recorder.Eventf(e.regarding, e.related, e.eventType, e.reason, e.action, "%s", e.note)
	}
	mem.held = nil
	if actErr != nil {
		return requeueOnConflict(ctx, actErr)
	}
	if obs.adopting() {
		return ctrl.Result{RequeueAfter: adoptionWait}, nil
	}
	return ctrl.Result{RequeueAfter: mem.wait(r.Clock.Now(), l.ev.flying)}, nil
}

// notReadyEvent is the Warning event of Ready turning False, or changing its message, for a reason the user
// must act on (an unusable spec, pods that cannot be adopted): the condition says it, the event makes it
// loud. Detector failures and storms have their own events (act).
func notReadyEvent(kvs *kvv1.KubervisorService, status kvv1.KubervisorServiceStatus) (queuedEvent, bool) {
	c := meta.FindStatusCondition(status.Conditions, kvv1.ConditionReady)
	if c == nil || c.Status != metav1.ConditionFalse {
		return queuedEvent{}, false
	}
	switch c.Reason {
	case kvv1.ReasonInvalidSpec, kvv1.ReasonAdoptionFailed:
	default:
		return queuedEvent{}, false
	}
	if prev := meta.FindStatusCondition(kvs.Status.Conditions, kvv1.ConditionReady); prev != nil &&
		prev.Status == c.Status && prev.Reason == c.Reason && prev.Message == c.Message {
		return queuedEvent{}, false
	}
	return queuedEvent{regarding: kvs, eventType: corev1.EventTypeWarning, reason: c.Reason, action: kvv1.ActionEvaluate, note: c.Message}, true
}

// heldWith adds the pass's events to those held since a status write failed, each event once.
func heldWith(held, queued []queuedEvent) []queuedEvent {
	for _, e := range queued {
		if !slices.ContainsFunc(held, func(h queuedEvent) bool { return h.reason == e.reason && h.note == e.note }) {
			held = append(held, e)
		}
	}
	return held
}

// finalize releases every pod of a KubervisorService being deleted, then removes its finalizer.
func (r *KubervisorServiceReconciler) finalize(ctx context.Context, kvs *kvv1.KubervisorService) error {
	if !controllerutil.ContainsFinalizer(kvs, kvv1.Finalizer) {
		return nil
	}
	// A live read: a pod adopted a moment ago and not yet in the cache must not keep our labels.
	pods, err := livePods(ctx, r.APIReader, kvs)
	if err != nil {
		return err
	}
	// NOTE: every pod is tried, whatever failed before it: one pod a webhook refuses must not keep the
	// others out of traffic. The finalizer stays until all are released.
	paused := 0
	var errs error
	for i := range pods {
		wasPaused := podstate.IsPaused(&pods[i])
		if err := releasePod(ctx, r.Client, &pods[i]); err != nil {
			errs = errors.Join(errs, err)
			continue
		}
		// Released, the pod is in no mode: its readiness gate goes back to True.
		if err := syncGate(ctx, r.Client, &pods[i], false, r.Clock.Now()); err != nil {
			errs = errors.Join(errs, err)
		}
		if wasPaused {
			paused++
			recordPodEvent(r.Recorder, kvs, &pods[i], corev1.EventTypeNormal, kvv1.EventLeftPaused, kvv1.ActionRelease,
				fmt.Sprintf("KubervisorService %s is being deleted; pod %s stays paused (kubervisor/traffic=pause) for investigation", kvs.Name, pods[i].Name))
		}
	}
	if errs != nil {
		return errs
	}
	logf.FromContext(ctx).Info("Released pods of deleted KubervisorService", "pods", len(pods), "paused", paused)
	orig := kvs.DeepCopy()
	controllerutil.RemoveFinalizer(kvs, kvv1.Finalizer)
	if err := r.Patch(ctx, kvs, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("removing finalizer of KubervisorService %s/%s: %w", kvs.Namespace, kvs.Name, err)
	}
	r.memory.forget(client.ObjectKeyFromObject(kvs))
	metrics.Forget(kvs.Namespace, kvs.Name)
	return nil
}

// SetupWithManager watches KubervisorServices (spec and deletion changes, not our status writes), the
// Services they name, the pods they own (label, readiness and deletion changes), and the detector queries
// that answered after their pass stopped waiting (doc.go).
func (r *KubervisorServiceReconciler) SetupWithManager(mgr ctrl.Manager, workers int) error {
	wakes := make(chan event.TypedGenericEvent[*kvv1.KubervisorService], wakeBuffer)
	r.wake = func(key types.NamespacedName) {
		// NOTE: never blocks a query's goroutine (a stopped controller reads no more): a wake-up that finds
		// the channel full is dropped, and the pass that left the query in flight requeued at its timeout.
		select {
		case wakes <- event.TypedGenericEvent[*kvv1.KubervisorService]{
			Object: &kvv1.KubervisorService{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}}:
		default:
		}
	}
	// The queries in flight end with the manager, not up to their timeout after it.
	stopQueries := manager.RunnableFunc(func(ctx context.Context) error {
		<-ctx.Done()
		r.memory.flights.stop()
		return nil
	})
	if err := mgr.Add(stopQueries); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("kubervisorservice").
		For(&kvv1.KubervisorService{}, builder.WithPredicates(kvsLifecycleChanged())).
		// A KubervisorService that appears, goes or changes re-evaluates the others naming the same Service:
		// one of them may have won or lost the claim (SPEC §3, Conflict).
		Watches(&kvv1.KubervisorService{}, handler.EnqueueRequestsFromMapFunc(r.rivalsOf), builder.WithPredicates(kvsLifecycleChanged())).
		WatchesRawSource(source.Kind(mgr.GetCache(), &corev1.Service{}, handler.TypedEnqueueRequestsFromMapFunc(r.kvsForService), serviceChanged())).
		// The pod's owner before and after an update (both recount when a pod changes hands).
		WatchesRawSource(source.Kind(mgr.GetCache(), &corev1.Pod{}, handler.TypedEnqueueRequestsFromMapFunc(ownerOfPod), podChanged())).
		WatchesRawSource(source.Channel(wakes, &handler.TypedEnqueueRequestForObject[*kvv1.KubervisorService]{})).
		// NOTE: the priority queue (controller-runtime's default) costs less here than the classic delaying
		// queue: make bench-scale measured 8.9 CPU s/min with the classic one against 7.6 (docs/scaling.md).
		WithOptions(controller.Options{MaxConcurrentReconciles: workers}).
		Complete(r)
}

// kvsForService maps a Service to the KubervisorServices naming it, through the spec.service index.
func (r *KubervisorServiceReconciler) kvsForService(ctx context.Context, o *corev1.Service) []reconcile.Request {
	named, err := naming(ctx, r.Client, o.GetNamespace(), o.GetName())
	if err != nil {
		logf.FromContext(ctx).Error(err, "Listing KubervisorServices for Service", "Service", klog.KObj(o))
		return nil
	}
	out := make([]reconcile.Request, 0, len(named))
	for _, k := range named {
		out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&k)})
	}
	return out
}

// rivalsOf maps a KubervisorService to the others of its namespace naming the same Service.
func (r *KubervisorServiceReconciler) rivalsOf(ctx context.Context, o client.Object) []reconcile.Request {
	kvs, ok := o.(*kvv1.KubervisorService)
	if !ok {
		return nil
	}
	named, err := naming(ctx, r.Client, kvs.Namespace, kvs.Spec.Service)
	if err != nil {
		logf.FromContext(ctx).Error(err, "Listing KubervisorServices for Service", "Service", klog.KRef(kvs.Namespace, kvs.Spec.Service))
		return nil
	}
	var out []reconcile.Request
	for i := range named {
		if named[i].Name != kvs.Name {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&named[i])})
		}
	}
	return out
}

// ownerOfPod maps a pod to the KubervisorService its kubervisor/name label names.
func ownerOfPod(_ context.Context, pod *corev1.Pod) []reconcile.Request {
	owner := podstate.OwnerOf(pod)
	if owner == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: pod.Namespace, Name: owner}}}
}
