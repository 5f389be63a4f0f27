package controller

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/podstate"
)

// The breaker pass reads its pods, and the KubervisorServices naming its Service, as pointers to the
// cache's own objects.
//
// NOTE: a cache List copies each pod struct into the list (meta.SetList), even with
// client.UnsafeDisableDeepCopy: at 1,000 KubervisorServices that was half of the bytes a pass allocated
// (docs/scaling.md). The pod informer's indexer hands out the stored pointers instead. They are read only:
// nothing may change them (every write of a pass goes to a pod read live). The indexes are the ones
// SetupIndexes registers with the manager (controller-runtime names them "field:<name>" and keys them
// "<namespace>/<value>"; TestPodStoreAgreesWithTheCacheList fails if that changes).

// storeOf returns the indexer of c's informer of obj's kind, or nil when c has none to give (a cache of
// several namespaces, the namespaced install: the pass lists instead).
func storeOf(ctx context.Context, c cache.Cache, obj client.Object) (toolscache.Indexer, error) {
	inf, err := c.GetInformer(ctx, obj)
	if err != nil {
		return nil, fmt.Errorf("getting the %T informer: %w", obj, err)
	}
	sii, ok := inf.(toolscache.SharedIndexInformer)
	if !ok {
		return nil, nil
	}
	return sii.GetIndexer(), nil
}

// cachedPods returns, read only, the pods of namespace whose index (IndexOwner, IndexLabel) holds value:
// from the pod store when there is one, else from a List of the reconciler's client without deep copies.
func (r *KubervisorServiceReconciler) cachedPods(ctx context.Context, namespace, index, value string) ([]*corev1.Pod, error) {
	if r.podStore != nil {
		objs, err := r.podStore.ByIndex("field:"+index, namespace+"/"+value)
		if err != nil {
			return nil, err
		}
		out := make([]*corev1.Pod, 0, len(objs))
		for _, o := range objs {
			if p, ok := o.(*corev1.Pod); ok {
				out = append(out, p)
			}
		}
		return out, nil
	}
	var list corev1.PodList
	if err := r.List(ctx, &list, client.InNamespace(namespace), client.MatchingFields{index: value}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	return pointersTo(list.Items), nil
}

// cachedSelected returns, read only, the pods a Service selector selects, kubervisor/traffic aside (none when
// it selects nothing to supervise): those of IndexLabel on one of its pairs that match the whole selector.
func (r *KubervisorServiceReconciler) cachedSelected(ctx context.Context, namespace string, selector map[string]string) ([]*corev1.Pod, error) {
	sel, ok := podstate.ManagedSelector(selector)
	if !ok {
		return nil, nil
	}
	pods, err := r.cachedPods(ctx, namespace, IndexLabel, podstate.ManagedPairs(selector)[0])
	if err != nil {
		return nil, fmt.Errorf("listing the pods of selector %s in %s: %w", sel, namespace, err)
	}
	out := pods[:0]
	for _, p := range pods {
		if sel.Matches(labels.Set(p.Labels)) {
			out = append(out, p)
		}
	}
	return out, nil
}

// cachedClaims is claimsOfService for a pass, read only: the KubervisorServices are the informer's own
// objects, from its indexer when there is one (a List copies each of them).
func (r *KubervisorServiceReconciler) cachedClaims(ctx context.Context, svc *corev1.Service) ([]claim, error) {
	if r.kvsStore == nil || svc == nil {
		return claimsOfService(ctx, r, svc)
	}
	sel, ok := podstate.ManagedSelector(svc.Spec.Selector)
	if !ok {
		return nil, nil
	}
	objs, err := r.kvsStore.ByIndex("field:"+IndexServiceName, svc.Namespace+"/"+svc.Name)
	if err != nil {
		return nil, fmt.Errorf("listing the KubervisorServices of Service %s/%s: %w", svc.Namespace, svc.Name, err)
	}
	kvss := make([]*kvv1.KubervisorService, 0, len(objs))
	for _, o := range objs {
		if k, ok := o.(*kvv1.KubervisorService); ok {
			kvss = append(kvss, k)
		}
	}
	return claimsFrom(kvss, svc, sel), nil
}

// pointersTo returns pointers to the elements of pods.
func pointersTo(pods []corev1.Pod) []*corev1.Pod {
	out := make([]*corev1.Pod, len(pods))
	for i := range pods {
		out[i] = &pods[i]
	}
	return out
}
