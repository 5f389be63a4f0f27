package controller

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/breaker"
	"github.com/kubervisor/kubervisor/internal/metrics"
	"github.com/kubervisor/kubervisor/internal/podstate"
)

// desiredStatus builds a KubervisorService's status from scratch, from what the pass observed and the
// breakers' remembered outcomes. It is pure: the caller compares the result with kvs.Status and writes only
// when they differ (SPEC §9).
//
// Every time in it is what the API server stores (metav1.Time keeps whole seconds), so that an unchanged
// state compares equal to the object read back. A time is carried over from kvs.Status whenever what it
// dates did not change: a condition's lastTransitionTime while its status stays, a breaker's
// lastEvaluationTime while its outcome stays (also across a restart, which empties the memory).
//
// A breaker of the spec with no remembered outcome (not evaluated since the controller started: the Service
// is missing, or adoption is under way) keeps its entry from kvs.Status, if any; conditions count it as not
// evaluated yet.
func desiredStatus(kvs *kvv1.KubervisorService, obs *observation, mem recalled, now time.Time) kvv1.KubervisorServiceStatus {
	outcomes := mem.outcomes
	status := kvv1.KubervisorServiceStatus{ObservedGeneration: kvs.Generation, Pods: countPods(obs.pods, kvs.Spec.GateMode())}
	if obs.adopting() {
		// NOTE: the pod counts are written once adoption completes, not as each pod is adopted: that is one
		// status write per pod (make bench-scale: 15,810 status updates for 10,000 pods), while the
		// kubervisor_pods metrics follow every pod already (recordPodMetrics).
		status.Pods = kvs.Status.Pods
	}
	old := map[string]*kvv1.BreakerStatus{}
	for i := range kvs.Status.Breakers {
		old[kvs.Status.Breakers[i].Name] = &kvs.Status.Breakers[i]
	}
	for _, b := range kvs.Spec.Breakers {
		o, ok := outcomes[b.Name]
		if !ok {
			if prev := old[b.Name]; prev != nil {
				status.Breakers = append(status.Breakers, *prev.DeepCopy())
			}
			continue
		}
		entry := kvv1.BreakerStatus{
			Name: b.Name, LastResult: o.lastResult(), AnomalousPods: capNames(o.anomalous), EjectedPods: heldOutBy(obs.pods, b.Name),
			WithheldPods: capNames(o.withheld), WouldEjectPods: capNames(o.wouldEject), IgnoredSamples: o.ignored,
			Warnings: capNames(slices.Concat(o.endpointWarnings, o.warnings)), Anomalies: carryDecisions(o.decisions, old[b.Name]),
		}
		entry.LastStormTime = mem.lastStormTime(b.Name, old[b.Name])
		if prev := old[b.Name]; prev != nil && prev.LastEvaluationTime != nil && sameBreakerStatus(*prev, entry) {
			entry.LastEvaluationTime = prev.LastEvaluationTime.DeepCopy()
		} else {
			t := apiTime(o.changedAt)
			entry.LastEvaluationTime = &t
		}
		status.Breakers = append(status.Breakers, entry)
	}
	status.Manual = manualHolds(obs.pods, now)
	status.Conditions = conditions(kvs, obs, outcomes, mem.breach, now)
	return status
}

// heldOutBy names the pods the breaker holds out of traffic now (traffic=no, its kubervisor/strategy),
// sorted and capped: what a user reads status.breakers[].ejectedPods as. It changes only when a pod leaves
// or comes back, so the steady state writes nothing.
func heldOutBy(pods []*corev1.Pod, breakerName string) []string {
	var out []string
	for _, p := range pods {
		if podstate.TrafficOf(p) == kvv1.TrafficNo && podstate.StrategyOf(p) == breakerName {
			out = append(out, p.Name)
		}
	}
	slices.Sort(out)
	return capNames(out)
}

// statusPatch is a JSON merge patch that sets the whole status to status: every field of the status type is
// in it, null when status omits it (a merge patch leaves out what it does not name, and replaces lists
// whole), so that the result does not depend on what the server held.
func statusPatch(status *kvv1.KubervisorServiceStatus) (client.Patch, error) {
	data, err := json.Marshal(status)
	if err != nil {
		return nil, fmt.Errorf("encoding a status: %w", err)
	}
	fields := map[string]any{}
	if err := json.Unmarshal(data, &fields); err != nil {
		return nil, fmt.Errorf("decoding a status: %w", err)
	}
	for f := range reflect.TypeFor[kvv1.KubervisorServiceStatus]().Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if _, ok := fields[name]; !ok && name != "" && name != "-" {
			fields[name] = nil
		}
	}
	body, err := json.Marshal(map[string]any{"status": fields})
	if err != nil {
		return nil, fmt.Errorf("encoding a status patch: %w", err)
	}
	return client.RawPatch(types.MergePatchType, body), nil
}

