package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/breaker"
	"github.com/kubervisor/kubervisor/internal/metrics"
	"github.com/kubervisor/kubervisor/internal/podstate"
)

// restoreFloor is the pass's fail-open step (SPEC §5 step 12), run before any evaluation in every pass
// that supervises the pods, whatever the mode (dry run, inactive selector, readinessGate): when fewer
// managed pods serve than the floor, it puts back in traffic the pods the breakers ejected, in
// breaker.Restore's order, until the floor is met. A pod event (NotReady, terminating, deleted) wakes the
// pass, so this happens as soon as the cache shows the breach, not at the next evaluation.
//
//	decide   breaker.Restore on the cache's pods, ranked by the breakers' latest answers (memory)
//	write    podstate.Restore on each chosen pod (restored-at, retry count kept, deletion cost removed),
//	         and its readiness gate in readinessGate mode; obs.pods then holds the written copies
//	record   a Normal event and a log line per pod, the counter; returned: the BelowFloor message and
//	         one Warning event naming the pods restored and those left out (manual holds, paused), queued
//	         for the status write that reports it
//
// NOTE: the cache may lag; a restoration decided on a stale view restores at worst a pod too many (the
// quota takes it out again when the fleet allows), never too few for long: every write and every pod
// event brings another pass. A pod whose patch fails (a conflict) is left to that next pass.
//
// It returns the BelowFloor message (nil: as it was; "": the fleet has recovered) and the Warning event.
func (r *KubervisorServiceReconciler) restoreFloor(ctx context.Context, kvs *kvv1.KubervisorService, obs *observation,
	mem *kvsMemory, now time.Time) (*string, eventQueue, error) {
	gateMode := kvs.Spec.GateMode()
	pods := planPods(obs.pods, gateMode)
	fleet := breaker.Count(pods)
	floor := breaker.FloorOf(&kvs.Spec, fleet.Base)
	if fleet.InTraffic >= floor {
		if fleet.InTraffic > floor {
			// The fleet has recovered: the BelowFloor of the last restoration is over.
			return new(""), nil, nil
		}
		return nil, nil, nil
	}
	// NOTE: the rankings are read only under the floor (a map per pass otherwise, for nothing).
	plan := breaker.Restore(pods, floor, mem.standings(kvs))
	if len(plan.Restore) == 0 {
		return nil, nil, nil
	}
	index := obs.positions()
	log := logf.FromContext(ctx)
	var restored []string
	var errs error
	for _, name := range plan.Restore {
		state := podstate.Of(obs.pods[index[name]], now)
		pod, err := obs.write(ctx, r.Client, index[name], func(*corev1.Pod) podstate.Patch { return podstate.Restore(state, now) })
		if err != nil {
			errs = errors.Join(errs, err)
			continue
		}
		if err := syncGate(ctx, r.Client, pod, gateMode, now); err != nil {
			errs = errors.Join(errs, err)
		}
		restored = append(restored, name)
		log.Info("Restored pod to hold the floor", "Pod", klog.KObj(pod), "breaker", state.Strategy, "retryCount", state.RetryCount)
		r.Recorder.Eventf(pod, kvs, corev1.EventTypeNormal, kvv1.EventRestored, kvv1.ActionRestore,
			"Pod %s back in traffic: %d pods served, under the floor of %d (breaker %s ejected it)", name, plan.InTraffic, floor,
			orNone(state.Strategy))
	}
	if len(restored) == 0 {
		return nil, nil, errs
	}
	metrics.FloorRestorations.WithLabelValues(kvs.Namespace, kvs.Name).Add(float64(len(restored)))
	msg := restorationMessage(plan, restored)
	log.Info("Restored pods to hold the floor", "inTraffic", plan.InTraffic, "floor", floor, "restored", len(restored),
		"held", len(plan.Held), "paused", len(plan.Paused))
	queued := eventQueue{{regarding: kvs, eventType: corev1.EventTypeWarning, reason: kvv1.EventFloorRestored, action: kvv1.ActionRestore, note: msg}}
	return &msg, queued, errs
}

