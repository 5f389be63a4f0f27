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
	"github.com/kubervisor/kubervisor/internal/activator"
	"github.com/kubervisor/kubervisor/internal/breaker"
	"github.com/kubervisor/kubervisor/internal/metrics"
	"github.com/kubervisor/kubervisor/internal/podstate"
)

// act carries an evaluation out (SPEC §5 steps 2–6) and returns each evaluated breaker's outcome, dated
// against prev (the outcomes in memory), and the events that report them.
//
//  1. Plan on the cache, with this controller's writes the cache has not shown yet counted in
//     (kvsMemory.overlay): that is what keeps the floor against a lagging cache (§5.5).
//  2. Patch each ejected pod, with optimistic locking on what the plan saw.
//  3. Events, metrics and logs for every decision.
//
// obs.pods is left as the pods are after the pass's writes, for the status counts; obs.writes lists them. An
// error (a patch) is returned after everything else was done; the pods it concerns were not ejected.
//
// The events that report a breaker's outcome (detector failed, Prometheus warned, storm, withheld, would
// eject) are returned, only when what they report differs from prev (the outcomes before this
// pass): Reconcile emits them once the status that records the outcome is written. The events of pod writes
// (Ejected) are emitted at once, after their write.
func (r *KubervisorServiceReconciler) act(ctx context.Context, kvs *kvv1.KubervisorService, obs *observation,
	ev *evaluation, prev map[string]breakerOutcome, now time.Time) (map[string]breakerOutcome, eventQueue, error) {
	log := logf.FromContext(ctx)
	outcomes := make(map[string]breakerOutcome, len(ev.breakers))
	var queued eventQueue
	for name, age := range ev.stale {
		log.Info("Dropped a detector answer older than the breaker's period; asking again", "breaker", name, "age", age.String())
	}
	for _, b := range ev.breakers {
		if !b.kind.failed() {
			continue
		}
		outcomes[b.name] = datedAgainst(prev, b.name, breakerOutcome{kind: b.kind, err: b.err.Error(),
			endpointWarnings: capNames(b.endpointWarnings)}, now)
		if b.kind == outcomeInvalid {
			// The InvalidSpec condition and its event say it (Reconcile); the detector did not fail.
			continue
		}
		metrics.DetectorErrors.WithLabelValues(kvs.Namespace, kvs.Name, b.name).Inc()
		if p, ok := prev[b.name]; !ok || p.kind != b.kind || p.err != b.err.Error() {
			queued.queue(kvs, nil, corev1.EventTypeWarning, kvv1.EventDetectorFailed,
				fmt.Sprintf("Breaker %s: %v; no pod is ejected on this evaluation", b.name, b.err))
			// At the default level, once per change (as the event): a detector failing the same way is not
			// logged at every evaluation.
			log.Info("Detector failed; no pod is ejected", "breaker", b.name, "error", b.err.Error())
		}
		log.V(1).Info("Evaluated breaker", "breaker", b.name, "result", kvv1.ResultErrorPrefix+b.err.Error())
	}

	// NOTE: no live read. obs.pods already counts this controller's own writes that the cache has not shown
	// yet (kvsMemory.overlay, the ReplicaSet controller's expectations): that is what keeps the floor against
	// a lagging cache (SPEC §5 step 5), at the cost of one PATCH per ejection whatever the fleet's size.
	plan, floor := planOn(kvs, obs.pods, ev)
	var errs error
	index := obs.positions()
	byName := func(name string) *corev1.Pod {
		if i, ok := index[name]; ok {
			return obs.pods[i]
		}
		return nil
	}
	selectorActive := podstate.Effective(kvs, obs.svc)
	evals := map[string]*breakerEval{}
	for i := range ev.breakers {
		b := &ev.breakers[i]
		evals[b.name] = b
		metrics.IgnoredSamples.WithLabelValues(kvs.Namespace, kvs.Name, b.name).Set(float64(b.ignored))
		// Counters exist from a breaker's first evaluation, at 0: increase() in an alert sees the first storm
		// and the first detector error (a series born at 1 shows no increase).
		metrics.Storms.WithLabelValues(kvs.Namespace, kvs.Name, b.name)
		metrics.DetectorErrors.WithLabelValues(kvs.Namespace, kvs.Name, b.name)
		if len(b.endpointWarnings) > 0 && !slices.Equal(prev[b.name].endpointWarnings, capNames(b.endpointWarnings)) {
			queued.queue(kvs, nil, corev1.EventTypeWarning, kvv1.EventEndpointWarning,
				fmt.Sprintf("Breaker %s: %s", b.name, strings.Join(b.endpointWarnings, "; ")))
		}
		if len(b.warnings) > 0 && !slices.Equal(prev[b.name].warnings, capNames(b.warnings)) {
			queued.queue(kvs, nil, corev1.EventTypeWarning, kvv1.EventPrometheusWarning,
				fmt.Sprintf("Breaker %s: Prometheus warned: %s", b.name, strings.Join(b.warnings, "; ")))
		}
		if b.stormStarted {
			log.Info("Storm suspected; nobody is ejected", "breaker", b.name, "why", b.why)
			metrics.Storms.WithLabelValues(kvs.Namespace, kvs.Name, b.name).Inc()
			queued.queue(kvs, nil, corev1.EventTypeWarning, kvv1.EventStormSuspected, fmt.Sprintf("Breaker %s: %s", b.name, b.why))
		}
	}

	for i := range plan {
		o := &plan[i]
		var ejected []string
		for _, a := range o.Eject {
			pod, err := obs.write(ctx, r.Client, index[a.Pod], func(p *corev1.Pod) podstate.Patch { return ejection(kvs, p, o.Name, now) })
			if err != nil {
				errs = errors.Join(errs, err)
				continue
			}
			// In readinessGate mode the condition takes the pod out (the Pod reconciler would too, one event later).
			if err := syncGate(ctx, r.Client, pod, kvs.Spec.GateMode(), now); err != nil {
				errs = errors.Join(errs, err)
			}
			ejected = append(ejected, a.Pod)
			metrics.Ejections.WithLabelValues(kvs.Namespace, kvs.Name, o.Name, "true").Inc()
			log.Info("Ejected pod", "Pod", klog.KObj(pod), "breaker", o.Name, "reason", a.Reason)
			recordPodEvent(r.Recorder, kvs, pod, corev1.EventTypeNormal, kvv1.EventEjected, kvv1.ActionEject,
				fmt.Sprintf("Breaker %s took pod %s out of traffic: %s", o.Name, a.Pod, a.Reason))
		}
		for _, a := range o.WouldEject {
			metrics.Ejections.WithLabelValues(kvs.Namespace, kvs.Name, o.Name, "false").Inc()
			if !slices.Contains(prev[o.Name].wouldEject, a.Pod) {
				queued.queue(kvs, byName(a.Pod), corev1.EventTypeNormal, kvv1.EventWouldEject, fmt.Sprintf(
					"Breaker %s would take pod %s out of traffic (%s): %s", o.Name, a.Pod, dryRunCause(kvs, o.Name, selectorActive), a.Reason))
			}
		}
		withheld := anomalyNames(o.Withheld)
		be := evals[o.Name]
		if len(withheld) > 0 && be.hold == "" {
			metrics.Withheld.WithLabelValues(kvs.Namespace, kvs.Name, o.Name).Add(float64(len(withheld)))
			if !slices.Equal(prev[o.Name].withheld, withheld) {
				queued.queue(kvs, nil, corev1.EventTypeWarning, kvv1.EventEjectionWithheld, fmt.Sprintf(
					"Breaker %s kept %d anomalous pods in traffic to hold the floor: %s", o.Name, len(withheld),
					strings.Join(capNames(withheld), ", ")))
			}
		}
		out := breakerOutcome{
			kind: be.kind, why: be.why, anomalous: anomalyNames(o.Anomalous), ejected: ejected, withheld: withheld,
			wouldEject: anomalyNames(o.WouldEject), ignored: int32(min(be.ignored, 1<<30)), warnings: capNames(be.warnings),
			endpointWarnings: capNames(be.endpointWarnings),
			decisions:        decisionsOf(o, byName, ejected, be, floor, dryRunCause(kvs, o.Name, selectorActive)),
		}
		outcomes[o.Name] = datedAgainst(prev, o.Name, out, now)
		log.V(1).Info("Evaluated breaker", "breaker", o.Name, "result", out.lastResult(),
			"anomalous", len(out.anomalous), "ejected", len(out.ejected), "withheld", len(out.withheld), "wouldEject", len(out.wouldEject))
	}
	return outcomes, queued, errs
}