// recalled is what the breaker loop's memory contributes to a status.
type recalled struct {
	outcomes map[string]breakerOutcome
	// breach is the message of the last floor restoration while the fleet stays at the floor ("" for none).
	breach string
	// storms and stormActive are the breakers' last storm times and whether their last evaluation was one.
	storms      map[string]time.Time
	stormActive map[string]bool
}

// lastStormTime is a breaker's status.lastStormTime: during a storm the value already stored (the storm's
// time moves at every evaluation: writing it would rewrite the status at every evaluation of the storm),
// otherwise the time of the last storm, nil for none.
func (m recalled) lastStormTime(name string, prev *kvv1.BreakerStatus) *metav1.Time {
	if m.stormActive[name] {
		if prev != nil && prev.LastStormTime != nil {
			return prev.LastStormTime.DeepCopy()
		}
		return nil
	}
	at, ok := m.storms[name]
	if !ok || at.IsZero() {
		return nil
	}
	t := apiTime(at)
	return &t
}

// carryDecisions returns the decisions, each replaced by the stored entry of the same pod and decision, so
// that an entry is rewritten only when its pod's decision changes, also across a restart.
func carryDecisions(ds []kvv1.PodDecision, prev *kvv1.BreakerStatus) []kvv1.PodDecision {
	if len(ds) == 0 {
		return nil
	}
	out := make([]kvv1.PodDecision, len(ds))
	for i, d := range ds {
		out[i] = d
		if prev == nil {
			continue
		}
		for _, p := range prev.Anomalies {
			if sameDecision(p, d) {
				out[i] = *p.DeepCopy()
			}
		}
	}
	return out
}

// sameBreakerStatus compares two entries but for their time.
func sameBreakerStatus(a, b kvv1.BreakerStatus) bool {
	a.LastEvaluationTime, b.LastEvaluationTime = nil, nil
	return sameBreaker(a, b)
}

// apiTime is t as the API server stores a metav1.Time: UTC, whole seconds.
func apiTime(t time.Time) metav1.Time {
	return metav1.NewTime(t.UTC().Truncate(time.Second))
}

// countPods counts the managed pods by state (SPEC §2.2).
func countPods(pods []*corev1.Pod, gateMode bool) kvv1.PodCounts {
	var c kvv1.PodCounts
	for _, p := range pods {
		c.Managed++
		ready := podstate.ServingReady(p, gateMode)
		if ready {
			c.Ready++
		}
		switch t := podstate.TrafficOf(p); t {
		case kvv1.TrafficYes:
			// Serving only (podstate.Serving): a terminating pod is out of the endpoints whatever its Ready
			// condition says.
			if podstate.Serves(t, ready, !p.DeletionTimestamp.IsZero()) {
				c.InTraffic++
			}
		case kvv1.TrafficNo:
			c.Ejected++
		case kvv1.TrafficPause:
			c.Paused++
		default:
			c.Unknown++
		}
	}
	return c
}

func recordPodMetrics(kvs *kvv1.KubervisorService, c kvv1.PodCounts, mem *kvsMemory) {
	// NOTE: unchanged counts are not set again: six series lookups a pass, 2 % of the steady CPU at 1,000
	// KubervisorServices. The memory goes with the series (metrics.Forget beside every memory.forget but
	// the Service's; then mem is new and the counts are set).
	if mem.podMetrics != nil && *mem.podMetrics == c {
		return
	}
	mem.podMetrics = &c
	// The counter exists from the first pass, at 0: increase() in an alert sees the first restoration.
	metrics.FloorRestorations.WithLabelValues(kvs.Namespace, kvs.Name)
	for state, v := range map[string]int32{
		"managed": c.Managed, "ready": c.Ready, "in_traffic": c.InTraffic, "ejected": c.Ejected, "paused": c.Paused, "unknown": c.Unknown,
	} {
		metrics.Pods.WithLabelValues(kvs.Namespace, kvs.Name, state).Set(float64(v))
	}
}

