// Package controller holds Kubervisor's three reconcilers, which share one manager cache.
//
// # Who writes what (one writer per field)
//
// Every write on a pod's metadata is a constructor of internal/podstate, sent by patchPod (merge patch with
// optimistic locking), and every read of a pod's labels and annotations goes through podstate too:
//
//	field                                   written by
//	--------------------------------------  -----------------------------------------------------------
//	pod label kubervisor/name               podstate.Adopt from syncPodOwnership (Service and Pod
//	                                        reconcilers, same function); removed by podstate.Release
//	                                        (ownership sync when a pod leaves the selector, the finalizer)
//	pod label kubervisor/traffic            "yes" when missing: podstate.Adopt; "no": podstate.Eject
//	                                        (breaker, KubervisorService reconciler); "yes"/"pause":
//	                                        podstate.Restore/Pause (activator, Pod reconciler); "no"->"yes":
//	                                        podstate.Restore (floor restoration, KubervisorService
//	                                        reconciler, restore.go) and podstate.Release
//	pod label kubervisor/strategy           podstate.Eject; removed by podstate.Release
//	annotations break-at, retry-count       podstate.Eject; podstate.Repair (activator) only for a pod set
//	                                        to "no" by hand or with unusable values (treated as just
//	                                        ejected, retry count 1); removed by podstate.Release
//	annotation restored-at                  podstate.Restore; removed by podstate.Release
//	annotation controller.kubernetes.io/    the lowest cost by podstate.Eject, EjectByHand, Pause, and
//	pod-deletion-cost                       MarkOut (a pod out without it, KubervisorService reconciler);
//	                                        removed by podstate.Restore and Release (not of a paused pod)
//	annotation activator                    podstate.Eject (the fingerprint of the activator in force);
//	                                        podstate.RecordActivator, in the MarkOut patch, for a pod a
//	                                        breaker ejected without it (an older version; KubervisorService
//	                                        reconciler); removed by podstate.Release
//	annotations manual-by/-reason/-until    podstate.EjectByHand (KubervisorService reconciler, carrying
//	                                        out a request); removed by podstate.Restore and Release
//	annotations request, request-*          podstate.Request, from `kubectl kubervisor eject|restore` (the
//	                                        plugin: the only other writer); read by podstate.RequestOf (here
//	                                        and in the plugin); removed by podstate.Answer once carried out
//	annotation request-outcome              podstate.Answer (KubervisorService reconciler; the Pod
//	                                        reconciler for a pod nobody supervises); read by the plugin
//	                                        through podstate.OutcomeOf
//	pod condition kubervisor.io/in-traffic  syncGate (pods/status patch; after the traffic writes, in the
//	                                        Pod reconciler, at release): status podstate.WantedGate, reason
//	                                        and message podstate.GateReason (reasons kvv1.GateReason*)
//	KubervisorService status (all of it)    KubervisorService reconciler, once per pass, only if changed
//	KubervisorService finalizer             KubervisorService reconciler
//
// # The breaker pass, one way
//
// The KubervisorService reconciler's data flows in one direction (Cluster API's MachineHealthCheck is the
// model):
//
//	observe  (observe.go)   cache reads -> observation; the conflict logic is the pure conflictOf; the
//	                        pass's own traffic writes the cache has not shown yet counted in (memory.go,
//	                        overlay: the expectations that keep the floor against a lagging cache, §5.5)
//	fail-open (restore.go)  under the floor, pods the breakers ejected back in traffic (breaker.Restore),
//	                        in every pass, before any evaluation -> the BelowFloor message, its event
//	requests (manual.go)    manual eject/restore requests (podstate.RequestOf) carried out inside the floor
//	                        (breaker.Quota, as the plan; live read first)
//	evaluate (evaluate.go)  detector queries of the due breakers, at once (maxQueriesPerPass) -> evaluation (typed OK | NoData | Error,
//	                        guards, failureThreshold counts) with the schedule and the detectors it built,
//	                        as values: it writes nothing, its memory included
//	act      (act.go)       plan on that view (no live read); patches, pod events, metrics, logs -> one
//	                        dated breakerOutcome per evaluated breaker, and the events that report them
//	learn    (memory.go)    one function keeps the pass's lesson (evaluation, outcomes, BelowFloor) in
//	                        memory; the schedule of breakers whose ejections failed is not moved (due again)
//	status   (status.go)    pure desiredStatus(kvs, observation, recalled memory, now), times as the API server
//	                        stores them -> compared with the object, written once by a merge patch if it
//	                        differs; then the queued events go out
//
// Memory feeds status, never the other way round; conditions come from the typed outcomes.
//
// Decisions that need no API server live in pure packages: internal/detector (which pods are
// anomalous), internal/breaker (the floor and who is ejected), internal/activator (the retry schedule),
// internal/podstate (the pod contract). The reconcilers read from the cache, call those, patch, and requeue.
package controller