// markOutOfTraffic completes the records of the pods out of traffic (no or pause, not terminating) that a
// version without them took out, in one write per pod (outOfTraffic): the deletion cost of a pod out of
// traffic (podstate.MarkOut), so that a rollout right after an upgrade removes them before serving pods, and
// for a pod a breaker ejected the fingerprint of the activator in force now (podstate.RecordActivator), so
// that an activator edited after the upgrade restores it once instead of pausing or killing it (SPEC §6).
// NOTE: one write per such pod, once; the pass only reads the annotations of the pods out of traffic, a few
// of the fleet.
func (r *KubervisorServiceReconciler) markOutOfTraffic(ctx context.Context, kvs *kvv1.KubervisorService, obs *observation,
	now time.Time) error {
	var errs error
	for i, p := range obs.pods {
		if t := podstate.TrafficOf(p); (t != kvv1.TrafficNo && t != kvv1.TrafficPause) || !p.DeletionTimestamp.IsZero() {
			continue
		}
		if outOfTraffic(kvs, p, now).IsEmpty() {
			continue
		}
		pod, err := obs.write(ctx, r.Client, i, func(p *corev1.Pod) podstate.Patch { return outOfTraffic(kvs, p, now) })
		if err != nil {
			errs = errors.Join(errs, err)
			continue
		}
		logf.FromContext(ctx).Info("Completed the record of a pod out of traffic", "Pod", klog.KObj(pod),
			"deletionCost", pod.Annotations[kvv1.AnnotationDeletionCost], "activator", pod.Annotations[kvv1.AnnotationActivator])
	}
	return errs
}

// outOfTraffic is what a pod out of traffic lacks of the records this version writes when it takes one out:
// the deletion cost, and for a pod a breaker ejected the fingerprint of its breaker's activator, as ejection
// computes it; empty when it lacks nothing.
func outOfTraffic(kvs *kvv1.KubervisorService, pod *corev1.Pod, now time.Time) podstate.Patch {
	state := podstate.Of(pod, now)
	// An unusable activator is InvalidSpec; its zero value is recorded, as ejection records it.
	act, _ := kvs.Spec.ActivatorFor(state.Strategy)
	return podstate.MarkOut(pod.Annotations).Merge(podstate.RecordActivator(state, act.Fingerprint()))
}

// restorationMessage says what a restoring pass did, with the numbers: the message of its Warning event and
// of EjectionAllowed=False/BelowFloor while the fleet stays at the floor.
func restorationMessage(plan breaker.Restoration, restored []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d pods in traffic, under the floor of %d: restored %d pods the breakers ejected: %s", plan.InTraffic, plan.Floor,
		len(restored), strings.Join(capNames(restored), ", "))
	b.WriteString(leftOut(plan))
	return b.String()
}

// belowFloorMessage says why the fleet is under the floor after the pass: pods still to restore (their
// patches failed and are retried), or none that a breaker ejected and could serve.
func belowFloorMessage(plan breaker.Restoration) string {
	if len(plan.Restore) > 0 {
		return fmt.Sprintf("%d pods in traffic, under the floor of %d: restoring %s", plan.InTraffic, plan.Floor,
			strings.Join(capNames(plan.Restore), ", ")) + leftOut(plan)
	}
	return fmt.Sprintf("%d pods in traffic, under the floor of %d, and no pod a breaker ejected can serve to make up for it",
		plan.InTraffic, plan.Floor) + leftOut(plan)
}

// leftOut names the pods a floor restoration never puts back, for a message ("" when none).
func leftOut(plan breaker.Restoration) string {
	var parts []string
	if len(plan.Held) > 0 {
		parts = append(parts, "held by hand: "+strings.Join(capNames(plan.Held), ", "))
	}
	if len(plan.Paused) > 0 {
		parts = append(parts, "paused: "+strings.Join(capNames(plan.Paused), ", "))
	}
	if len(parts) == 0 {
		return ""
	}
	return "; left out of traffic (" + strings.Join(parts, "; ") + ")"
}