// conditions returns every condition, in a fixed order, from what the pass observed and the breakers'
// typed outcomes. Messages are deterministic so that an unchanged cluster gives an unchanged status.
func conditions(kvs *kvv1.KubervisorService, obs *observation, outcomes map[string]breakerOutcome, breach string,
	now time.Time) []metav1.Condition {
	var out []metav1.Condition
	set := func(t string, ok bool, reason, msg string) {
		c := metav1.Condition{Type: t, Status: metav1.ConditionFalse, Reason: reason, Message: msg,
			ObservedGeneration: kvs.Generation, LastTransitionTime: apiTime(now)}
		if ok {
			c.Status = metav1.ConditionTrue
		}
		if prev := meta.FindStatusCondition(kvs.Status.Conditions, t); prev != nil && prev.Status == c.Status {
			c.LastTransitionTime = prev.LastTransitionTime
		}
		out = append(out, c)
	}
	svc := obs.svc
	ungated := podsWithoutGate(kvs, obs.pods)

	if svc == nil {
		set(kvv1.ConditionServiceFound, false, kvv1.ReasonServiceNotFound, fmt.Sprintf("Service %s not found", kvs.Spec.Service))
	} else {
		set(kvv1.ConditionServiceFound, true, kvv1.ReasonServiceFound, fmt.Sprintf("Service %s found", svc.Name))
	}

	switch {
	case svc == nil:
		set(kvv1.ConditionTrafficControlled, false, kvv1.ReasonServiceNotFound, fmt.Sprintf("Service %s not found", kvs.Spec.Service))
	case !hasManagedSelector(svc):
		set(kvv1.ConditionTrafficControlled, false, kvv1.ReasonEmptySelector,
			fmt.Sprintf("Service %s selects no pod by label; Kubervisor supervises no pod", svc.Name))
	case kvs.Spec.GateMode() && len(ungated) == 0:
		set(kvv1.ConditionTrafficControlled, true, kvv1.ReasonReadinessGateMode,
			"Every managed pod declares the readiness gate "+kvv1.ConditionInTraffic+": ejections take effect")
	case kvs.Spec.GateMode():
		set(kvv1.ConditionTrafficControlled, false, kvv1.ReasonGateMissing,
			fmt.Sprintf("%d managed pods lack the readiness gate %s: they are never ejected", len(ungated), kvv1.ConditionInTraffic))
	case podstate.TrafficControlled(svc):
		set(kvv1.ConditionTrafficControlled, true, kvv1.ReasonSelectorHasTraffic,
			fmt.Sprintf("Service %s selects kubervisor/traffic=yes: ejections take effect", svc.Name))
	default:
		set(kvv1.ConditionTrafficControlled, false, kvv1.ReasonSelectorNoTraffic,
			fmt.Sprintf("Service %s does not select kubervisor/traffic=yes: breakers only report (as in dry run)", svc.Name))
	}

	if obs.reason != "" {
		set(kvv1.ConditionConflict, true, obs.reason, obs.message)
	} else {
		set(kvv1.ConditionConflict, false, kvv1.ReasonNoConflict, "No other KubervisorService supervises these pods")
	}

	switch {
	case !kvs.Spec.GateMode():
		set(kvv1.ConditionReadinessGateMissing, false, kvv1.ReasonSelectorMode, "Selector mode: pods need no readiness gate")
	case len(ungated) > 0:
		set(kvv1.ConditionReadinessGateMissing, true, kvv1.ReasonGateMissing, fmt.Sprintf(
			"Pods without readinessGates [{conditionType: %s}] are never ejected: %s", kvv1.ConditionInTraffic, strings.Join(capNames(ungated), ", ")))
	default:
		set(kvv1.ConditionReadinessGateMissing, false, kvv1.ReasonGatesPresent, "Every managed pod declares the readiness gate "+kvv1.ConditionInTraffic)
	}

	sum := summarise(kvs, outcomes)
	ok, reason, msg := ejectionAllowed(kvs, obs, breach, sum)
	set(kvv1.ConditionEjectionAllowed, ok, reason, msg)

	switch problems := kvs.Spec.SpecProblems(); {
	case len(problems) > 0:
		set(kvv1.ConditionReady, false, kvv1.ReasonInvalidSpec, "The spec holds values the controller cannot use: "+strings.Join(problems, "; "))
	case svc == nil:
		set(kvv1.ConditionReady, false, kvv1.ReasonServiceNotFound, fmt.Sprintf("Service %s not found", kvs.Spec.Service))
	case obs.stall.reason != "":
		set(kvv1.ConditionReady, false, obs.stall.reason, obs.stall.message)
	case !obs.owner:
		set(kvv1.ConditionReady, false, kvv1.ReasonServiceClaimed, obs.message)
	case len(sum.failing) > 0:
		set(kvv1.ConditionReady, false, kvv1.ReasonDetectorError, strings.Join(sum.failing, "; "))
	case len(sum.pending) > 0:
		set(kvv1.ConditionReady, false, kvv1.ReasonPending, "Waiting for the first evaluation of breakers "+strings.Join(sum.pending, ", "))
	default:
		set(kvv1.ConditionReady, true, kvv1.ReasonAllBreakersOK, "Service found and every breaker's last evaluation succeeded")
	}
	return out
}

