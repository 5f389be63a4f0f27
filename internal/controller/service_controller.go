package controller

import (
	"context"
	"fmt"
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
)

// ServiceReconciler keeps pod ownership in step with a supervised Service: it adopts the pods its selector
// (minus kubervisor/traffic) selects and releases those that left it, or all of them when the Service goes.
type ServiceReconciler struct {
	client.Client
	adoptions *adoptionFailures
	shard     *shard
}

// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;patch

// Reconcile syncs the ownership of every pod the Service selects or its KubervisorServices own.
//
//  1. Find the KubervisorServices naming the Service; none means nothing to do.
//  2. Sync every pod that the Service selects or that those KubervisorServices own, each with the claims
//     that decide it (claimsFor: its owner's, or those selecting it).
func (r *ServiceReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	named, err := naming(ctx, r.Client, req.Namespace, req.Name)
	if err != nil {
		return ctrl.Result{}, err
	}
	if len(named) == 0 {
		return ctrl.Result{}, nil
	}
	pods := map[types.NamespacedName]*corev1.Pod{}
	// own are the claims on this Service's pods, read once for all of them (claimsFor takes the owner's
	// claim from them).
	var own []claim
	svc := &corev1.Service{}
	switch err := r.Get(ctx, req.NamespacedName, svc); {
	case apierrors.IsNotFound(err):
	case err != nil:
		return ctrl.Result{}, fmt.Errorf("getting Service %s: %w", req, err)
	default:
		selected, err := selectedPods(ctx, r, req.Namespace, svc.Spec.Selector)
		if err != nil {
			return ctrl.Result{}, err
		}
		addPods(pods, selected)
		if own, err = claimsOfService(ctx, r, svc); err != nil {
			return ctrl.Result{}, err
		}
	}
	for i := range named {
		owned, err := ownedPods(ctx, r, &named[i])
		if err != nil {
			return ctrl.Result{}, err
		}
		addPods(pods, owned)
	}
	for _, key := range slices.SortedFunc(maps.Keys(pods), compareNames) {
		if theirs, err := r.shard.othersPod(ctx, r, pods[key]); err != nil || theirs {
			if err != nil {
				return ctrl.Result{}, err
			}
			continue
		}
		cs, err := claimsFor(ctx, r, pods[key], own)
		if err != nil {
			return ctrl.Result{}, err
		}
		if err := syncPodOwnership(ctx, r, pods[key], cs, r.adoptions); err != nil {
			return requeueOnConflict(ctx, err)
		}
	}
	logf.FromContext(ctx).V(1).Info("Synced pod ownership for Service", "pods", len(pods))
	return ctrl.Result{}, nil
}

func addPods(into map[types.NamespacedName]*corev1.Pod, pods []corev1.Pod) {
	for i := range pods {
		into[client.ObjectKeyFromObject(&pods[i])] = &pods[i]
	}
}

// SetupWithManager watches Services (selector changes and deletion only) and KubervisorServices (which
// enqueue the Service they name, so that adoption starts when one is created and moves when one goes).
func (r *ServiceReconciler) SetupWithManager(mgr ctrl.Manager, workers int) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("service").
		WatchesRawSource(source.Kind(mgr.GetCache(), &corev1.Service{}, &handler.TypedEnqueueRequestForObject[*corev1.Service]{}, serviceChanged())).
		Watches(&kvv1.KubervisorService{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: o.(*kvv1.KubervisorService).Spec.Service}}}
		}), builder.WithPredicates(kvsLifecycleChanged())).
		WithOptions(controller.Options{MaxConcurrentReconciles: workers}).
		Complete(r)
}
