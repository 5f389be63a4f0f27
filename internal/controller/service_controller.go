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

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
)

// ServiceReconciler keeps pod ownership in step with a supervised Service: it adopts the pods its selector
// (minus kubervisor/traffic) selects and releases those that left it, or all of them when the Service goes.
type ServiceReconciler struct {
	client.Client
}

// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;patch

// Reconcile syncs the ownership of every pod the Service selects or its KubervisorServices own.
//
//  1. Find the KubervisorServices naming the Service; none means nothing to do.
//  2. Collect the namespace's claims (who may own what).
//  3. Sync every pod that the Service selects or that those KubervisorServices own.
func (r *ServiceReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var named kvv1.KubervisorServiceList
	if err := r.List(ctx, &named, client.InNamespace(req.Namespace), client.MatchingFields{IndexServiceName: req.Name}); err != nil {
		return ctrl.Result{}, fmt.Errorf("listing KubervisorServices for Service %s: %w", req, err)
	}
	if len(named.Items) == 0 {
		return ctrl.Result{}, nil
	}
	cs, err := claims(ctx, r, req.Namespace)
	if err != nil {
		return ctrl.Result{}, err
	}
	pods := map[types.NamespacedName]*corev1.Pod{}
	for _, c := range cs {
		if c.svc.Name != req.Name {
			continue
		}
		var selected corev1.PodList
		if err := r.List(ctx, &selected, client.InNamespace(req.Namespace), client.MatchingLabelsSelector{Selector: c.selector}); err != nil {
			return ctrl.Result{}, fmt.Errorf("listing pods of Service %s: %w", req, err)
		}
		addPods(pods, selected.Items)
		break
	}
	for i := range named.Items {
		owned, err := ownedPods(ctx, r, &named.Items[i])
		if err != nil {
			return ctrl.Result{}, err
		}
		addPods(pods, owned)
	}
	for _, key := range slices.SortedFunc(maps.Keys(pods), compareNames) {
		if err := syncPodOwnership(ctx, r, pods[key], cs); err != nil {
			return requeueOnConflict(ctx, err)
		}
	}
	logf.FromContext(ctx).V(1).Info("Synced pod ownership for Service", "pods", len(pods))
	return ctrl.Result{}, nil
}

// requeueOnConflict turns an optimistic-lock conflict into a quiet, short requeue: another reconciler (the
// Pod reconciler adopting the same new pod, the breaker, the activator) wrote the pod first, and the next
// pass decides again from what it wrote. Any other error is returned.
func requeueOnConflict(ctx context.Context, err error) (ctrl.Result, error) {
	if apierrors.IsConflict(err) {
		logf.FromContext(ctx).V(1).Info("Pod changed meanwhile; retrying", "error", err.Error())
		return ctrl.Result{RequeueAfter: conflictRetry}, nil
	}
	return ctrl.Result{}, err
}

// ownedPods lists, from the cache, the pods labelled with the KubervisorService's name.
func ownedPods(ctx context.Context, c client.Reader, kvs *kvv1.KubervisorService) ([]corev1.Pod, error) {
	var list corev1.PodList
	if err := c.List(ctx, &list, client.InNamespace(kvs.Namespace), client.MatchingFields{IndexOwner: kvs.Name}); err != nil {
		return nil, fmt.Errorf("listing pods of KubervisorService %s/%s: %w", kvs.Namespace, kvs.Name, err)
	}
	return list.Items, nil
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
		For(&corev1.Service{}, builder.WithPredicates(serviceChanged())).
		Watches(&kvv1.KubervisorService{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: o.(*kvv1.KubervisorService).Spec.Service}}}
		}), builder.WithPredicates(kvsLifecycleChanged())).
		WithOptions(controller.Options{MaxConcurrentReconciles: workers}).
		Complete(r)
}
