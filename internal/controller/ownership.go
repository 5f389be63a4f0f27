package controller

import (
	"context"
	"fmt"
	"maps"
	"sort"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
)

// claim is a KubervisorService that may own pods: it is not being deleted and its Service exists with a
// non-empty selector.
type claim struct {
	kvs *kvv1.KubervisorService
	svc *corev1.Service
	// selector is the Service selector without the kubervisor/traffic key: the pods to supervise.
	selector labels.Selector
}

// managedSelector returns the selector of the pods a Service's KubervisorService supervises: the Service
// selector minus kubervisor/traffic. A Service without a selector selects nothing (its endpoints are managed
// by hand), so ok is false.
func managedSelector(svc *corev1.Service) (sel labels.Selector, ok bool) {
	if svc == nil {
		return labels.Nothing(), false
	}
	set := labels.Set{}
	for k, v := range svc.Spec.Selector {
		if k != kvv1.LabelTraffic {
			set[k] = v
		}
	}
	if len(set) == 0 {
		return labels.Nothing(), false
	}
	return labels.SelectorFromValidatedSet(set), true
}

// trafficControlled reports whether the Service selector holds kubervisor/traffic: "yes", the switch that
// makes Kubervisor's labels effective.
func trafficControlled(svc *corev1.Service) bool {
	return svc != nil && svc.Spec.Selector[kvv1.LabelTraffic] == kvv1.TrafficYes
}

// claims lists the KubervisorServices of a namespace that may own pods, oldest first: when two select the
// same pod, the oldest keeps it and the other reports a Conflict.
func claims(ctx context.Context, c client.Reader, namespace string) ([]claim, error) {
	var list kvv1.KubervisorServiceList
	if err := c.List(ctx, &list, client.InNamespace(namespace)); err != nil {
		return nil, fmt.Errorf("listing KubervisorServices in %s: %w", namespace, err)
	}
	out := make([]claim, 0, len(list.Items))
	for i := range list.Items {
		kvs := &list.Items[i]
		if !kvs.DeletionTimestamp.IsZero() {
			continue
		}
		svc := &corev1.Service{}
		if err := c.Get(ctx, types.NamespacedName{Namespace: namespace, Name: kvs.Spec.Service}, svc); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return nil, fmt.Errorf("getting Service %s/%s: %w", namespace, kvs.Spec.Service, err)
		}
		sel, ok := managedSelector(svc)
		if !ok {
			continue
		}
		out = append(out, claim{kvs: kvs, svc: svc, selector: sel})
	}
	sortClaims(out)
	return out, nil
}

func sortClaims(cs []claim) {
	sort.SliceStable(cs, func(i, j int) bool {
		a, b := cs[i].kvs, cs[j].kvs
		if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
			return a.CreationTimestamp.Before(&b.CreationTimestamp)
		}
		return a.Name < b.Name
	})
}

// desiredOwner returns the KubervisorService that should own the pod, or "" for none. The current owner
// keeps the pod while it still selects it (ownership never flaps because an older KubervisorService
// appears); otherwise the oldest claim that selects it wins.
func desiredOwner(pod *corev1.Pod, cs []claim) string {
	if !pod.DeletionTimestamp.IsZero() {
		// A terminating pod keeps whatever it has; it is going away.
		return pod.Labels[kvv1.LabelName]
	}
	podLabels := labels.Set(pod.Labels)
	current := pod.Labels[kvv1.LabelName]
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

// syncPodOwnership makes the pod's ownership labels match desiredOwner: it adopts the pod (kubervisor/name,
// and kubervisor/traffic=yes only when the label is missing: an existing no or pause is never overwritten)
// or releases it. It is the only code that adopts pods; the Service and Pod reconcilers both call it.
func syncPodOwnership(ctx context.Context, c client.Client, pod *corev1.Pod, cs []claim) error {
	owner := desiredOwner(pod, cs)
	current, labelled := pod.Labels[kvv1.LabelName]
	switch {
	case owner == "" && !labelled:
		return nil
	case owner == "":
		return releasePod(ctx, c, pod)
	case owner == current:
		if _, ok := pod.Labels[kvv1.LabelTraffic]; ok {
			return nil
		}
	}
	if labelled && owner != current {
		// Moving to another KubervisorService: the previous owner's schedule does not carry over.
		if err := releasePod(ctx, c, pod); err != nil {
			return err
		}
	}
	return patchPod(ctx, c, pod, func(p *corev1.Pod) {
		setLabel(p, kvv1.LabelName, owner)
		if _, ok := p.Labels[kvv1.LabelTraffic]; !ok {
			setLabel(p, kvv1.LabelTraffic, kvv1.TrafficYes)
		}
	})
}

// releasePod lets go of a pod: it removes the ownership labels and annotations and puts an ejected pod
// back in traffic, so that nothing stays out of traffic because Kubervisor stopped supervising it. A paused
// pod stays paused: the user asked to keep it for investigation.
func releasePod(ctx context.Context, c client.Client, pod *corev1.Pod) error {
	return patchPod(ctx, c, pod, func(p *corev1.Pod) {
		for _, k := range kvv1.OwnedLabels {
			delete(p.Labels, k)
		}
		for _, k := range kvv1.OwnedAnnotations {
			delete(p.Annotations, k)
		}
		if p.Labels[kvv1.LabelTraffic] == kvv1.TrafficNo {
			p.Labels[kvv1.LabelTraffic] = kvv1.TrafficYes
		}
	})
}

// patchPod applies mutate to a copy of pod and sends the difference as a merge patch with optimistic locking
// (the patch carries the resourceVersion it was computed from). Nothing is sent when nothing changed. On
// success pod holds the server's answer. A pod that is gone is not an error: there is nothing left to fix.
func patchPod(ctx context.Context, c client.Client, pod *corev1.Pod, mutate func(*corev1.Pod)) error {
	orig := pod.DeepCopy()
	updated := pod.DeepCopy()
	mutate(updated)
	if maps.Equal(orig.Labels, updated.Labels) && maps.Equal(orig.Annotations, updated.Annotations) {
		return nil
	}
	if err := c.Patch(ctx, updated, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}),
		client.FieldOwner(fieldManager)); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("patching pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	updated.DeepCopyInto(pod)
	return nil
}

func setLabel(p *corev1.Pod, k, v string) {
	if p.Labels == nil {
		p.Labels = map[string]string{}
	}
	p.Labels[k] = v
}

func setAnnotation(p *corev1.Pod, k, v string) {
	if p.Annotations == nil {
		p.Annotations = map[string]string{}
	}
	p.Annotations[k] = v
}
