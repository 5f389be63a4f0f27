package controller

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/breaker"
	"github.com/kubervisor/kubervisor/internal/detector"
	"github.com/kubervisor/kubervisor/internal/metrics"
)

// maxQueryTimeout bounds one detector query whatever the evaluation period: a reconcile worker must not be
// held for an hour by a breaker evaluated hourly.
const maxQueryTimeout = 10 * time.Second

// conflictRetry is the wait before a pass whose status write lost a race is run again.
const conflictRetry = 250 * time.Millisecond

// adoptionWait is the fallback requeue while the Service's pods are being adopted.
const adoptionWait = time.Second

// KubervisorServiceReconciler runs the breaker loop of each KubervisorService and owns its status and
// finalizer.
type KubervisorServiceReconciler struct {
	client.Client
	// APIReader reads pods live, bypassing the cache, before a pass ejects anything (SPEC §5.5).
	APIReader client.Reader
	Recorder  events.EventRecorder
	Clock     clock.Clock
	HTTP      *http.Client

	schedule *schedule
}

// +kubebuilder:rbac:groups=breaker.kubervisor.io,resources=kubervisorservices,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=breaker.kubervisor.io,resources=kubervisorservices/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=breaker.kubervisor.io,resources=kubervisorservices/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile runs one pass.
//
//  1. A KubervisorService being deleted releases its pods, then its finalizer.
//  2. Observe: the Service, conflicts with other KubervisorServices, the managed pods (cache).
//  3. Evaluate the breakers that are due, plan with one shared quota, patch the ejected pods.
//  4. Compute counts and conditions; write status once, only if it changed.
//  5. Requeue at the next due breaker.
func (r *KubervisorServiceReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	log := logf.FromContext(ctx)
	kvs := &kvv1.KubervisorService{}
	if err := r.Get(ctx, req.NamespacedName, kvs); err != nil {
		if apierrors.IsNotFound(err) {
			r.schedule.forget(req.NamespacedName)
			metrics.Forget(req.Namespace, req.Name)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("getting KubervisorService %s: %w", req, err)
	}
	if !kvs.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, r.finalize(ctx, kvs)
	}
	if !controllerutil.ContainsFinalizer(kvs, kvv1.Finalizer) {
		orig := kvs.DeepCopy()
		controllerutil.AddFinalizer(kvs, kvv1.Finalizer)
		if err := r.Patch(ctx, kvs, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
			return ctrl.Result{}, fmt.Errorf("adding finalizer to KubervisorService %s: %w", req, err)
		}
	}

	obs, err := r.observe(ctx, kvs)
	if err != nil {
		return ctrl.Result{}, err
	}
	status := kvs.Status.DeepCopy()
	status.ObservedGeneration = kvs.Generation
	entry := r.schedule.entry(kvs)
	now := r.Clock.Now()
	var requeue time.Duration
	switch {
	case obs.svc != nil && obs.owner && obs.unadopted > 0:
		// NOTE: evaluating now would judge a partial fleet (the floor on too few pods, anomalies about pods
		// not yet managed ignored). Adoption labels the pods within moments and each label change requeues
		// this KubervisorService; the fallback requeue covers a lost event.
		log.V(1).Info("Waiting for pods to be adopted before evaluating", "unadopted", obs.unadopted)
		requeue = adoptionWait
	case obs.svc != nil && obs.owner:
		entry.recall(status)
		if err := r.evaluate(ctx, kvs, obs, entry, status, now); err != nil {
			return ctrl.Result{}, err
		}
		requeue = entry.wait(r.Clock.Now())
	default:
		// Nothing to evaluate: forget the schedule so that evaluation starts afresh when the Service is back.
		r.schedule.forget(req.NamespacedName)
	}
	pruneBreakerStatus(kvs, status)
	status.Pods = countPods(obs.pods)
	setConditions(kvs, obs, status)
	recordPodMetrics(kvs, status.Pods)

	if !equality.Semantic.DeepEqual(&kvs.Status, status) {
		kvs.Status = *status
		if err := r.Status().Update(ctx, kvs); err != nil {
			if apierrors.IsConflict(err) {
				log.V(1).Info("KubervisorService changed during the pass; retrying", "kubervisorService", klog.KObj(kvs))
				return ctrl.Result{RequeueAfter: conflictRetry}, nil
			}
			return ctrl.Result{}, fmt.Errorf("updating status of KubervisorService %s: %w", req, err)
		}
	}
	return ctrl.Result{RequeueAfter: requeue}, nil
}

