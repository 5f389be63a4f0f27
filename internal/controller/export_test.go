package controller

import (
	"context"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
)

// PodReads reads the pods of namespace whose index holds value, and those selector selects, the two ways a
// pass can (podstore.go): through c's pod store (hasStore false when c has none) and through a List of c.
// Names, sorted. For the envtest suite (package controller_test).
func PodReads(ctx context.Context, c cache.Cache, namespace, index, value string, selector map[string]string) (
	storeIndexed, listIndexed, storeSelected, listSelected []string, hasStore bool, err error) {
	store, err := storeOf(ctx, c, &corev1.Pod{})
	if err != nil {
		return
	}
	names := func(pods []*corev1.Pod) []string {
		out := make([]string, 0, len(pods))
		for _, p := range pods {
			out = append(out, p.Name)
		}
		slices.Sort(out)
		return out
	}
	read := func(r *KubervisorServiceReconciler) (indexed, selected []string, err error) {
		pods, err := r.cachedPods(ctx, namespace, index, value)
		if err != nil {
			return nil, nil, err
		}
		sel, err := r.cachedSelected(ctx, namespace, selector)
		return names(pods), names(sel), err
	}
	if store != nil {
		if storeIndexed, storeSelected, err = read(&KubervisorServiceReconciler{podStore: store}); err != nil {
			return
		}
	}
	listIndexed, listSelected, err = read(&KubervisorServiceReconciler{Client: listsFrom{r: c}})
	return storeIndexed, listIndexed, storeSelected, listSelected, store != nil, err
}

// ClaimReads reads the KubervisorServices naming svc, oldest first, the two ways a pass can (podstore.go):
// through c's KubervisorService store (hasStore false when c has none) and through a List of c.
func ClaimReads(ctx context.Context, c cache.Cache, svc *corev1.Service) (fromStore, fromList []string, hasStore bool, err error) {
	store, err := storeOf(ctx, c, &kvv1.KubervisorService{})
	if err != nil {
		return
	}
	read := func(r *KubervisorServiceReconciler) ([]string, error) {
		cs, err := r.cachedClaims(ctx, svc)
		out := make([]string, 0, len(cs))
		for _, cl := range cs {
			out = append(out, cl.kvs.Name)
		}
		return out, err
	}
	if store != nil {
		if fromStore, err = read(&KubervisorServiceReconciler{kvsStore: store}); err != nil {
			return
		}
	}
	fromList, err = read(&KubervisorServiceReconciler{Client: listsFrom{r: c}})
	return fromStore, fromList, store != nil, err
}

// listsFrom is a client whose List reads r (the only call a pass's pod reads make).
type listsFrom struct {
	client.Client
	r client.Reader
}

func (l listsFrom) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	return l.r.List(ctx, list, opts...)
}
