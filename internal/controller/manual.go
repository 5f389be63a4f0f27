package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
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

// Manual control (SPEC §10). `kubectl kubervisor eject|restore` writes a request on a pod (annotations
// kubervisor/request*, podstate.Request; read back by podstate.RequestOf); the KubervisorService reconciler
// carries it out in its pass, so that it stays the only writer of the traffic label and a person's ejection
// shares the floor and the quota with the breakers (one writer of ejections per KubervisorService, never two
// racing for the last pods). A request on a pod no KubervisorService supervises is refused by the Pod
// reconciler (refuseUnsupervised).
//
// Every answer is one patch: the action (if any) and the outcome (podstate.Answer: the request's keys
// removed, "<request-at> Done: …" or "<request-at> Refused: …" in kubervisor/request-outcome), with an
// event on the pod and the KubervisorService naming who, what and why.

// carryOutRequests answers every pending request on the KubervisorService's pods, in name order. floor is
// the KubervisorService's floor; pods reflect the pass's own writes afterwards.
func (r *KubervisorServiceReconciler) carryOutRequests(ctx context.Context, kvs *kvv1.KubervisorService, obs *observation,
	now time.Time) error {
	if !slices.ContainsFunc(obs.pods, podstate.HasRequest) {
		return nil
	}
	// A live read, as before any ejection (SPEC §5.5): the floor holds for people too.
	live, err := livePods(ctx, r.APIReader, kvs)
	if err != nil {
		return err
	}
	obs.pods = pointersTo(live)
	var errs error
	for _, pod := range obs.pods {
		if !podstate.HasRequest(pod) {
			continue
		}
		if err := r.answer(ctx, kvs, obs, pod, now); err != nil {
			errs = errors.Join(errs, err)
		}
	}
	return errs
}

// answer carries out one pod's request.
func (r *KubervisorServiceReconciler) answer(ctx context.Context, kvs *kvv1.KubervisorService, obs *observation, pod *corev1.Pod,
	now time.Time) error {
	rq, _, err := podstate.RequestOf(pod)
	if err != nil {
		return r.refuse(ctx, kvs, pod, rq, "the request is malformed: "+err.Error())
	}
	state := podstate.Of(pod, now)
	switch rq.Action {
	case kvv1.RequestRestore:
		if state.Traffic == kvv1.TrafficYes {
			return r.done(ctx, kvs, obs, pod, rq, podstate.Patch{}, kvv1.EventManualRestore, "the pod is in traffic already")
		}
		metrics.Activations.WithLabelValues(kvs.Namespace, kvs.Name, "manual", "restore").Inc()
		return r.done(ctx, kvs, obs, pod, rq, podstate.Restore(state, now), kvv1.EventManualRestore,
			fmt.Sprintf("back in traffic (it was %s)", state.Traffic))
	default: // eject
		if state.Traffic == kvv1.TrafficPause {
			return r.refuse(ctx, kvs, pod, rq, "the pod is paused; restore it first")
		}
		if kvs.Spec.DryRun || !podstate.Effective(kvs, obs.svc) {
			return r.refuse(ctx, kvs, pod, rq,
				"the KubervisorService only reports (dry run, or the Service selector lacks kubervisor/traffic): nothing is ejected")
		}
		if kvs.Spec.GateMode() && !podstate.HasGate(pod) {
			return r.refuse(ctx, kvs, pod, rq, "the pod lacks the readiness gate "+kvv1.ConditionInTraffic+": it cannot be taken out of traffic")
		}
		fleet := breaker.Count(planPods(obs.pods, kvs.Spec.GateMode()))
		floor := breaker.FloorOf(&kvs.Spec, fleet.Base)
		// A serving pod leaves traffic only within the quota the breakers share; a pod out already uses none.
		breaksFloor := podstate.Serving(pod, kvs.Spec.GateMode()) && breaker.Quota(fleet, floor) == 0
		if breaksFloor && !rq.Force {
			metrics.Withheld.WithLabelValues(kvs.Namespace, kvs.Name, kvv1.ManualStrategy).Inc()
			return r.refuse(ctx, kvs, pod, rq, fmt.Sprintf(
				"the floor keeps %d pods in traffic and %d serve: ejecting this one would leave %d (use --force to break the floor)",
				floor, fleet.InTraffic, fleet.InTraffic-1))
		}
		var until time.Time
		what := "out of traffic until restored by hand"
		if rq.For > 0 {
			until = now.Add(rq.For)
			what = "out of traffic until " + podstate.FormatTime(until)
		}
		if breaksFloor {
			what += fmt.Sprintf(", forced under the floor of %d", floor)
		}
		metrics.Ejections.WithLabelValues(kvs.Namespace, kvs.Name, kvv1.ManualStrategy, "true").Inc()
		return r.done(ctx, kvs, obs, pod, rq, podstate.EjectByHand(rq.By, rq.Reason, until, now), kvv1.EventManualEject, what)
	}
}

