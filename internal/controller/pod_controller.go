package controller

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	"k8s.io/utils/keymutex"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/podstate"
)

// PodReconciler adopts new pods of supervised Services and runs the activator for ejected pods.
type PodReconciler struct {
	client.Client
	// APIReader counts paused pods live before a pause (maxPauseCount must hold against a stale cache).
	APIReader client.Reader
	Recorder  events.EventRecorder
	Clock     clock.Clock
	// Evictor kills pods through the Eviction API.
	Evictor Evictor

	// pauses serialises pause decisions per KubervisorService (maxPauseCount).
	pauses    keymutex.KeyMutex
	adoptions *adoptionFailures
	shard     *shard
	orphans   *orphanSweep
}

// Reconcile handles one pod.
//
//  1. Sync its ownership with the namespace's claims (adopt, keep, or release).
//  2. If it is ejected, run the activator: wait, restore, pause or evict.
func (r *PodReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	pod := &corev1.Pod{}
	if err := r.Get(ctx, req.NamespacedName, pod); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("getting pod %s: %w", req, err)
	}
	if theirs, err := r.shard.othersPod(ctx, r, pod); err != nil || theirs {
		return ctrl.Result{}, err
	}
	cs, err := claimsFor(ctx, r, pod, nil)
	if err != nil {
		return ctrl.Result{}, err
	}
	if err := r.noteOrphan(ctx, pod); err != nil {
		return ctrl.Result{}, err
	}
	if err := syncPodOwnership(ctx, r, pod, cs, r.adoptions); err != nil {
		return requeueOnConflict(ctx, err)
	}
	if err := r.refuseUnsupervised(ctx, pod); err != nil {
		return requeueOnConflict(ctx, err)
	}
	res, err := r.activate(ctx, pod, cs)
	if err != nil {
		return requeueOnConflict(ctx, err)
	}
	gate, err := r.gateModeOf(ctx, pod, cs)
	if err != nil {
		return ctrl.Result{}, err
	}
	if err := syncGate(ctx, r.Client, pod, gate, r.Clock.Now()); err != nil {
		return requeueOnConflict(ctx, err)
	}
	return res, nil
}

// gateModeOf reports whether the pod's owner controls traffic through the readiness gate. A pod whose
// owner is gone or being deleted is in no mode: its gate goes back to True (SPEC §11). The owner comes from
// the claims already read for the pod when they hold it (claims are never being deleted).
func (r *PodReconciler) gateModeOf(ctx context.Context, pod *corev1.Pod, cs []claim) (bool, error) {
	owner := podstate.OwnerOf(pod)
	if owner == "" || !podstate.HasGate(pod) {
		return false, nil
	}
	for _, c := range cs {
		if c.kvs.Name == owner {
			return c.kvs.Spec.GateMode(), nil
		}
	}
	kvs := &kvv1.KubervisorService{}
	switch err := r.Get(ctx, client.ObjectKey{Namespace: pod.Namespace, Name: owner}, kvs); {
	case apierrors.IsNotFound(err):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("getting KubervisorService %s/%s: %w", pod.Namespace, owner, err)
	}
	return kvs.DeletionTimestamp.IsZero() && kvs.Spec.GateMode(), nil
}

// refuseUnsupervised answers a manual request on a pod no KubervisorService supervises (SPEC §10): refused,
// with a Warning event on the pod. Requests on supervised pods are the KubervisorService reconciler's.
func (r *PodReconciler) refuseUnsupervised(ctx context.Context, pod *corev1.Pod) error {
	if podstate.OwnerOf(pod) != "" {
		return nil
	}
	rq, ok, _ := podstate.RequestOf(pod)
	if !ok {
		return nil
	}
	why := "no KubervisorService supervises this pod"
	if err := patchPod(ctx, r.Client, pod, podstate.Refused(rq.At, why)); err != nil {
		return err
	}
	r.Recorder.Eventf(pod, nil, corev1.EventTypeWarning, kvv1.EventManualRefused, actionOf(rq),
		"Refused the request of %s to %s pod %s: %s", orSomeone(rq.By), rq.Action, pod.Name, why)
	return nil
}

