package controller

import (
	"context"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
)

// kvsLifecycleChanged passes the KubervisorService events that change what its pods should be: creation,
// deletion, a new spec generation, and the start of deletion. Status writes (ours) do not pass.
func kvsLifecycleChanged() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			return e.ObjectOld.GetGeneration() != e.ObjectNew.GetGeneration() ||
				e.ObjectOld.GetDeletionTimestamp().IsZero() != e.ObjectNew.GetDeletionTimestamp().IsZero() ||
				!slices.Equal(e.ObjectOld.GetFinalizers(), e.ObjectNew.GetFinalizers())
		},
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
}

// podChanged passes the pod updates a Kubervisor reconciler acts on: any label change (selectors and
// kubervisor/* labels), a change of Kubervisor's annotations, readiness, and the start of deletion.
func podChanged() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			o, n := e.ObjectOld.(*corev1.Pod), e.ObjectNew.(*corev1.Pod)
			return !maps.Equal(o.Labels, n.Labels) ||
				kubervisorAnnotationsChanged(o.Annotations, n.Annotations) ||
				podReady(o) != podReady(n) ||
				o.DeletionTimestamp.IsZero() != n.DeletionTimestamp.IsZero()
		},
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
}

func kubervisorAnnotationsChanged(a, b map[string]string) bool {
	for k, v := range a {
		if strings.HasPrefix(k, "kubervisor/") && b[k] != v {
			return true
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok && strings.HasPrefix(k, "kubervisor/") {
			return true
		}
	}
	return false
}

// podReady reports whether the pod's Ready condition is True.
func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// compareNames orders object keys by namespace, then name.
func compareNames(a, b types.NamespacedName) int {
	if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
		return c
	}
	return strings.Compare(a.Name, b.Name)
}

// serviceChanged passes Service creations, deletions and selector changes: nothing else of a Service
// matters to Kubervisor.
func serviceChanged() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			return !maps.Equal(e.ObjectOld.(*corev1.Service).Spec.Selector, e.ObjectNew.(*corev1.Service).Spec.Selector)
		},
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
}

// podOwnerHandler enqueues the KubervisorService named by a pod's kubervisor/name label, before and after an
// update, so that both the old and the new owner recount when a pod changes hands.
type podOwnerHandler struct{}

var _ handler.EventHandler = podOwnerHandler{}

func (podOwnerHandler) enqueue(o client.Object, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	if name, ok := o.GetLabels()[kvv1.LabelName]; ok {
		q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}})
	}
}

// Create enqueues the owner of a new pod.
func (h podOwnerHandler) Create(_ context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	h.enqueue(e.Object, q)
}

// Update enqueues the owners before and after.
func (h podOwnerHandler) Update(_ context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	h.enqueue(e.ObjectOld, q)
	h.enqueue(e.ObjectNew, q)
}

// Delete enqueues the owner of a deleted pod.
func (h podOwnerHandler) Delete(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	h.enqueue(e.Object, q)
}

// Generic does nothing: there are no generic pod events.
func (podOwnerHandler) Generic(context.Context, event.GenericEvent, workqueue.TypedRateLimitingInterface[reconcile.Request]) {
}