// done writes the action and the outcome in one patch, with events and a log line.
func (r *KubervisorServiceReconciler) done(ctx context.Context, kvs *kvv1.KubervisorService, obs *observation, pod *corev1.Pod,
	rq podstate.ManualRequest, action podstate.Patch, reason, what string) error {
	base, traffic := pod.ResourceVersion, podstate.TrafficOf(pod)
	if err := patchPod(ctx, r.Client, pod, action.Merge(podstate.Done(rq.At, what))); err != nil {
		return err
	}
	if t := podstate.TrafficOf(pod); t != traffic {
		// Counted until the cache shows it, as the breakers' writes (kvsMemory.expect).
		obs.writes = append(obs.writes, podWrite{pod: pod.Name, base: base, traffic: t})
	}
	if err := syncGate(ctx, r.Client, pod, kvs.Spec.GateMode(), r.Clock.Now()); err != nil {
		return err
	}
	verb := "restore"
	if rq.Action == kvv1.RequestEject {
		verb = "eject"
	}
	logf.FromContext(ctx).Info("Carried out a manual request", "Pod", klog.KObj(pod), "request", verb, "by", rq.By, "reason", rq.Reason)
	recordPodEvent(r.Recorder, kvs, pod, corev1.EventTypeNormal, reason, actionOf(rq),
		fmt.Sprintf("%s asked to %s pod %s (%s): %s", rq.By, verb, pod.Name, orNoReason(rq.Reason), what))
	return nil
}

// refuse answers a request it does not carry out, with a Warning event.
func (r *KubervisorServiceReconciler) refuse(ctx context.Context, kvs *kvv1.KubervisorService, pod *corev1.Pod, rq podstate.ManualRequest,
	why string) error {
	if err := patchPod(ctx, r.Client, pod, podstate.Refused(rq.At, why)); err != nil {
		return err
	}
	logf.FromContext(ctx).Info("Refused a manual request", "Pod", klog.KObj(pod), "request", rq.Action, "by", rq.By, "why", why)
	recordPodEvent(r.Recorder, kvs, pod, corev1.EventTypeWarning, kvv1.EventManualRefused, actionOf(rq),
		fmt.Sprintf("Refused the request of %s to %s pod %s (%s): %s", orSomeone(rq.By), rq.Action, pod.Name, orNoReason(rq.Reason), why))
	return nil
}

func actionOf(rq podstate.ManualRequest) string {
	if rq.Action == kvv1.RequestRestore {
		return kvv1.ActionRestore
	}
	return kvv1.ActionEject
}

func orNoReason(reason string) string {
	if reason == "" {
		return "no reason given"
	}
	return "reason: " + reason
}

func orSomeone(by string) string {
	if by == "" {
		return "someone"
	}
	return by
}

// manualHolds lists the pods held out of traffic by hand, in name order, at most MaxPodNamesInStatus
// (status.manual[]). Times are what the API server stores; an unusable break-at shows no since (the
// activator repairs it).
func manualHolds(pods []*corev1.Pod, now time.Time) []kvv1.ManualHold {
	var out []kvv1.ManualHold
	for _, p := range pods {
		s := podstate.Of(p, now)
		if s.Manual == nil || s.Traffic != kvv1.TrafficNo {
			continue
		}
		h := kvv1.ManualHold{Pod: p.Name, By: s.Manual.By, Reason: s.Manual.Reason}
		if s.BreakAtField == podstate.FieldValid {
			h.Since = new(apiTime(s.BreakAt))
		}
		if !s.Manual.Until.IsZero() {
			h.Until = new(apiTime(s.Manual.Until))
		}
		out = append(out, h)
	}
	slices.SortFunc(out, func(a, b kvv1.ManualHold) int { return strings.Compare(a.Pod, b.Pod) })
	if len(out) > kvv1.MaxPodNamesInStatus {
		out = out[:kvv1.MaxPodNamesInStatus]
	}
	return out
}
