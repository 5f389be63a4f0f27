// Package activator is the retry schedule of ejected pods (SPEC §6) as pure functions: it reads a pod's
// labels and annotations, decides whether the pod waits, goes back in traffic, is paused or is killed, and
// says which labels and annotations carry the decision out. It never talks to the API server and never
// reads the clock: the caller passes now.
//
// The Pod reconciler uses it in three steps, on the pod state of package podstate:
//
//	state := podstate.Of(pod, now)
//	a, err := kvs.Spec.ActivatorFor(state.Strategy) // Next copes with the zero value if err != nil
//	d := activator.Next(state, a, pausedCount, now)
//	patch := activator.PatchFor(state, d, now) // a podstate.Patch: merge-patch it; for Kill, evict after patching
//	// Wait: RequeueAfter d.After
//
// Besides the traffic label (yes on restore, pause on pause) and the restored-at annotation, the
// activator writes the break-at and retry-count annotations in one case only: when they are missing or
// malformed on a pod out of traffic (podstate.State.Repair), so that the defaulted state is persisted and the
// schedule converges instead of restarting on every reconcile.
package activator
