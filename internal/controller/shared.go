package controller

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/podstate"
)

// The helpers every reconciler shares: pod reads and writes, events, conflict handling.

// patchPod applies a podstate.Patch to a copy of pod and sends the difference as a merge patch with
// optimistic locking (the patch carries the resourceVersion it was computed from). Nothing is sent when
// nothing changed. On success pod holds the server's answer. A pod that is gone is not an error: there is
// nothing left to fix.
func patchPod(ctx context.Context, c client.Client, pod *corev1.Pod, p podstate.Patch) error {
	updated := pod.DeepCopy()
	if !p.ApplyTo(&updated.ObjectMeta) {
		return nil
	}
	if err := c.Patch(ctx, updated, client.MergeFromWithOptions(pod, client.MergeFromWithOptimisticLock{}),
		client.FieldOwner(fieldManager)); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("patching pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	updated.DeepCopyInto(pod)
	return nil
}

// releasePod lets go of a pod (podstate.Release): nothing stays out of traffic because Kubervisor stopped
// supervising it; a paused pod stays paused.
func releasePod(ctx context.Context, c client.Client, pod *corev1.Pod) error {
	if err := patchPod(ctx, c, pod, podstate.Release(podstate.Of(pod, time.Time{}))); err != nil {
		return err
	}
	logf.FromContext(ctx).Info("Released pod", "Pod", klog.KObj(pod))
	return nil
}

// requeueOnConflict turns optimistic-lock conflicts into a quiet, short requeue: another reconciler (the
// Pod reconciler adopting the same new pod, the breaker, the activator) wrote the object first, and the next
// pass decides again from what it wrote. Every other error is returned, also when it was joined with
// conflicts (withoutConflicts): a Forbidden is never hidden behind a quiet requeue.
func requeueOnConflict(ctx context.Context, err error) (ctrl.Result, error) {
	others, conflicted := withoutConflicts(err)
	if others != nil {
		return ctrl.Result{}, others
	}
	if conflicted {
		logf.FromContext(ctx).V(1).Info("Object changed meanwhile; retrying", "error", err.Error())
		return ctrl.Result{RequeueAfter: conflictRetry}, nil
	}
	return ctrl.Result{}, nil
}

// withoutConflicts splits an error, joined (errors.Join) or not, into what is not an optimistic-lock
// conflict (nil when nothing) and whether it held a conflict. NOTE: apierrors.IsConflict on a joined error
// answers for the first API status it finds, so a conflict joined before a Forbidden would hide it.
func withoutConflicts(err error) (others error, conflicted bool) {
	if err == nil {
		return nil, false
	}
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		var rest []error
		for _, e := range joined.Unwrap() {
			o, c := withoutConflicts(e)
			conflicted = conflicted || c
			if o != nil {
				rest = append(rest, o)
			}
		}
		return errors.Join(rest...), conflicted
	}
	if apierrors.IsConflict(err) {
		return nil, true
	}
	return err, false
}

// recordPodEvent records an action on a pod twice, on the KubervisorService and on the pod, so that it shows
// in `kubectl describe` of either (SPEC §7).
func recordPodEvent(rec events.EventRecorder, kvs *kvv1.KubervisorService, pod *corev1.Pod, eventType, reason, action, note string) {
	rec.Eventf(kvs, pod, eventType, reason, action, "%s", note)
	rec.Eventf(pod, kvs, eventType, reason, action, "%s", note)
}

// ownedPods lists, from the cache, deep copies of the pods labelled with the KubervisorService's name (the
// Service reconciler writes them; a pass reads its own through cachedPods, without copies).
func ownedPods(ctx context.Context, c client.Reader, kvs *kvv1.KubervisorService) ([]corev1.Pod, error) {
	var list corev1.PodList
	if err := c.List(ctx, &list, client.InNamespace(kvs.Namespace), client.MatchingFields{IndexOwner: kvs.Name}); err != nil {
		return nil, fmt.Errorf("listing pods of KubervisorService %s/%s: %w", kvs.Namespace, kvs.Name, err)
	}
	return list.Items, nil
}

// naming lists, from the cache, the KubervisorServices of namespace that name the Service (the spec.service
// index), with the caller's list options (client.UnsafeDisableDeepCopy for a read-only use).
func naming(ctx context.Context, c client.Reader, namespace, service string, opts ...client.ListOption) ([]kvv1.KubervisorService, error) {
	var list kvv1.KubervisorServiceList
	opts = append([]client.ListOption{client.InNamespace(namespace), client.MatchingFields{IndexServiceName: service}}, opts...)
	if err := c.List(ctx, &list, opts...); err != nil {
		return nil, fmt.Errorf("listing the KubervisorServices of Service %s/%s: %w", namespace, service, err)
	}
	return list.Items, nil
}

// livePods lists the pods labelled with the KubervisorService's name from the API server, not the cache.
func livePods(ctx context.Context, r client.Reader, kvs *kvv1.KubervisorService) ([]corev1.Pod, error) {
	var list corev1.PodList
	if err := r.List(ctx, &list, client.InNamespace(kvs.Namespace), client.MatchingLabels{kvv1.LabelName: kvs.Name}); err != nil {
		return nil, fmt.Errorf("listing pods of KubervisorService %s/%s from the API server: %w", kvs.Namespace, kvs.Name, err)
	}
	return list.Items, nil
}

// syncGate makes the pod's kubervisor.io/in-traffic condition follow its traffic label (SPEC §11): False
// while the KubervisorService, in readinessGate mode, holds it out (no, pause), True otherwise. Only pods
// declaring the gate are touched; nothing is sent when the condition is right already. The write is a
// strategic merge patch of pods/status with optimistic locking, computed from the (trimmed) cached pod, so
// that it carries this one condition and nothing else. On success pod holds the server's answer.
func syncGate(ctx context.Context, c client.Client, pod *corev1.Pod, gateMode bool, now time.Time) error {
	if !podstate.HasGate(pod) || !pod.DeletionTimestamp.IsZero() {
		return nil
	}
	want := podstate.WantedGate(pod, gateMode)
	if podstate.GateStatus(pod) == want {
		return nil
	}
	reason, msg := podstate.GateReason(pod, gateMode)
	updated := pod.DeepCopy()
	cond := corev1.PodCondition{Type: kvv1.ConditionInTraffic, Status: want, Reason: reason, Message: msg,
		LastTransitionTime: metav1.NewTime(now)}
	found := false
	for i := range updated.Status.Conditions {
		if updated.Status.Conditions[i].Type == kvv1.ConditionInTraffic {
			updated.Status.Conditions[i], found = cond, true
		}
	}
	if !found {
		updated.Status.Conditions = append(updated.Status.Conditions, cond)
	}
	if err := c.Status().Patch(ctx, updated, client.StrategicMergeFrom(pod, client.MergeFromWithOptimisticLock{}),
		client.FieldOwner(fieldManager)); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("setting condition %s of pod %s/%s: %w", kvv1.ConditionInTraffic, pod.Namespace, pod.Name, err)
	}
	logf.FromContext(ctx).V(1).Info("Set readiness gate", "Pod", klog.KObj(pod), "status", want, "reason", reason)
	updated.DeepCopyInto(pod)
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
