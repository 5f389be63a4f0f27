package controller

import (
	"hash/fnv"
	"maps"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/breaker"
	"github.com/kubervisor/kubervisor/internal/detector"
	"github.com/kubervisor/kubervisor/internal/podstate"
)

// memory is what the breaker loop remembers between passes, per KubervisorService: when each breaker is
// due next, its detector, and its last outcome. It lives in memory only: after a restart every breaker is
// due at once, which is what a fresh controller should do.
//
// NOTE: memory feeds status, never the other way round. A pass that evaluates nothing (it was triggered by a
// pod or Service event, or it retries a lost status write) still builds the breakers' status from these
// outcomes, so an outcome survives a status write that lost a race (the breaker is not due again before its
// period) and a pass never writes a status it did not compute.
type memory struct {
	mu      sync.Mutex
	entries map[types.NamespacedName]*kvsMemory
	// flights are the detector queries in flight and their answers (flights.go), with a lock of their own:
	// the queries' goroutines write them. A reset or forgotten memory drops its KubervisorService's.
	flights *inFlight
}

// kvsMemory is the memory of one KubervisorService. It is used by one reconcile at a time (the workqueue
// never hands one key to two workers).
type kvsMemory struct {
	generation int64
	next       map[string]time.Time
	detectors  map[string]detector.Detector
	// endpointGen is the generation of the detector endpoints the detectors were built with.
	endpointGen uint64
	outcomes    map[string]breakerOutcome
	// storms holds, per breaker, the time of its last suspected storm, for stormCooldown; stormActive the
	// breakers whose last evaluation was a storm (not its cooldown). Seeded from status (lastStormTime) when
	// the memory is new, so that a cooldown holds across restarts and edits.
	storms      map[string]time.Time
	stormActive map[string]bool
	// spread is set when the first evaluations of the breakers are spread over their periods; uid is the
	// KubervisorService's, the seed of the spread.
	spread bool
	uid    string
	// wroteFrom holds the resourceVersions our writes to the KubervisorService (finalizer, status) were
	// computed from since the cache last caught up: while the cache shows one of them, it has not seen all
	// of our writes yet (stale).
	wroteFrom map[string]bool
	// podMetrics holds the pod counts last set in the kubervisor_pods series (recordPodMetrics).
	podMetrics *kvv1.PodCounts
	// streaks holds, per breaker, the consecutive evaluations that flagged each pod in traffic
	// (failureThreshold, SPEC §5 step 13). NOTE: in memory only: a restart or a spec change starts the counts
	// again, which delays an ejection and never hastens one.
	streaks map[string]map[string]int
	// expected holds, per pod, the traffic label this controller wrote and the resourceVersion it wrote it
	// on, until the cache shows the pod past that version (expectations, as the ReplicaSet controller's).
	// NOTE: kept across spec changes (the cache lags no less after an edit); a restart needs none, since a
	// new manager's cache is listed after every write of the old one.
	expected map[string]podWrite
	// held are the events of passes whose status write failed, for the pass that writes it.
	held []queuedEvent
	// breach is the message of the last floor restoration while the fleet stays at or under the floor
	// (EjectionAllowed=False/BelowFloor); "" once more pods serve than the floor.
	breach string
}

// standings ranks the pods by the latest answers of the KubervisorService's breakers, for the order of a
// floor restoration (breaker.Restore).
func (e *kvsMemory) standings(kvs *kvv1.KubervisorService) map[string]breaker.Standing {
	rankings := make([][]string, 0, len(kvs.Spec.Breakers))
	for i := range kvs.Spec.Breakers {
		if o, ok := e.outcomes[kvs.Spec.Breakers[i].Name]; ok {
			rankings = append(rankings, o.anomalous)
		}
	}
	return breaker.Standings(rankings...)
}

// wrote remembers a write of ours computed from resourceVersion from.
func (e *kvsMemory) wrote(from string) {
	if e.wroteFrom == nil {
		e.wroteFrom = map[string]bool{}
	}
	e.wroteFrom[from] = true
}

// stale reports whether kvs, read from the cache, predates one of our own writes to it (caughtUp forgets
// them once it does not). NOTE: a pass on a stale copy sends a write bound to lose its
// optimistic-lock race (make bench-scale measured 7 finalizer patches and 16 status updates per
// KubervisorService while 10,000 pods were adopted and the watch lagged); the pass waits for the cache
// instead. resourceVersions are opaque: only equality is used. Any other writer's change moves the
// resourceVersion on, so this never holds a pass back for longer than the watch's delay.
func (e *kvsMemory) stale(kvs *kvv1.KubervisorService) bool {
	return e.wroteFrom[kvs.ResourceVersion]
}