// datedAgainst dates an outcome of the breaker against its outcome in prev.
func datedAgainst(prev map[string]breakerOutcome, name string, o breakerOutcome, now time.Time) breakerOutcome {
	last, ok := prev[name]
	return dated(o, last, ok, now)
}

// breakerOutcome is what one evaluation of a breaker decided.
type breakerOutcome struct {
	kind outcomeKind
	// err says what went wrong, for outcomeError; why says what a guard decided, for outcomeFleetTooSmall
	// and outcomeStorm.
	err, why string
	// Pod names, worst first: flagged managed pods; ejected by this evaluation; kept in traffic by the floor;
	// what a dry run would have ejected.
	anomalous, ejected, withheld, wouldEject []string
	// decisions says, per anomalous pod worst first, what the breaker decided and why (status anomalies[]).
	decisions []kvv1.PodDecision
	// ignored counts samples about pods not managed or in another namespace; warnings are Prometheus',
	// endpointWarnings the detector endpoint's.
	ignored                    int32
	warnings, endpointWarnings []string
	// changedAt is the time of the evaluation that last changed the outcome (status lastEvaluationTime).
	changedAt time.Time
}

// sameAs reports whether two outcomes say the same, whenever they were reached.
// Decisions compare by pod and decision only: a detector's reason may hold numbers that move at every
// evaluation, and an entry is rewritten only when its pod's decision changes (SPEC §5 step 10).
func (o breakerOutcome) sameAs(p breakerOutcome) bool {
	return o.kind == p.kind && o.err == p.err && o.why == p.why && slices.Equal(o.anomalous, p.anomalous) &&
		slices.Equal(o.ejected, p.ejected) && slices.Equal(o.withheld, p.withheld) && slices.Equal(o.wouldEject, p.wouldEject) &&
		o.ignored == p.ignored && slices.Equal(o.warnings, p.warnings) && slices.Equal(o.endpointWarnings, p.endpointWarnings) &&
		slices.EqualFunc(o.decisions, p.decisions, sameDecision)
}