// observation is what a pass knows of the cluster.
type observation struct {
	svc *corev1.Service
	// owner is false when an older KubervisorService names the same Service: this one leaves the pods alone.
	owner bool
	// conflict explains a Conflict condition; empty when there is none.
	conflictReason, conflictMessage string
	// pods are the pods labelled with this KubervisorService's name.
	pods []corev1.Pod
	// unadopted counts the pods the Service selects that carry no owner yet: adoption is under way.
	unadopted int
}

func (r *KubervisorServiceReconciler) observe(ctx context.Context, kvs *kvv1.KubervisorService) (*observation, error) {
	obs := &observation{owner: true}
	svc := &corev1.Service{}
	switch err := r.Get(ctx, types.NamespacedName{Namespace: kvs.Namespace, Name: kvs.Spec.Service}, svc); {
	case apierrors.IsNotFound(err):
		svc = nil
	case err != nil:
		return nil, fmt.Errorf("getting Service %s/%s: %w", kvs.Namespace, kvs.Spec.Service, err)
	}
	obs.svc = svc

	cs, err := claims(ctx, r, kvs.Namespace)
	if err != nil {
		return nil, err
	}
	var rivals []string
	for _, c := range cs {
		if c.kvs.Name != kvs.Name && c.kvs.Spec.Service == kvs.Spec.Service {
			rivals = append(rivals, c.kvs.Name)
		}
	}
	if len(rivals) > 0 {
		obs.conflictReason = kvv1.ReasonServiceClaimed
		first := desiredOwnerOfService(cs, kvs.Spec.Service)
		obs.owner = first == kvs.Name
		obs.conflictMessage = fmt.Sprintf("Service %s is also named by KubervisorService %s; its pods are supervised by the oldest, %s",
			kvs.Spec.Service, strings.Join(rivals, ", "), first)
	}

	if obs.pods, err = ownedPods(ctx, r, kvs); err != nil {
		return nil, err
	}
	if svc != nil && obs.conflictReason == "" {
		if sel, ok := managedSelector(svc); ok {
			var selected corev1.PodList
			if err := r.List(ctx, &selected, client.InNamespace(kvs.Namespace), client.MatchingLabelsSelector{Selector: sel}); err != nil {
				return nil, fmt.Errorf("listing pods of Service %s/%s: %w", kvs.Namespace, svc.Name, err)
			}
			others := map[string]int{}
			for _, p := range selected.Items {
				owner, ok := p.Labels[kvv1.LabelName]
				switch {
				case !ok && p.DeletionTimestamp.IsZero():
					obs.unadopted++
				case ok && owner != kvs.Name:
					others[owner]++
				}
			}
			if len(others) > 0 {
				var parts []string
				for _, o := range slices.Sorted(maps.Keys(others)) {
					parts = append(parts, fmt.Sprintf("%d supervised by %s", others[o], o))
				}
				obs.conflictReason = kvv1.ReasonPodsClaimed
				obs.conflictMessage = "pods selected by Service " + svc.Name + " are supervised by another KubervisorService: " + strings.Join(parts, ", ")
			}
		}
	}
	return obs, nil
}

func desiredOwnerOfService(cs []claim, service string) string {
	for _, c := range cs {
		if c.kvs.Spec.Service == service {
			return c.kvs.Name
		}
	}
	return ""
}