// noteOrphan records an event on a pod labelled for a KubervisorService that does not exist (its finalizer
// removed by hand, the CRD re-created): syncPodOwnership then releases it (SPEC §6, orphans), and the event
// says why its labels went.
func (r *PodReconciler) noteOrphan(ctx context.Context, pod *corev1.Pod) error {
	state := podstate.Of(pod, time.Time{})
	if state.Owner == "" {
		return nil
	}
	err := r.Get(ctx, client.ObjectKey{Namespace: pod.Namespace, Name: state.Owner}, &kvv1.KubervisorService{})
	switch {
	case apierrors.IsNotFound(err):
		note := fmt.Sprintf("Pod %s is labelled for KubervisorService %s, which does not exist: released", pod.Name, state.Owner)
		if state.Traffic == kvv1.TrafficNo {
			note += " and put back in traffic"
		}
		r.Recorder.Eventf(pod, nil, corev1.EventTypeNormal, kvv1.EventOrphanReleased, kvv1.ActionRelease, "%s", note)
		return nil
	case err != nil:
		return fmt.Errorf("getting KubervisorService %s/%s of pod %s: %w", pod.Namespace, state.Owner, pod.Name, err)
	}
	return nil
}

// SetupWithManager watches pods, passing only creations and the updates podChanged lets through. A
// KubervisorService spec change (dry run, activator) and a Service selector change (activation) enqueue the
// ejected pods they concern, since those decide whether and when the activator acts.
func (r *PodReconciler) SetupWithManager(mgr ctrl.Manager, workers int) error {
	clk, ok := r.Clock.(clock.WithTicker)
	if !ok {
		clk = clock.RealClock{}
	}
	r.orphans = newOrphanSweep(mgr.GetClient(), clk)
	if err := mgr.Add(r.orphans); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("pod").
		WatchesRawSource(source.Kind(mgr.GetCache(), &corev1.Pod{}, &handler.TypedEnqueueRequestForObject[*corev1.Pod]{}, podChanged(),
			predicate.TypedFuncs[*corev1.Pod]{DeleteFunc: func(event.TypedDeleteEvent[*corev1.Pod]) bool { return false }})).
		Watches(&kvv1.KubervisorService{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			return r.ejectedPods(ctx, o.GetNamespace(), o.GetName())
		}), builder.WithPredicates(kvsLifecycleChanged())).
		WatchesRawSource(source.Kind(mgr.GetCache(), &corev1.Service{}, handler.TypedEnqueueRequestsFromMapFunc(
			func(ctx context.Context, svc *corev1.Service) []reconcile.Request {
				named, err := naming(ctx, r.Client, svc.Namespace, svc.Name)
				if err != nil {
					logf.FromContext(ctx).Error(err, "Listing KubervisorServices for Service", "Service", klog.KObj(svc))
					return nil
				}
				var out []reconcile.Request
				for _, k := range named {
					out = append(out, r.ejectedPods(ctx, k.Namespace, k.Name)...)
				}
				return out
			}), serviceChanged())).
		// The resync of orphans (orphans.go): pods labelled for a KubervisorService that does not exist.
		WatchesRawSource(source.Channel(r.orphans.found, &handler.TypedEnqueueRequestForObject[*corev1.Pod]{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: workers}).
		Complete(r)
}

// ejectedPods lists, from the cache, the pods of a KubervisorService that are out of traffic.
func (r *PodReconciler) ejectedPods(ctx context.Context, namespace, name string) []reconcile.Request {
	var list corev1.PodList
	if err := r.List(ctx, &list, client.InNamespace(namespace), client.MatchingFields{IndexOwner: name}); err != nil {
		logf.FromContext(ctx).Error(err, "Listing pods of KubervisorService", "KubervisorService", klog.KRef(namespace, name))
		return nil
	}
	var out []reconcile.Request
	for i := range list.Items {
		if podstate.TrafficOf(&list.Items[i]) == kvv1.TrafficNo {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
		}
	}
	return out
}