func sameDecision(a, b kvv1.PodDecision) bool { return a.Pod == b.Pod && a.Decision == b.Decision }

// lastResult is the status.breakers[].lastResult of the outcome.
func (o breakerOutcome) lastResult() string {
	switch o.kind {
	case outcomeError, outcomeInvalid:
		return kvv1.ResultErrorPrefix + o.err
	case outcomeNoData:
		return kvv1.ResultNoData
	case outcomeFleetTooSmall:
		return kvv1.ResultFleetTooSmall
	case outcomeStorm:
		return kvv1.ResultStormSuspected
	default:
		return kvv1.ResultOK
	}
}

// dated is o, reached at now, dated against last, the breaker's previous outcome (ok: there is one):
// changedAt moves only when the outcome differs from the last one, so that an evaluation that changes
// nothing changes no status, and a pod decision keeps its entry (reason and since) while the pod's decision
// stays.
func dated(o, last breakerOutcome, ok bool, now time.Time) breakerOutcome {
	o.changedAt = now
	for i := range o.decisions {
		o.decisions[i].Since = apiTime(now)
		if !ok {
			continue
		}
		if j := slices.IndexFunc(last.decisions, func(d kvv1.PodDecision) bool { return sameDecision(d, o.decisions[i]) }); j >= 0 {
			o.decisions[i] = last.decisions[j]
		}
	}
	if ok && last.sameAs(o) {
		o.changedAt = last.changedAt
	}
	return o
}

// ejection is the patch that takes the pod out of traffic for the breaker: its retry count first forgiven
// (forgiveAfter of the breaker's activator, SPEC §6), then one more, and the activator's fingerprint.
func ejection(kvs *kvv1.KubervisorService, pod *corev1.Pod, breakerName string, now time.Time) podstate.Patch {
	state := podstate.Of(pod, now)
	// An unusable activator is InvalidSpec; the zero values forgive nothing.
	act, _ := kvs.Spec.ActivatorFor(breakerName)
	state.RetryCount = activator.Forgive(state.RetryCount, state.RestoredAt, act.ForgiveAfter, now)
	return podstate.Eject(state, breakerName, now, act.Fingerprint())
}

