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
//	evaluate (evaluate.go)  detector queries of the due breakers, at once (maxQueriesPerPass), waited for at
//	                        most queryWait (below) -> evaluation (typed OK | NoData | Error, guards,
//	                        failureThreshold counts) of the breakers answered, with the schedule and the
//	                        detectors it built, as values: it writes nothing into memory (only the book of
//	                        queries in flight, flights.go, takes its answers and its new queries)
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
// # Detector queries never hold a worker for their timeout
//
// A detector may take up to its timeout (min(evaluationPeriod, maxQueryTimeout), 10 s) to answer. The
// KubervisorService workers are few (--max-concurrent-evaluations, possibly 1), so a pass does not wait
// that long: it starts the queries of its due breakers in goroutines (at most maxQueriesPerPass at once)
// and waits for them at most queryWait (flights.go). The answers in by then are judged in the pass, as
// before. A query still running is left in flight: this pass does not judge its breaker (not evaluated,
// not an error, nothing ejected, its status as it was), which stays due, and the pass returns; the query,
// once answered, wakes its KubervisorService through a channel source of the controller (SetupWithManager)
// and the next pass judges the answer with the pods it observes then (anomalies naming pods no longer
// managed are ignored, as always). A lost wake-up costs a delay, not the answer: a pass requeues no later
// than the timeout of the queries it leaves in flight. So one detector's timeout holds a worker for
// queryWait at most and never delays another KubervisorService's evaluation.
//
// The queries in flight and their answers live in one mutex-guarded book (inFlight, flights.go) that the
// memory owns beside the KubervisorServices' entries, by KubervisorService and breaker, with the UID and
// spec generation they were asked for:
//
//   - a breaker has at most one query in flight: a pass that finds one waiting starts no other;
//   - an answer is taken by one pass, which removes it: it is judged once, and only within the breaker's
//     period of its coming (flight.staleAt); an older one is dropped with a log line and the breaker asked
//     again, so a pass held up for longer than a period never acts on evidence a newer question replaces;
//   - a spec change (the memory is reset), a deletion, or a KubervisorService that can no longer be
//     evaluated (its memory forgotten) cancels its queries and drops their answers; an answer asked for
//     another UID or generation is dropped, never judged against a spec it was not asked for;
//   - a query's context is its own (the reconcile's values, not its cancellation), bounded by the
//     detector's timeout and cancelled by the above, and by the manager stopping (inFlight.stop, a
//     runnable of the manager): no query outlives it.
//
// The goroutines read nothing of the memory (the pass hands them the detector and the request) and write
// only their own entry of the book. A query's goroutine lasts at most its timeout: it is not a goroutine
// per object (SPEC §4), and the schedule still lives in RequeueAfter.
//
// Decisions that need no API server live in pure packages: internal/detector (which pods are
// anomalous), internal/breaker (the floor and who is ejected), internal/activator (the retry schedule),
// internal/podstate (the pod contract). The reconcilers read from the cache, call those, patch, and requeue.
package controller