// caughtUp forgets our writes to the KubervisorService: the cache has shown them all.
func (e *kvsMemory) caughtUp() { e.wroteFrom = nil }

// lesson is what one pass learned, as values: the evaluation (schedule, detectors, storms, failureThreshold
// counts), the outcomes act reached (dated against memory), and the message of a floor restoration.
// Reconcile has kvsMemory.learn keep it once the pass's pod writes are done, in one place, before the status
// is built from memory. NOTE: a status write that fails after that keeps the lesson: the pod writes it reports
// were made, and the retry writes the same status without asking the detectors again (a storm is counted
// once, an ejection's decision is not lost).
type lesson struct {
	ev evaluation
	// outcomes are act's, dated (changedAt, decisions' since) against the outcomes in memory.
	outcomes map[string]breakerOutcome
	// breach is the BelowFloor message after this pass's restoration step; nil when the step left it as it was.
	breach *string
	// retry is set when act failed to carry out the plan: the breakers it evaluated keep their past due time
	// and are due again at once instead of after their period (SPEC §5.11).
	retry bool
}

// learn keeps the lesson of a pass.
func (e *kvsMemory) learn(l *lesson) {
	if l.breach != nil {
		e.breach = *l.breach
	}
	maps.Copy(e.outcomes, l.outcomes)
	if l.ev.endpointGen != e.endpointGen && len(l.ev.detectors) > 0 {
		// The detector endpoints changed: the detectors built before are built again at their turn.
		e.detectors, e.endpointGen = map[string]detector.Detector{}, l.ev.endpointGen
	}
	maps.Copy(e.detectors, l.ev.detectors)
	rememberStorms(l.ev.breakers, e.storms, e.stormActive)
	for _, b := range l.ev.breakers {
		if b.keepStreaks {
			e.streaks[b.name] = b.streaks
		}
	}
	for name, due := range l.ev.schedule {
		if l.retry && slices.ContainsFunc(l.ev.breakers, func(b breakerEval) bool { return b.name == name }) {
			continue
		}
		e.next[name] = due
	}
}

// rememberStorms writes the storm times of the breakers whose guards ran into storms and stormActive.
func rememberStorms(evals []breakerEval, storms map[string]time.Time, active map[string]bool) {
	for _, b := range evals {
		if !b.guarded {
			continue
		}
		if b.stormAt.IsZero() {
			delete(storms, b.name)
		} else {
			storms[b.name] = b.stormAt
		}
		active[b.name] = b.stormActive
	}
}

func newMemory() *memory {
	return &memory{entries: map[types.NamespacedName]*kvsMemory{}, flights: newInFlight()}
}

// of returns the memory of a KubervisorService, reset when its spec generation changed so that a new spec
// takes effect within one period (detectors rebuilt, outcomes of the old spec dropped, queries in flight
// for the old spec cancelled).
//
// NOTE: a KubervisorService evaluated before (after a restart: its status has breakers) or whose spec changed
// has its first evaluations spread over their periods, at most MaxFirstEvaluationSpread (spreadOffset):
// 1,000 KubervisorServices do not all query their detectors in the same second after a restart or a bulk
// apply, and an edit still takes effect within seconds. A new one is evaluated at once.
func (m *memory) of(kvs *kvv1.KubervisorService, now time.Time) *kvsMemory {
	m.mu.Lock()
	defer m.mu.Unlock()
	key := types.NamespacedName{Namespace: kvs.Namespace, Name: kvs.Name}
	e, ok := m.entries[key]
	if !ok || e.generation != kvs.Generation {
		var expected map[string]podWrite
		if ok {
			expected = e.expected
			m.flights.drop(key)
		}
		e = &kvsMemory{expected: expected, generation: kvs.Generation, next: map[string]time.Time{}, detectors: map[string]detector.Detector{},
			outcomes: map[string]breakerOutcome{}, storms: stormsOf(kvs.Status.Breakers, now), stormActive: map[string]bool{},
			streaks: map[string]map[string]int{}, spread: ok || len(kvs.Status.Breakers) > 0, uid: string(kvs.UID)}
		m.entries[key] = e
	}
	return e
}

// expect remembers the pass's traffic writes until the cache shows them.
func (e *kvsMemory) expect(writes []podWrite) {
	if len(writes) == 0 {
		return
	}
	if e.expected == nil {
		e.expected = make(map[string]podWrite, len(writes))
	}
	for _, w := range writes {
		e.expected[w.pod] = w
	}
}

