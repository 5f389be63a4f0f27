// Package podstate is the pod contract of SPEC §3 in one place: it parses a pod's Kubervisor labels and
// annotations (Parse, Of), builds every write Kubervisor makes on them (Adopt, Eject, Restore, Pause,
// Repair, Release), and answers the questions every part of Kubervisor asks about a pod or its Service
// (Ready, ManagedSelector, TrafficControlled, ActivatorInactivity). The breaker, the activator, the
// finalizer, the ownership sync and the kubectl plugin all go through it, so that each key is read and
// written in exactly one place. It never talks to the API server and never reads the clock.
package podstate
