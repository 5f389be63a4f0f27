package activator_test

import (
	"time"

	"github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/podstate"
)

// now is the fixed instant every test runs at. It has a sub-second part so that precision losses show.
var now = time.Date(2026, 3, 14, 15, 9, 26, 535897932, time.UTC)

// nowText is now as FormatTime writes it.
const nowText = "2026-03-14T15:09:26.535897932Z"

// ejected returns the state of a pod out of traffic, ejected by breaker "errors" ago before now.
func ejected(retryCount int32, ago time.Duration) podstate.State {
	return podstate.State{Traffic: v1alpha1.TrafficNo, Strategy: "errors", BreakAt: now.Add(-ago), RetryCount: retryCount}
}

// resolved returns a ResolvedActivator.
func resolved(mode v1alpha1.ActivatorMode, period time.Duration, maxRetry, maxPause int32) v1alpha1.ResolvedActivator {
	return v1alpha1.ResolvedActivator{Mode: mode, Period: period, MaxRetryCount: maxRetry, MaxPauseCount: maxPause, Backoff: v1alpha1.BackoffLinear}
}

// scoped is r with its maxPauseCount set by the breaker's own activator (its paused pods only).
func scoped(r v1alpha1.ResolvedActivator, breaker string) v1alpha1.ResolvedActivator {
	r.PauseScope = breaker
	return r
}

const (
	periodic      = v1alpha1.ActivatorModePeriodic
	retryAndKill  = v1alpha1.ActivatorModeRetryAndKill
	retryAndPause = v1alpha1.ActivatorModeRetryAndPause
)

// defaulted ends the problem Parse reports for unusable annotations.
const defaulted = "; treating the pod as just ejected with retry count 1"

// repair is the Repair of a pod defaulted at now.
var repair = map[string]string{v1alpha1.AnnotationBreakAt: nowText, v1alpha1.AnnotationRetryCount: "1"}

// justEjected is the state of an ejected pod whose annotations were unusable, with the given problems.
func justEjected(strategy string, problems ...string) podstate.State {
	return podstate.State{
		Traffic: v1alpha1.TrafficNo, Strategy: strategy, BreakAt: now, RetryCount: 1,
		Problems: problems, Repair: repair,
	}
}