// evaluate runs the breakers that are due (SPEC §5) and records their outcome in status.
func (r *KubervisorServiceReconciler) evaluate(ctx context.Context, kvs *kvv1.KubervisorService, obs *observation,
	entry *scheduleEntry, status *kvv1.KubervisorServiceStatus, now time.Time) error {
	start := r.Clock.Now()
	managed := make(map[string]struct{}, len(obs.pods))
	for i := range obs.pods {
		managed[obs.pods[i].Name] = struct{}{}
	}
	selectorActive := trafficControlled(obs.svc)
	var inputs []breaker.Input
	results := map[string]string{}
	for i := range kvs.Spec.Breakers {
		b := &kvs.Spec.Breakers[i]
		if !entry.due(b.Name, now) {
			continue
		}
		period, err := b.EvaluationPeriodOf()
		if err != nil {
			period = kvv1.DefaultEvaluationPeriod
		}
		entry.next[b.Name] = now.Add(period)
		metrics.LastEvaluation.WithLabelValues(kvs.Namespace, kvs.Name, b.Name).Set(float64(now.UnixNano()) / 1e9)
		res, err := r.detect(ctx, kvs, b, entry, period, managed)
		if err != nil {
			results[b.Name] = "Error: " + err.Error()
			metrics.DetectorErrors.WithLabelValues(kvs.Namespace, kvs.Name, b.Name).Inc()
			r.Recorder.Eventf(kvs, nil, corev1.EventTypeWarning, "DetectorFailed", "Evaluate",
				"Breaker %s: %v; no pod is ejected on this evaluation", b.Name, err)
			continue
		}
		results[b.Name] = "OK"
		if res.NoData {
			results[b.Name] = "NoData"
		}
		in := breaker.Input{Name: b.Name, DryRun: kvs.Spec.IsDryRun(b) || !selectorActive}
		for _, a := range res.Anomalies {
			in.Anomalies = append(in.Anomalies, breaker.Anomaly{Pod: a.Pod, Reason: a.Reason})
		}
		inputs = append(inputs, in)
	}
	if len(results) == 0 {
		return nil
	}

	pods := obs.pods
	if wantsEjection(inputs) {
		// NOTE: the cache may lag behind this controller's own writes (a previous pass's ejections, or a
		// restart between passes). Counting from a live read is what keeps the floor (SPEC §5.5).
		live, err := r.livePods(ctx, kvs)
		if err != nil {
			return err
		}
		pods = live
	}
	planPods := make([]breaker.Pod, len(pods))
	byName := make(map[string]*corev1.Pod, len(pods))
	for i := range pods {
		p := &pods[i]
		byName[p.Name] = p
		planPods[i] = breaker.Pod{Name: p.Name, Ready: podReady(p), Traffic: p.Labels[kvv1.LabelTraffic]}
	}
	outcomes := breaker.Plan(planPods, breaker.FloorOf(&kvs.Spec, breaker.Count(planPods).ReadyManaged), inputs)

	var patchErr error
	for i := range outcomes {
		o := &outcomes[i]
		var ejected []string
		for _, a := range o.Eject {
			pod := byName[a.Pod]
			if err := r.eject(ctx, pod, o.Name, now); err != nil {
				// Not ejected: the next pass (soon, on the error's backoff) decides again from a fresh read.
				patchErr = errors.Join(patchErr, err)
				continue
			}
			ejected = append(ejected, a.Pod)
			metrics.Ejections.WithLabelValues(kvs.Namespace, kvs.Name, o.Name, "true").Inc()
			recordPodEvent(r.Recorder, kvs, pod, corev1.EventTypeNormal, "Ejected", "Eject",
				fmt.Sprintf("Breaker %s took pod %s out of traffic: %s", o.Name, a.Pod, a.Reason))
		}
		for _, a := range o.WouldEject {
			metrics.Ejections.WithLabelValues(kvs.Namespace, kvs.Name, o.Name, "false").Inc()
			r.Recorder.Eventf(kvs, byName[a.Pod], corev1.EventTypeNormal, "WouldEject", "Evaluate",
				"Breaker %s would take pod %s out of traffic (%s): %s", o.Name, a.Pod, dryRunCause(kvs, o.Name, selectorActive), a.Reason)
		}
		if len(o.Withheld) > 0 {
			metrics.Withheld.WithLabelValues(kvs.Namespace, kvs.Name, o.Name).Add(float64(len(o.Withheld)))
			r.Recorder.Eventf(kvs, nil, corev1.EventTypeWarning, "EjectionWithheld", "Evaluate",
				"Breaker %s kept %d anomalous pods in traffic to hold the floor: %s", o.Name, len(o.Withheld),
				strings.Join(capNames(anomalyNames(o.Withheld)), ", "))
		}
		setBreakerStatus(status, kvv1.BreakerStatus{
			Name:           o.Name,
			LastResult:     results[o.Name],
			AnomalousPods:  capNames(anomalyNames(o.Anomalous)),
			EjectedPods:    capNames(ejected),
			WithheldPods:   capNames(anomalyNames(o.Withheld)),
			WouldEjectPods: capNames(anomalyNames(o.WouldEject)),
		}, now)
	}
	for name, res := range results {
		if strings.HasPrefix(res, "Error: ") {
			setBreakerStatus(status, kvv1.BreakerStatus{Name: name, LastResult: res}, now)
		}
	}
	entry.remember(status, results)
	// The status counts must reflect this pass's writes, not the cache's view before them.
	obs.pods = pods
	metrics.EvaluationDuration.WithLabelValues(kvs.Namespace, kvs.Name).Observe(r.Clock.Since(start).Seconds())
	return patchErr
}

