package activator

import (
	"fmt"
	"math"
	"time"

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

	period := a.Period
	if period <= 0 {
		period = v1alpha1.DefaultActivatorPeriod
	}
	count := max(state.RetryCount, 1)

	switch a.Mode {
	case v1alpha1.ActivatorModeRetryAndKill, v1alpha1.ActivatorModeRetryAndPause:
		if count <= a.MaxRetryCount {
			return restore(state.BreakAt, backoff(count, period), now,
				fmt.Sprintf("retry %d of %d (%s)", count, a.MaxRetryCount, a.Mode))
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
		return restore(state.BreakAt, period, now, fmt.Sprintf("retry %d (%s)", count, v1alpha1.ActivatorModePeriodic))
	default:
		return restore(state.BreakAt, period, now,
			fmt.Sprintf("retry %d (unknown mode %q, treated as %s)", count, a.Mode, v1alpha1.ActivatorModePeriodic))
	}
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

// backoff returns count × period (both positive), saturating instead of overflowing: the API caps both, but
// objects written before validation existed are not capped.
func backoff(count int32, period time.Duration) time.Duration {
	if time.Duration(count) > math.MaxInt64/period {
		return math.MaxInt64
	}
	return time.Duration(count) * period
}

// Restrain turns a Pause or a Kill into a Restore, for an activator that restores but never punishes (dry
// run, an inactive selector: SPEC §6); why says what restrains it. Other decisions are returned as they are.
func Restrain(d Decision, why string) Decision {
	if d.Action != ActionPause && d.Action != ActionKill {
		return d
	}
	return Decision{Action: ActionRestore, At: d.At, Reason: d.Reason + "; restored instead, never paused or killed: " + why}
}