// overlay counts the remembered writes the cache has not shown yet into pods, in place: a pod the cache
// still shows at the resourceVersion a write was made on is replaced by a copy carrying the written traffic
// label. An expectation goes once the cache shows the pod at any other version (the write, or a later
// change: a pod's resourceVersion never goes back), or no longer shows the pod. NOTE: resourceVersions are
// compared for equality only; the optimistic lock of the write makes its base the one version that predates it.
func (e *kvsMemory) overlay(pods []*corev1.Pod) {
	if len(e.expected) == 0 {
		return
	}
	seen := make(map[string]bool, len(e.expected))
	for i, p := range pods {
		w, ok := e.expected[p.Name]
		if !ok {
			continue
		}
		seen[p.Name] = true
		if p.ResourceVersion != w.base || podstate.TrafficOf(p) == w.traffic {
			delete(e.expected, p.Name)
			continue
		}
		c := p.DeepCopy()
		metav1.SetMetaDataLabel(&c.ObjectMeta, kvv1.LabelTraffic, w.traffic)
		pods[i] = c
	}
	for name := range e.expected {
		if !seen[name] {
			delete(e.expected, name)
		}
	}
}

// stormsOf seeds a new memory's storm times from status: lastStormTime, or now for a breaker whose last
// result is a storm (under way or in its cooldown: the cooldown then counts from now, which delays an
// ejection and never hastens one).
func stormsOf(breakers []kvv1.BreakerStatus, now time.Time) map[string]time.Time {
	out := map[string]time.Time{}
	for _, b := range breakers {
		switch {
		case b.LastResult == kvv1.ResultStormSuspected:
			out[b.Name] = now
		case b.LastStormTime != nil:
			out[b.Name] = b.LastStormTime.Time
		}
	}
	return out
}

// MaxFirstEvaluationSpread bounds the spread of first evaluations (spreadOffset).
const MaxFirstEvaluationSpread = 5 * time.Second

// spreadOffset is where in its period a breaker's first evaluation falls after a restart or a spec change:
// fixed by the KubervisorService's UID and the breaker's name, so the same object always lands at the same
// offset and different ones spread evenly.
func spreadOffset(uid, breakerName string, period time.Duration) time.Duration {
	period = min(period, MaxFirstEvaluationSpread)
	if period <= 0 {
		return 0
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(uid + "/" + breakerName)) // a hash.Hash never fails to write
	return time.Duration(h.Sum64() % uint64(period))
}

// forget drops the memory of a KubervisorService and cancels its queries in flight.
func (m *memory) forget(key types.NamespacedName) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.entries, key)
	m.flights.drop(key)
}

// wakeGrid is the grain of the breakers' wake-ups: a requeue is for the first instant at or after the due
// time that is a multiple of it.
//
// NOTE: timer coalescing. 1,000 KubervisorServices at a 5 s period are due at 200 distinct instants a
// second, and each instant wakes the work queue's timer, its goroutine and a worker on its own; on a 20 ms
// grid the due passes of one grain wake together (at most 50 wake-ups a second). An evaluation starts at
// most one grain after its due time (kubervisor_evaluation_lateness_seconds counts it), never before.
const wakeGrid = 20 * time.Millisecond

// nextDue is when a breaker due at due (zero: not scheduled) and evaluated at now is due again. An
// evaluation less than one grain late keeps its schedule, due + period: the wake grid adds nothing to the
// period (a 5 s breaker is evaluated every 5 s, not every 5.02 s). A later one, or a first one, starts a
// schedule on the grid from now (no burst to catch up).
func nextDue(due, now time.Time, period time.Duration) time.Time {
	if !due.IsZero() && !now.Before(due) && now.Sub(due) < wakeGrid {
		return due.Add(period)
	}
	return onGrid(now.Add(period))
}

// onGrid is the first instant of the wake grid at or after t.
func onGrid(t time.Time) time.Time {
	if on := t.Truncate(wakeGrid); on.Before(t) {
		return on.Add(wakeGrid)
	}
	return t
}

// wait returns the time from now to the next due breaker, rounded up to the wake grid, or zero when none
// is scheduled. A breaker whose query is in flight (flying: by breaker, when the pass gives up on its
// answer) is due at that time instead: its answer wakes the KubervisorService sooner, and a breaker left due
// would requeue the pass at once, again and again, while the query runs.
func (e *kvsMemory) wait(now time.Time, flying map[string]time.Time) time.Duration {
	var soonest time.Duration
	for name, next := range e.next {
		if _, ok := flying[name]; !ok {
			soonest = sooner(soonest, next, now)
		}
	}
	for _, next := range flying {
		soonest = sooner(soonest, next, now)
	}
	return soonest
}

// sooner is the soonest of the wait soonest (zero: none) and the wait for next, rounded up to the wake grid.
func sooner(soonest time.Duration, next, now time.Time) time.Duration {
	d := max(onGrid(next).Sub(now), time.Millisecond)
	if soonest == 0 || d < soonest {
		return d
	}
	return soonest
}
