package activator

import (
	"fmt"
	"hash/fnv"
	"math"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/podstate"
)

// Action is what the activator does to a pod.
type Action string

const (
	// ActionNone leaves the pod alone: it is in traffic, paused, or not labelled for the activator.
	ActionNone Action = "None"
	// ActionWait leaves the pod out of traffic until Decision.At; requeue after Decision.After.
	ActionWait Action = "Wait"
	// ActionRestore puts the pod back in traffic (kubervisor/traffic=yes), keeping its retry count.
	ActionRestore Action = "Restore"
	// ActionPause keeps the pod out of traffic for good (kubervisor/traffic=pause), for investigation.
	ActionPause Action = "Pause"
	// ActionKill evicts the pod through the Eviction API, so that PodDisruptionBudgets are honoured.
	ActionKill Action = "Kill"
)

// Decision is the activator's verdict on one pod at one instant.
type Decision struct {
	// Action is what to do now.
	Action Action
	// At is when the action is due: for Wait the instant to come back, for Restore the instant the pod
	// became due (now or earlier), for Pause and Kill now (they never wait), zero for None.
	At time.Time
	// After is At − now for Wait, exactly; zero for every other action.
	After time.Duration
	// Reason explains the decision for events and logs, naming the mode and the retry count.
	Reason string
}

// Next decides what to do with a pod (SPEC §6), given its parsed state, the activator that applies to it
// (KubervisorServiceSpec.ActivatorFor(state.Strategy)), the number of pods of the same KubervisorService
// currently paused, and now.
//
// Only a pod with traffic=no is acted on. periodic restores it at BreakAt + Period whatever its retry
// count. retryAndKill and retryAndPause restore it at BreakAt + RetryCount × Period while RetryCount ≤
// MaxRetryCount; beyond that retryAndKill kills it at once, and retryAndPause pauses it while pausedCount <
// MaxPauseCount and kills it otherwise. A restore due exactly at now is due.
//
// pausedCount must include the pods this process has paused and the cache may not show yet; otherwise two
// pods decided in quick succession could both be paused past MaxPauseCount.
//
// Next never panics and never keeps a pod out for good: a retry count below 1 counts as 1, a Period ≤ 0
// (the zero ResolvedActivator ActivatorFor returns with an error) as the built-in 10s, and an empty or
// unknown Mode as periodic, the only mode that never evicts.
func Next(state podstate.State, a v1alpha1.ResolvedActivator, pausedCount int32, now time.Time) Decision {
	switch state.Traffic {
	case v1alpha1.TrafficNo:
	case v1alpha1.TrafficYes:
		return Decision{Action: ActionNone, Reason: "in traffic: nothing to do"}
	case v1alpha1.TrafficPause:
		return Decision{Action: ActionNone, Reason: "paused: the activator never touches a paused pod"}
	case "":
		return Decision{Action: ActionNone, Reason: fmt.Sprintf("label %s is missing: nothing to do", v1alpha1.LabelTraffic)}
	default:
		return Decision{Action: ActionNone, Reason: fmt.Sprintf("label %s is %q, not %q: nothing to do",
			v1alpha1.LabelTraffic, state.Traffic, v1alpha1.TrafficNo)}
	}

	if m := state.Manual; m != nil {
		// A manual ejection stays out until restored or until its --for passes; the mode does not apply.
		if m.Until.IsZero() {
			return Decision{Action: ActionNone, Reason: fmt.Sprintf("ejected by hand by %s: out until restored by hand", orSomeone(m.By))}
		}
		return restore(state.BreakAt, m.Until.Sub(state.BreakAt), now, fmt.Sprintf("ejected by hand by %s", orSomeone(m.By)))
	}
	count := max(state.RetryCount, 1)

	switch a.Mode {
	case v1alpha1.ActivatorModeRetryAndKill, v1alpha1.ActivatorModeRetryAndPause:
		if count <= a.MaxRetryCount {
			return restore(state.BreakAt, Wait(a, count, state.UID), now,
				fmt.Sprintf("retry %d of %d (%s)", count, a.MaxRetryCount, a.Mode))
		}
		if state.Activator != "" && state.Activator != a.Fingerprint() {
			// SPEC §6: an edit never punishes. The pod was ejected under another mode or maxRetryCount: it is
			// restored once on the new schedule, and judged by the new activator from its next ejection.
			return restore(state.BreakAt, Wait(a, max(min(count, a.MaxRetryCount), 1), state.UID), now, fmt.Sprintf(
				"retry %d exceeds maxRetryCount %d (%s), but the activator changed since the ejection: restored once, never punished by an edit",
				count, a.MaxRetryCount, a.Mode))
		}
		prefix := fmt.Sprintf("retry %d exceeds maxRetryCount %d (%s)", count, a.MaxRetryCount, a.Mode)
		if a.Mode == v1alpha1.ActivatorModeRetryAndKill {
			return Decision{Action: ActionKill, At: now, Reason: prefix + ": killing the pod"}
		}
		if pausedCount < a.MaxPauseCount {
			return Decision{Action: ActionPause, At: now, Reason: fmt.Sprintf(
				"%s: pausing the pod, %d of maxPauseCount %d paused before it", prefix, pausedCount, a.MaxPauseCount)}
		}
		return Decision{Action: ActionKill, At: now, Reason: fmt.Sprintf(
			"%s: killing the pod instead of pausing it, %d paused already (maxPauseCount %d)", prefix, pausedCount, a.MaxPauseCount)}
	case v1alpha1.ActivatorModePeriodic, "":
		return restore(state.BreakAt, Wait(periodicOf(a), count, state.UID), now, fmt.Sprintf("retry %d (%s)", count, v1alpha1.ActivatorModePeriodic))
	default:
		return restore(state.BreakAt, Wait(periodicOf(a), count, state.UID), now,
			fmt.Sprintf("retry %d (unknown mode %q, treated as %s)", count, a.Mode, v1alpha1.ActivatorModePeriodic))
	}
}

