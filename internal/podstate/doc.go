// Package podstate is the pod contract of SPEC §3, §10 and §11 in one place, so that each key is read and
// written in exactly one place:
//
//   - it parses a pod's Kubervisor labels and annotations (Parse, Of, and the cheap readers TrafficOf,
//     OwnerOf, OwnerLabel, StrategyOf, BreakAtOf) and a manual request on it (RequestOf, HasRequest,
//     OutcomeOf);
//   - it builds every write Kubervisor makes on them (Adopt, Eject, EjectByHand, Restore, Pause, MarkOut,
//     RecordActivator, Repair, Release, Answer) and the one the kubectl plugin makes (Request, sent as
//     Patch.MergePatch);
//   - it answers the questions every part of Kubervisor asks about a pod or its Service: is it ready
//     (Ready, ServingReady, ReadySince), serving (Serving, Serves: the floor, the quota and the counts),
//     paused (IsPaused, CountPaused), which kubervisor.io/in-traffic condition it should carry and why
//     (HasGate, WantedGate, GateReason), what the Service selects (ManagedSelector, TrafficControlled,
//     Effective) and how the activator acts (ActivatorInactivity).
//
// The breaker, the activator, the finalizer, the ownership sync, the manual requests and the kubectl plugin
// all go through it. The keys themselves, and the condition's reasons, are constants of api/v1alpha1. It
// never talks to the API server and never reads the clock.
package podstate
