package breaker

import (
	"fmt"
	"time"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
)

// Verdict is what a breaker's guards allow in one evaluation (SPEC §5 step 9).
type Verdict int

const (
	// Judge: the breaker's anomalies go to the plan.
	Judge Verdict = iota
	// FleetTooSmall: fewer Ready pods than minPodsToJudge; nobody is judged.
	FleetTooSmall
	// Storm: too large a share is anomalous, or a storm's cooldown is not over; nobody is ejected.
	Storm
)

// GuardResult is the guards' verdict on one evaluation.
type GuardResult struct {
	Verdict Verdict
	// Why says it in words, for status and events; empty for Judge.
	Why string
	// StormAt is the time of the last storm seen, now when this evaluation is one (the caller remembers it
	// for the cooldown); zero when there never was one.
	StormAt time.Time
}

// Guard applies a breaker's guards to one evaluation. f is the fleet (its Ready pods are the base of the
// share), anomalous the breaker's anomalies, lastStorm the StormAt of the previous evaluation (zero for
// none). A storm is more anomalous Ready pods than maxAnomalousPercent of the Ready pods; after one, the
// breaker stays held until the share has stayed at or under the threshold for stormCooldown.
func Guard(g kvv1.Guards, pods []Pod, anomalous []Anomaly, lastStorm, now time.Time) GuardResult {
	// The Ready pods that are not terminating: Fleet.Ready, by name.
	ready := make(map[string]bool, len(pods))
	for _, p := range pods {
		if p.Ready && !p.Terminating {
			ready[p.Name] = true
		}
	}
	nReady := len(ready)
	if g.MinPodsToJudge > 0 && nReady < int(g.MinPodsToJudge) {
		return GuardResult{Verdict: FleetTooSmall, StormAt: lastStorm,
			Why: fmt.Sprintf("%d Ready pods, fewer than minPodsToJudge %d: nobody is judged", nReady, g.MinPodsToJudge)}
	}
	bad := 0
	seen := make(map[string]bool, len(anomalous))
	for _, a := range anomalous {
		if ready[a.Pod] && !seen[a.Pod] {
			seen[a.Pod] = true
			bad++
		}
	}
	// Integer form of bad/ready > pct/100.
	if g.MaxAnomalousPercent < 100 && nReady > 0 && bad*100 > int(g.MaxAnomalousPercent)*nReady {
		return GuardResult{Verdict: Storm, StormAt: now,
			Why: fmt.Sprintf("%d of %d Ready pods anomalous, more than maxAnomalousPercent %d%%: the detector is suspect, nobody is ejected",
				bad, nReady, g.MaxAnomalousPercent)}
	}
	if !lastStorm.IsZero() && now.Sub(lastStorm) < g.StormCooldown {
		// NOTE: the message names fixed times, not the time elapsed: an evaluation during the cooldown says the
		// same as the one before, so the status is not rewritten at every evaluation.
		return GuardResult{Verdict: Storm, StormAt: lastStorm,
			Why: fmt.Sprintf("storm cooldown: the last storm was at %s, stormCooldown %s: nobody is ejected before %s",
				lastStorm.UTC().Format(time.RFC3339), g.StormCooldown, lastStorm.Add(g.StormCooldown).UTC().Format(time.RFC3339))}
	}
	return GuardResult{Verdict: Judge, StormAt: lastStorm}
}