// breakerSummary is what the breakers' outcomes say to the conditions, breaker by breaker ("name: …").
type breakerSummary struct {
	withheld, storms, failing, pending []string
	// carriedStorm is a breaker not evaluated since the manager started whose stored result is a storm.
	carriedStorm bool
}

// summarise reads the breakers' outcomes for the conditions. A breaker not evaluated since the manager
// started keeps what its stored entry of the same generation says: a restarted manager does not flap Ready
// to Pending until its first evaluation.
func summarise(kvs *kvv1.KubervisorService, outcomes map[string]breakerOutcome) breakerSummary {
	stored := map[string]string{}
	if kvs.Status.ObservedGeneration == kvs.Generation {
		for _, b := range kvs.Status.Breakers {
			stored[b.Name] = b.LastResult
		}
	}
	var sum breakerSummary
	for _, b := range kvs.Spec.Breakers {
		o, ok := outcomes[b.Name]
		last, evaluatedBefore := stored[b.Name]
		switch {
		case !ok && evaluatedBefore && strings.HasPrefix(last, kvv1.ResultErrorPrefix):
			sum.failing = append(sum.failing, fmt.Sprintf("breaker %s: %s", b.Name, last))
		case !ok && evaluatedBefore && last == kvv1.ResultStormSuspected:
			sum.carriedStorm = true
		case !ok && evaluatedBefore && last != "":
		case !ok:
			sum.pending = append(sum.pending, b.Name)
		case o.kind == outcomeInvalid:
			// Ready says InvalidSpec, from the spec itself.
		case o.kind == outcomeError:
			sum.failing = append(sum.failing, fmt.Sprintf("breaker %s: %s", b.Name, o.lastResult()))
		case o.kind == outcomeStorm:
			sum.storms = append(sum.storms, fmt.Sprintf("breaker %s: %s", b.Name, o.why))
		case len(o.withheld) > 0:
			sum.withheld = append(sum.withheld, fmt.Sprintf("%s withheld %s", b.Name, strings.Join(capNames(o.withheld), ", ")))
		}
	}
	return sum
}

// ejectionAllowed is the EjectionAllowed condition: BelowFloor before a storm, a storm before the floor
// reached.
func ejectionAllowed(kvs *kvv1.KubervisorService, obs *observation, breach string, sum breakerSummary) (ok bool, reason, msg string) {
	if below := belowFloor(kvs, obs, breach); below != "" {
		return false, kvv1.ReasonBelowFloor, below
	}
	if len(sum.storms) > 0 {
		return false, kvv1.ReasonStormSuspected, strings.Join(sum.storms, "; ")
	}
	if sum.carriedStorm {
		// A storm stored before a restart, not evaluated since: the condition stays as it was.
		if prev := meta.FindStatusCondition(kvs.Status.Conditions, kvv1.ConditionEjectionAllowed); prev != nil &&
			prev.Reason == kvv1.ReasonStormSuspected {
			return false, kvv1.ReasonStormSuspected, prev.Message
		}
		return false, kvv1.ReasonStormSuspected, "A breaker suspected a storm in its last evaluation before the manager started"
	}
	if len(sum.withheld) > 0 {
		return false, kvv1.ReasonFloorReached, "The floor keeps anomalous pods in traffic: " + strings.Join(sum.withheld, "; ")
	}
	return true, kvv1.ReasonWithinFloor, "No anomalous pod is withheld by the floor"
}

// belowFloor is the message of EjectionAllowed=False/BelowFloor (SPEC §5 step 12), "" when it does not
// apply: fewer pods serve than the floor, or the last floor restoration (breach) left the fleet at the
// floor and no more pods serve since. Only for pods this KubervisorService supervises.
func belowFloor(kvs *kvv1.KubervisorService, obs *observation, breach string) string {
	if obs.svc == nil || !obs.owner {
		return ""
	}
	pods := planPods(obs.pods, kvs.Spec.GateMode())
	plan := breaker.Restore(pods, breaker.FloorOf(&kvs.Spec, breaker.Count(pods).Base), nil)
	switch {
	case plan.Below():
		return belowFloorMessage(plan)
	case breach != "" && plan.InTraffic <= plan.Floor:
		return breach
	}
	return ""
}

// podsWithoutGate names, in readinessGate mode, the managed pods lacking the gate, sorted.
func podsWithoutGate(kvs *kvv1.KubervisorService, pods []*corev1.Pod) []string {
	if !kvs.Spec.GateMode() {
		return nil
	}
	var out []string
	for _, p := range pods {
		if !podstate.HasGate(p) {
			out = append(out, p.Name)
		}
	}
	slices.Sort(out)
	return out
}

func hasManagedSelector(svc *corev1.Service) bool {
	_, ok := podstate.ManagedSelector(svc.Spec.Selector)
	return ok
}
