package controller

import (
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"github.com/kubervisor/kubervisor/internal/podstate"
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
func podChanged() predicate.TypedPredicate[*corev1.Pod] {
	return predicate.TypedFuncs[*corev1.Pod]{
		UpdateFunc: func(e event.TypedUpdateEvent[*corev1.Pod]) bool {
			o, n := e.ObjectOld, e.ObjectNew
			return !maps.Equal(o.Labels, n.Labels) ||
				kubervisorAnnotationsChanged(o.Annotations, n.Annotations) ||
				podstate.Ready(o) != podstate.Ready(n) ||
				podstate.ContainersReady(o) != podstate.ContainersReady(n) ||
				o.DeletionTimestamp.IsZero() != n.DeletionTimestamp.IsZero()
		},
		GenericFunc: func(event.TypedGenericEvent[*corev1.Pod]) bool { return false },
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

// compareNames orders object keys by namespace, then name.
func compareNames(a, b types.NamespacedName) int {
	if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
		return c
	}
	return strings.Compare(a.Name, b.Name)
}

// serviceChanged passes Service creations, deletions and selector changes: nothing else of a Service
// matters to Kubervisor.
func serviceChanged() predicate.TypedPredicate[*corev1.Service] {
	return predicate.TypedFuncs[*corev1.Service]{
		UpdateFunc: func(e event.TypedUpdateEvent[*corev1.Service]) bool {
			return !maps.Equal(e.ObjectOld.Spec.Selector, e.ObjectNew.Spec.Selector)
		},
		GenericFunc: func(event.TypedGenericEvent[*corev1.Service]) bool { return false },
	}
}
