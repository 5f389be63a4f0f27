package activator

import (
	"math"
	"time"

	"k8s.io/apimachinery/pkg/util/duration"

	"github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/podstate"
)

// NextRetryDescription says, in a few words for the NEXT RETRY column of `kubectl kubervisor`, what the
// activator will do to a pod and when: "restore in 15s", "restore now", "pause now", "kill now", or
// "<none>" when the activator leaves the pod alone. Its arguments are those of Next.
func NextRetryDescription(state podstate.State, a v1alpha1.ResolvedActivator, pausedCount int32, now time.Time) string {
	return Describe(Next(state, a, pausedCount, now))
}

// Describe says a decision in a few words; see NextRetryDescription.
func Describe(d Decision) string {
	switch d.Action {
	case ActionWait:
		return "restore in " + duration.HumanDuration(ceilSecond(d.After))
	case ActionRestore:
		return "restore now"
	case ActionPause:
		return "pause now"
	case ActionKill:
		return "kill now"
	default:
		return "<none>"
	}
}

// ceilSecond rounds a positive wait up to a whole second, so that the column never shows a pod as due
// sooner than it is (HumanDuration truncates).
func ceilSecond(d time.Duration) time.Duration {
	r := d.Truncate(time.Second)
	if r < d && r <= math.MaxInt64-time.Second {
		r += time.Second
	}
	return r
}