func (r *KubervisorServiceReconciler) detect(ctx context.Context, kvs *kvv1.KubervisorService, b *kvv1.BreakerStrategy,
	entry *scheduleEntry, period time.Duration, managed map[string]struct{}) (detector.Result, error) {
	timeout := min(period, maxQueryTimeout)
	d, ok := entry.detectors[b.Name]
	if !ok {
		var err error
		if d, err = detector.New(b, detector.Options{HTTPClient: r.HTTP, Timeout: timeout}); err != nil {
			return detector.Result{}, fmt.Errorf("configuring the detector: %w", err)
		}
		entry.detectors[b.Name] = d
	}
	qctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	res, err := d.Detect(qctx, detector.Request{Namespace: kvs.Namespace, KubervisorService: kvs.Name, Breaker: b.Name, Pods: managed})
	metrics.QueryDuration.WithLabelValues(kvs.Namespace, kvs.Name, b.Name).Observe(time.Since(start).Seconds())
	return res, err
}

func wantsEjection(inputs []breaker.Input) bool {
	for _, in := range inputs {
		if !in.DryRun && len(in.Anomalies) > 0 {
			return true
		}
	}
	return false
}

// livePods lists the managed pods from the API server, not the cache.
func (r *KubervisorServiceReconciler) livePods(ctx context.Context, kvs *kvv1.KubervisorService) ([]corev1.Pod, error) {
	var list corev1.PodList
	if err := r.APIReader.List(ctx, &list, client.InNamespace(kvs.Namespace), client.MatchingLabels{kvv1.LabelName: kvs.Name}); err != nil {
		return nil, fmt.Errorf("listing pods of KubervisorService %s/%s from the API server: %w", kvs.Namespace, kvs.Name, err)
	}
	return list.Items, nil
}

// eject takes the pod out of traffic (SPEC §5.4). The patch is computed from the live read and carries its
// resourceVersion, so a pod changed meanwhile (say, restored by the activator) is not ejected on stale facts.
func (r *KubervisorServiceReconciler) eject(ctx context.Context, pod *corev1.Pod, breakerName string, now time.Time) error {
	retries := 0
	if n, err := strconv.Atoi(pod.Annotations[kvv1.AnnotationRetryCount]); err == nil && n > 0 {
		retries = n
	}
	return patchPod(ctx, r.Client, pod, func(p *corev1.Pod) {
		setLabel(p, kvv1.LabelTraffic, kvv1.TrafficNo)
		setLabel(p, kvv1.LabelStrategy, breakerName)
		setAnnotation(p, kvv1.AnnotationBreakAt, now.UTC().Format(time.RFC3339Nano))
		setAnnotation(p, kvv1.AnnotationRetryCount, strconv.Itoa(retries+1))
	})
}

// finalize releases every pod of a KubervisorService being deleted, then removes its finalizer.
func (r *KubervisorServiceReconciler) finalize(ctx context.Context, kvs *kvv1.KubervisorService) error {
	if !controllerutil.ContainsFinalizer(kvs, kvv1.Finalizer) {
		return nil
	}
	// A live read: a pod adopted a moment ago and not yet in the cache must not keep our labels.
	pods, err := r.livePods(ctx, kvs)
	if err != nil {
		return err
	}
	paused := 0
	for i := range pods {
		if pods[i].Labels[kvv1.LabelTraffic] == kvv1.TrafficPause {
			paused++
			recordPodEvent(r.Recorder, kvs, &pods[i], corev1.EventTypeNormal, "LeftPaused", "Release",
				fmt.Sprintf("KubervisorService %s is being deleted; pod %s stays paused (kubervisor/traffic=pause) for investigation", kvs.Name, pods[i].Name))
		}
		if err := releasePod(ctx, r.Client, &pods[i]); err != nil {
			return err
		}
	}
	logf.FromContext(ctx).Info("Released pods of deleted KubervisorService", "pods", len(pods), "paused", paused)
	orig := kvs.DeepCopy()
	controllerutil.RemoveFinalizer(kvs, kvv1.Finalizer)
	if err := r.Patch(ctx, kvs, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("removing finalizer of KubervisorService %s/%s: %w", kvs.Namespace, kvs.Name, err)
	}
	r.schedule.forget(client.ObjectKeyFromObject(kvs))
	metrics.Forget(kvs.Namespace, kvs.Name)
	return nil
}

