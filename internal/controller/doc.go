// Package controller holds Kubervisor's three reconcilers, which share one manager cache.
//
// # Who writes what (one writer per field)
//
//	field                                   written by
//	--------------------------------------  -----------------------------------------------------------
//	pod label kubervisor/name               ownership sync (Service and Pod reconcilers, same function:
//	                                        syncPodOwnership); removed by releasePod (ownership sync when a
//	                                        pod leaves the selector, KubervisorService finalizer)
//	pod label kubervisor/traffic            "yes" when missing: ownership sync; "no": breaker
//	                                        (KubervisorService reconciler); "yes"/"pause": activator (Pod
//	                                        reconciler); "no"->"yes": releasePod
//	pod label kubervisor/strategy           breaker on ejection; removed by releasePod
//	annotations break-at, retry-count       breaker on ejection; the activator rewrites both only to repair
//	                                        a pod set to "no" by hand or with unusable values (treated as
//	                                        just ejected, retry count 1); removed by releasePod
//	annotation restored-at                  activator on restore; removed by releasePod
//	KubervisorService status (all of it)    KubervisorService reconciler, once per pass, only if changed
//	KubervisorService finalizer             KubervisorService reconciler
//
// Decisions that need no API server live in pure packages: internal/detector (which pods are
// anomalous), internal/breaker (the floor and who is ejected), internal/activator (the retry schedule).
// The reconcilers read from the cache, call those, patch, and requeue.
package controller