// periodicOf is the activator as periodic mode applies it: every retry waits one period (the 2018
// semantics), unless the back-off is exponential; maxPeriod and jitter apply as in every mode.
func periodicOf(a v1alpha1.ResolvedActivator) v1alpha1.ResolvedActivator {
	if a.Backoff != v1alpha1.BackoffExponential {
		a.Backoff = backoffFlat
	}
	return a
}

// backoffFlat waits one period at every retry (periodic mode's linear back-off).
const backoffFlat v1alpha1.Backoff = "flat"

func orSomeone(by string) string {
	if by == "" {
		return "someone"
	}
	return by
}

// Wait is how long retry n (n ≥ 1; lower counts as 1) stays out of traffic under the activator (SPEC §6):
//
//   - the back-off: linear n × period, exponential period × 2^(n−1);
//   - the cap: never more than MaxPeriod when set, applied first;
//   - jitter: ± JitterPercent of that, from a hash of the pod's UID and n (the same pod and retry always
//     get the same wait, so a restarted controller computes the same due time), reflected below the cap.
//
// The result is always more than zero and never overflows: a product past the largest Duration saturates
// before the cap applies. A Period ≤ 0 counts as the built-in 10s.
func Wait(a v1alpha1.ResolvedActivator, n int32, uid types.UID) time.Duration {
	period := a.Period
	if period <= 0 {
		period = v1alpha1.DefaultActivatorPeriod
	}
	n = max(n, 1)
	var w time.Duration
	switch a.Backoff {
	case v1alpha1.BackoffExponential:
		w = saturatingMul(period, 1, n-1)
	case backoffFlat:
		w = period
	default:
		w = saturatingMul(period, int64(n), 0)
	}
	// NOTE: the cap applies before the jitter: capped after it, every pod held at maxPeriod would come back
	// at the same moment. A jittered wait past the cap is reflected below it, so the waits of pods at the cap
	// spread over [maxPeriod × (1 − jitter), maxPeriod] and the cap still bounds every wait.
	if a.MaxPeriod > 0 {
		w = min(w, a.MaxPeriod)
	}
	if j := min(max(a.JitterPercent, 0), 100); j > 0 {
		f := float64(w) * (1 + float64(j)/100*jitterOf(uid, n))
		if limit := float64(a.MaxPeriod); a.MaxPeriod > 0 && f > limit {
			f = 2*limit - f
		}
		w = time.Duration(math.MaxInt64)
		if f < float64(math.MaxInt64) {
			w = time.Duration(f)
		}
	}
	return max(w, time.Nanosecond)
}

// saturatingMul returns d × k × 2^shift (d, k > 0), or the largest Duration when that overflows.
func saturatingMul(d time.Duration, k int64, shift int32) time.Duration {
	if shift >= 62 || k > math.MaxInt64/int64(d) {
		return math.MaxInt64
	}
	v := int64(d) * k
	if v > math.MaxInt64>>shift {
		return math.MaxInt64
	}
	return time.Duration(v << shift)
}

// jitterOf is a number in [−1, 1) fixed by the pod's UID and the retry count.
func jitterOf(uid types.UID, n int32) float64 {
	h := fnv.New64a()
	_, _ = fmt.Fprintf(h, "%s/%d", uid, n) // a hash.Hash never fails to write
	return float64(h.Sum64()>>11)/float64(1<<53)*2 - 1
}

// Forgive returns the pod's retry count lowered by one per full forgiveAfter it spent in traffic since
// restoredAt (SPEC §6), never below 0; unchanged when forgiveAfter is 0 (never) or the pod was never
// restored. The breaker calls it when it ejects the pod again, so forgiveness costs no write.
func Forgive(count int32, restoredAt time.Time, forgiveAfter time.Duration, now time.Time) int32 {
	if forgiveAfter <= 0 || restoredAt.IsZero() || !now.After(restoredAt) {
		return count
	}
	periods := now.Sub(restoredAt) / forgiveAfter
	if periods >= time.Duration(count) {
		return 0
	}
	return count - int32(periods)
}

// restore returns Wait until breakAt + wait, Restore from then on.
func restore(breakAt time.Time, wait time.Duration, now time.Time, prefix string) Decision {
	at := breakAt.Add(wait)
	reason := fmt.Sprintf("%s: back in traffic after %s", prefix, wait)
	if now.Before(at) {
		after := at.Sub(now)
		return Decision{Action: ActionWait, At: at, After: after, Reason: fmt.Sprintf("%s, due in %s", reason, after)}
	}
	return Decision{Action: ActionRestore, At: at, Reason: reason}
}

// Restrain turns a Pause or a Kill into a Restore, for an activator that restores but never punishes (dry
// run, an inactive selector: SPEC §6); why says what restrains it. Other decisions are returned as they are.
func Restrain(d Decision, why string) Decision {
	if d.Action != ActionPause && d.Action != ActionKill {
		return d
	}
	return Decision{Action: ActionRestore, At: d.At, Reason: d.Reason + "; restored instead, never paused or killed: " + why}
}