// decisionsOf says, for each anomalous pod of a breaker's plan (worst first, at most MaxPodNamesInStatus),
// what the pass decided and why (SPEC §5 step 10).
func decisionsOf(o *breaker.Outcome, pods func(string) *corev1.Pod, ejected []string, be *breakerEval, floor int,
	dryRunCause string) []kvv1.PodDecision {
	// Later assignments win: a planned ejection whose patch went through is Ejected, one that failed
	// stays Withheld.
	kind := map[string]kvv1.Decision{}
	for _, a := range o.Eject {
		kind[a.Pod] = kvv1.DecisionWithheld
	}
	for _, a := range o.WouldEject {
		kind[a.Pod] = kvv1.DecisionWouldEject
	}
	for _, a := range o.Withheld {
		kind[a.Pod] = kvv1.DecisionWithheld
	}
	for _, a := range o.Spared {
		kind[a.Pod] = be.spared[a.Pod].decision
	}
	for _, p := range ejected {
		kind[p] = kvv1.DecisionEjected
	}
	planned := make(map[string]bool, len(o.Eject))
	for _, a := range o.Eject {
		planned[a.Pod] = true
	}
	anomalous := capAnomalies(o.Anomalous)
	out := make([]kvv1.PodDecision, 0, len(anomalous))
	for _, a := range anomalous {
		d := kvv1.PodDecision{Pod: a.Pod, Decision: kind[a.Pod], Reason: a.Reason}
		switch d.Decision {
		case kvv1.DecisionWouldEject:
			d.Reason += " (not ejected: " + dryRunCause + ")"
		case kvv1.DecisionWithheld:
			switch {
			case planned[a.Pod]:
				d.Reason += "; the ejection failed and is retried at once"
			case be.hold != "":
				d.Reason += "; withheld: " + be.hold
			default:
				d.Reason += fmt.Sprintf("; withheld: the floor keeps %d pods in traffic", floor)
			}
		case kvv1.DecisionProbation, kvv1.DecisionPending, kvv1.DecisionWarmingUp:
			d.Reason += "; " + be.spared[a.Pod].why
		case kvv1.DecisionEjected:
		default:
			d.Decision, d.Reason = notServing(pods(a.Pod), a.Reason, be.gateMode)
		}
		out = append(out, d)
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// notServing is the decision about an anomalous pod that is not in traffic: Ejected when it is out already
// (traffic=no), Ignored when it is paused, terminating, gone or not Ready (nothing to decide).
func notServing(pod *corev1.Pod, reason string, gateMode bool) (kvv1.Decision, string) {
	switch {
	case pod == nil:
		return kvv1.DecisionIgnored, reason + "; the pod is gone"
	case !pod.DeletionTimestamp.IsZero():
		return kvv1.DecisionIgnored, reason + "; the pod is terminating"
	}
	switch t := podstate.TrafficOf(pod); t {
	case kvv1.TrafficNo:
		return kvv1.DecisionEjected, reason + "; out of traffic already"
	case kvv1.TrafficPause:
		return kvv1.DecisionIgnored, reason + "; paused"
	default:
		if !podstate.ServingReady(pod, gateMode) {
			return kvv1.DecisionIgnored, reason + "; the pod is not Ready"
		}
		if gateMode && !podstate.HasGate(pod) {
			return kvv1.DecisionIgnored, reason + "; the pod lacks the readiness gate " + kvv1.ConditionInTraffic + ": never ejected"
		}
		return kvv1.DecisionIgnored, fmt.Sprintf("%s; traffic label %q", reason, t)
	}
}

func capAnomalies(as []breaker.Anomaly) []breaker.Anomaly {
	if len(as) > kvv1.MaxPodNamesInStatus {
		return as[:kvv1.MaxPodNamesInStatus]
	}
	return as
}

func dryRunCause(kvs *kvv1.KubervisorService, breakerName string, selectorActive bool) string {
	switch {
	case kvs.Spec.DryRun:
		return "spec.dryRun"
	case !selectorActive:
		return "the Service selector lacks kubervisor/traffic: \"yes\""
	default:
		return "breaker " + breakerName + " is in dry run"
	}
}

func anomalyNames(as []breaker.Anomaly) []string {
	if len(as) == 0 {
		return nil
	}
	out := make([]string, 0, len(as))
	for _, a := range as {
		out = append(out, a.Pod)
	}
	return out
}

// capNames caps a pod name list for status.
func capNames(names []string) []string {
	if len(names) > kvv1.MaxPodNamesInStatus {
		return names[:kvv1.MaxPodNamesInStatus]
	}
	return names
}
