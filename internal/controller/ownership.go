package controller

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/podstate"
)

// claim is a KubervisorService that may own pods: it is not being deleted and its Service exists with a
// non-empty selector.
type claim struct {
	kvs *kvv1.KubervisorService
	svc *corev1.Service
	// selector is the Service selector without the kubervisor/traffic key: the pods to supervise.
	selector labels.Selector
}

// claimsOfService returns the claims of the KubervisorServices naming Service svc (none when svc is nil:
// it does not exist), oldest first: when two select the same pods, the oldest keeps them and the other reports a
// Conflict. They are found through IndexServiceName and read without deep copies (read only).
func claimsOfService(ctx context.Context, c client.Reader, svc *corev1.Service) ([]claim, error) {
	if svc == nil {
		return nil, nil
	}
	sel, ok := podstate.ManagedSelector(svc.Spec.Selector)
	if !ok {
		return nil, nil
	}
	return claimsOfSelector(ctx, c, svc, sel)
}

// claimsOfSelector is claimsOfService for a Service whose managed selector sel is already built.
func claimsOfSelector(ctx context.Context, c client.Reader, svc *corev1.Service, sel labels.Selector) ([]claim, error) {
	named, err := naming(ctx, c, svc.Namespace, svc.Name, client.UnsafeDisableDeepCopy)
	if err != nil {
		return nil, err
	}
	kvss := make([]*kvv1.KubervisorService, len(named))
	for i := range named {
		kvss[i] = &named[i]
	}
	return claimsFrom(kvss, svc, sel), nil
}

// claimsFrom returns the claims of the KubervisorServices kvss naming svc, those being deleted apart, oldest
// first.
func claimsFrom(kvss []*kvv1.KubervisorService, svc *corev1.Service, sel labels.Selector) []claim {
	out := make([]claim, 0, len(kvss))
	for _, k := range kvss {
		if k.DeletionTimestamp.IsZero() {
			out = append(out, claim{kvs: k, svc: svc, selector: sel})
		}
	}
	sortClaims(out)
	return out
}

// claimsFor returns the claims that decide a pod's owner. A pod whose owner still selects it keeps it
// (desiredOwner), so its owner's claim alone decides; otherwise the claims that select it do
// (claimsOfPod). Neither reads every KubervisorService of the namespace: a pod event costs the same
// however many KubervisorServices there are. known are claims the caller read already (a Service's, for
// each of its pods): the owner's claim is taken from them when it is there, without reading it again.
func claimsFor(ctx context.Context, c client.Reader, pod *corev1.Pod, known []claim) ([]claim, error) {
	if owner := podstate.OwnerOf(pod); owner != "" {
		for _, k := range known {
			if k.kvs.Name == owner && k.selector.Matches(labels.Set(pod.Labels)) {
				return []claim{k}, nil
			}
		}
		kvs := &kvv1.KubervisorService{}
		err := c.Get(ctx, types.NamespacedName{Namespace: pod.Namespace, Name: owner}, kvs)
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			return nil, fmt.Errorf("getting KubervisorService %s/%s: %w", pod.Namespace, owner, err)
		case kvs.DeletionTimestamp.IsZero():
			svc := &corev1.Service{}
			err := c.Get(ctx, types.NamespacedName{Namespace: pod.Namespace, Name: kvs.Spec.Service}, svc)
			if err != nil && !apierrors.IsNotFound(err) {
				return nil, fmt.Errorf("getting Service %s/%s: %w", pod.Namespace, kvs.Spec.Service, err)
			}
			if err == nil {
				if sel, ok := podstate.ManagedSelector(svc.Spec.Selector); ok && sel.Matches(labels.Set(pod.Labels)) {
					return []claim{{kvs: kvs, svc: svc, selector: sel}}, nil
				}
			}
		}
	}
	return claimsOfPod(ctx, c, pod)
}

// claimsOfPod returns the claims whose selector selects the pod, oldest first: desiredOwner looks at no
// other, so for a pod it decides as the claims of the whole namespace would. The Services are found
// through IndexSelector, one lookup per label of the pod, and their KubervisorServices through
// IndexServiceName; nothing is deep-copied (read only).
func claimsOfPod(ctx context.Context, c client.Reader, pod *corev1.Pod) ([]claim, error) {
	podLabels := labels.Set(pod.Labels)
	seen := map[string]bool{}
	var out []claim
	for k, v := range pod.Labels {
		var svcs corev1.ServiceList
		if err := c.List(ctx, &svcs, client.InNamespace(pod.Namespace), client.MatchingFields{IndexSelector: k + "=" + v},
			client.UnsafeDisableDeepCopy); err != nil {
			return nil, fmt.Errorf("listing Services in %s: %w", pod.Namespace, err)
		}
		for i := range svcs.Items {
			svc := &svcs.Items[i]
			if seen[svc.Name] {
				continue
			}
			seen[svc.Name] = true
			sel, ok := podstate.ManagedSelector(svc.Spec.Selector)
			if !ok || !sel.Matches(podLabels) {
				continue
			}
			cs, err := claimsOfSelector(ctx, c, svc, sel)
			if err != nil {
				return nil, err
			}
			out = append(out, cs...)
		}
	}
	sortClaims(out)
	return out, nil
}