// recordPodEvent records an action on a pod twice, on the KubervisorService and on the pod, so that it shows
// in `kubectl describe` of either (SPEC §7).
func recordPodEvent(rec events.EventRecorder, kvs *kvv1.KubervisorService, pod *corev1.Pod, eventType, reason, action, note string) {
	rec.Eventf(kvs, pod, eventType, reason, action, "%s", note)
	rec.Eventf(pod, kvs, eventType, reason, action, "%s", note)
}

func dryRunCause(kvs *kvv1.KubervisorService, breakerName string, selectorActive bool) string {
	switch {
	case kvs.Spec.DryRun:
		return "spec.dryRun"
	case !selectorActive:
		return "the Service selector lacks kubervisor/traffic: \"yes\""
	default:
		return "breaker " + breakerName + " is in dry run"
	}
}

// setBreakerStatus replaces a breaker's entry; lastEvaluationTime moves only when the entry changed, so
// that a steady state writes nothing.
func setBreakerStatus(status *kvv1.KubervisorServiceStatus, entry kvv1.BreakerStatus, now time.Time) {
	for i := range status.Breakers {
		old := &status.Breakers[i]
		if old.Name != entry.Name {
			continue
		}
		entry.LastEvaluationTime = old.LastEvaluationTime
		if !equality.Semantic.DeepEqual(*old, entry) || entry.LastEvaluationTime == nil {
			t := metav1.NewTime(now)
			entry.LastEvaluationTime = &t
		}
		*old = entry
		return
	}
	t := metav1.NewTime(now)
	entry.LastEvaluationTime = &t
	status.Breakers = append(status.Breakers, entry)
}

// pruneBreakerStatus drops the entries of breakers no longer in the spec and keeps spec order.
func pruneBreakerStatus(kvs *kvv1.KubervisorService, status *kvv1.KubervisorServiceStatus) {
	byName := map[string]kvv1.BreakerStatus{}
	for _, b := range status.Breakers {
		byName[b.Name] = b
	}
	var out []kvv1.BreakerStatus
	for _, b := range kvs.Spec.Breakers {
		if s, ok := byName[b.Name]; ok {
			out = append(out, s)
		}
	}
	status.Breakers = out
}

func anomalyNames(as []breaker.Anomaly) []string {
	out := make([]string, 0, len(as))
	for _, a := range as {
		out = append(out, a.Pod)
	}
	return out
}

func capNames(names []string) []string {
	if len(names) == 0 {
		return nil
	}
	if len(names) > kvv1.MaxPodNamesInStatus {
		return names[:kvv1.MaxPodNamesInStatus]
	}
	return names
}

// SetupWithManager watches KubervisorServices (spec and deletion changes, not our status writes), the
// Services they name, and the pods they own (label, readiness and deletion changes).
func (r *KubervisorServiceReconciler) SetupWithManager(mgr ctrl.Manager, workers int) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("kubervisorservice").
		For(&kvv1.KubervisorService{}, builder.WithPredicates(kvsLifecycleChanged())).
		Watches(&corev1.Service{}, handler.EnqueueRequestsFromMapFunc(r.kvsForService), builder.WithPredicates(serviceChanged())).
		Watches(&corev1.Pod{}, podOwnerHandler{}, builder.WithPredicates(podChanged())).
		WithOptions(controller.Options{MaxConcurrentReconciles: workers}).
		Complete(r)
}

// kvsForService maps a Service to the KubervisorServices naming it, through the spec.service index.
func (r *KubervisorServiceReconciler) kvsForService(ctx context.Context, o client.Object) []reconcile.Request {
	var list kvv1.KubervisorServiceList
	if err := r.List(ctx, &list, client.InNamespace(o.GetNamespace()), client.MatchingFields{IndexServiceName: o.GetName()}); err != nil {
		logf.FromContext(ctx).Error(err, "Listing KubervisorServices for Service", "service", klog.KObj(o))
		return nil
	}
	out := make([]reconcile.Request, 0, len(list.Items))
	for _, k := range list.Items {
		out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&k)})
	}
	return out
}
