package activator

import (
	"time"

	"github.com/kubervisor/kubervisor/internal/podstate"
)

// PatchFor returns the write that carries out d on the pod whose state is given, now being the time of
// the write: podstate.Restore for Restore, podstate.Pause for Pause, and for Kill, Wait and None only the
// repair of unusable annotations (the caller evicts for Kill, after patching: an eviction refused by a
// PodDisruptionBudget is retried later, and the repaired schedule must hold meanwhile).
func PatchFor(state podstate.State, d Decision, now time.Time) podstate.Patch {
	switch d.Action {
	case ActionRestore:
		return podstate.Restore(state, now)
	case ActionPause:
		return podstate.Pause(state)
	default:
		return podstate.Repair(state)
	}
}