// selectedPods lists from the cache the pods a Service selector selects, kubervisor/traffic aside (none
// when it selects nothing to supervise): through IndexLabel on one of its pairs, then the whole selector,
// so the cost follows the pods carrying that label, not those of the namespace. Deep copies: the Service
// reconciler writes them (a pass reads its own through cachedSelected, without copies).
func selectedPods(ctx context.Context, c client.Reader, namespace string, selector map[string]string) ([]corev1.Pod, error) {
	sel, ok := podstate.ManagedSelector(selector)
	if !ok {
		return nil, nil
	}
	var list corev1.PodList
	if err := c.List(ctx, &list, client.InNamespace(namespace), client.MatchingFields{IndexLabel: podstate.ManagedPairs(selector)[0]},
		client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return nil, fmt.Errorf("listing the pods of selector %s in %s: %w", sel, namespace, err)
	}
	return list.Items, nil
}

func sortClaims(cs []claim) {
	slices.SortStableFunc(cs, func(x, y claim) int {
		a, b := x.kvs, y.kvs
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
}

// desiredOwner returns the KubervisorService that should own the pod, or "" for none. The current owner
// keeps the pod while it still selects it (ownership never flaps because an older KubervisorService
// appears); otherwise the oldest claim that selects it wins.
func desiredOwner(pod *corev1.Pod, cs []claim) string {
	if !pod.DeletionTimestamp.IsZero() {
		// A terminating pod keeps whatever it has; it is going away.
		return podstate.OwnerOf(pod)
	}
	podLabels := labels.Set(pod.Labels)
	current := podstate.OwnerOf(pod)
	first := ""
	for _, c := range cs {
		if !c.selector.Matches(podLabels) {
			continue
		}
		if c.kvs.Name == current {
			return current
		}
		if first == "" {
			first = c.kvs.Name
		}
	}
	return first
}

// syncPodOwnership makes the pod's ownership labels match desiredOwner: it adopts the pod (podstate.Adopt:
// an existing no or pause is never overwritten) or releases it. It is the only code that adopts pods; the
// Service and Pod reconcilers both call it.
//
// A failed adoption is remembered in failures (cleared by the next success), so that the KubervisorService
// waiting for the pod can say why in its Ready condition.
func syncPodOwnership(ctx context.Context, c client.Client, pod *corev1.Pod, cs []claim, failures *adoptionFailures) error {
	key := client.ObjectKeyFromObject(pod)
	err := syncOwner(ctx, c, pod, cs)
	failures.record(key, err)
	return err
}

func syncOwner(ctx context.Context, c client.Client, pod *corev1.Pod, cs []claim) error {
	owner := desiredOwner(pod, cs)
	state := podstate.Of(pod, time.Time{})
	switch {
	case owner == "" && state.Owner == "":
		return nil
	case owner == "":
		return releasePod(ctx, c, pod)
	case owner == state.Owner && state.Traffic != "":
		return nil
	}
	if state.Owner != "" && owner != state.Owner {
		// Moving to another KubervisorService: the previous owner's schedule does not carry over.
		if err := releasePod(ctx, c, pod); err != nil {
			return err
		}
		state = podstate.Of(pod, time.Time{})
	}
	if err := patchPod(ctx, c, pod, podstate.Adopt(state, owner)); err != nil {
		return err
	}
	logf.FromContext(ctx).Info("Adopted pod", "Pod", klog.KObj(pod), "kubervisorService", owner)
	return nil
}

// adoptionFailures remembers, per pod, why its last adoption or release failed (a webhook or an admission
// policy refusing the patch, say). The Service and Pod reconcilers adopt; the KubervisorService reconciler,
// which waits for every selected pod to be adopted before evaluating, reports these in Ready instead of
// leaving Ready=True from an older pass. One instance is shared by the reconcilers of a manager (Options);
// a nil one records nothing.
type adoptionFailures struct {
	mu sync.Mutex
	m  map[types.NamespacedName]string
}

func newAdoptionFailures() *adoptionFailures {
	return &adoptionFailures{m: map[types.NamespacedName]string{}}
}

// record remembers err for the pod, or forgets the pod's failure when err is nil. A lost race (conflict)
// is retried at once and is no failure to report.
func (a *adoptionFailures) record(pod types.NamespacedName, err error) {
	if a == nil || apierrors.IsConflict(err) {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err == nil {
		delete(a.m, pod)
		return
	}
	a.m[pod] = err.Error()
}

// of returns "pod: error" for each of the named pods of the namespace whose adoption failed, in the order
// of names.
func (a *adoptionFailures) of(namespace string, names []string) []string {
	if a == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for _, n := range names {
		if msg, ok := a.m[types.NamespacedName{Namespace: namespace, Name: n}]; ok {
			out = append(out, n+": "+msg)
		}
	}
	return out
}
