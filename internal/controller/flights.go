package controller

import (
	"context"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/kubervisor/kubervisor/internal/detector"
)

// queryWait bounds how long a pass waits for the detector queries it started: the answers in by then are
// judged in the pass, the others by a later one (doc.go). NOTE: it runs on the reconciler's clock, so a
// test on a fake clock waits for every answer unless it steps the clock; a healthy detector answers well
// within it, and a slow one costs its KubervisorService one more pass, never another's evaluation.
const queryWait = 200 * time.Millisecond

// wakeBuffer is the room of the channel through which answered queries wake their KubervisorService; a
// wake-up that finds it full is dropped (the requeue at the query's timeout picks the answer up).
const wakeBuffer = 1024

// flightKey names the query of one breaker of one KubervisorService.
type flightKey struct {
	kvs     types.NamespacedName
	breaker string
}

// flight is one detector query started by a pass, and its answer once it came.
type flight struct {
	// uid and generation are the KubervisorService's when the query was started: an answer is judged only
	// against the spec it was asked for.
	uid        types.UID
	generation int64
	// due is when the breaker was due (zero: never scheduled), at when the pass started the query; period
	// and timeout are the breaker's; the schedule of the evaluation that judges the answer counts from them.
	due, at         time.Time
	period, timeout time.Duration
	// built is the detector the pass built for the query (nil: memory's), with the generation of the
	// detector endpoints it was built with.
	built       detector.Detector
	endpointGen uint64
	// cancel ends the query (the book drops it); done is closed once the answer (res, err, and took, how
	// long the detector took) is set: it is read only after done is closed.
	cancel context.CancelFunc
	done   chan struct{}
	res    detector.Result
	err    error
	took   time.Duration
	// came is when the answer came (the reconciler's clock), set with took.
	came time.Time
	// wake is set by a pass that found the query still running: its answer then wakes the KubervisorService.
	wake bool
}

// staleAt reports whether the answer, at now, came longer ago than the breaker's period: it is then not
// judged, and the breaker is asked again. A pass judges an answer within moments of its coming (the answer
// wakes its KubervisorService); only a pass held up for longer (a backed-up work queue, a dropped wake-up
// whose requeue came late) can find one this old, and a newer question would have been asked by then.
func (f *flight) staleAt(now time.Time) bool { return now.Sub(f.came) > f.period }

// answered reports whether the query has its answer.
func (f *flight) answered() bool {
	select {
	case <-f.done:
		return true
	default:
		return false
	}
}

// inFlight is the book of the detector queries started by passes and not yet judged (doc.go). The memory
// owns it; its lock guards every entry, and the fields of a flight written after it is started (res, err,
// wake) are written under it.
type inFlight struct {
	mu      sync.Mutex
	flights map[flightKey]*flight
	// stopped is set when the manager stops: every query is cancelled and none is started again.
	stopped bool
}

func newInFlight() *inFlight { return &inFlight{flights: map[flightKey]*flight{}} }

// flightState is what the book holds of one breaker's query.
type flightState int

const (
	// noFlight: no query, or one for another UID or generation (dropped): the breaker may be asked.
	noFlight flightState = iota
	// flying: the query is running; the breaker is not asked again.
	flying
	// landed: the answer, taken out of the book: it is judged once.
	landed
)

// take returns the breaker's query asked for this UID and generation and its state. A landed answer is
// removed from the book; a running query is marked to wake its KubervisorService when it answers (the
// caller does not wait for it); a query asked for another UID or generation is cancelled and dropped.
func (b *inFlight) take(k flightKey, uid types.UID, generation int64) (*flight, flightState) {
	b.mu.Lock()
	defer b.mu.Unlock()
	f, ok := b.flights[k]
	switch {
	case !ok:
		return nil, noFlight
	case f.uid != uid || f.generation != generation:
		f.cancel()
		delete(b.flights, k)
		return nil, noFlight
	case f.answered():
		delete(b.flights, k)
		return f, landed
	default:
		f.wake = true
		return f, flying
	}
}

// start enters a query in the book, unless the breaker already has one for this UID and generation or the
// book is stopped (it is then not started: false). One for another UID or generation is cancelled and replaced.
func (b *inFlight) start(k flightKey, f *flight) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return false
	}
	if old, ok := b.flights[k]; ok {
		if old.uid == f.uid && old.generation == f.generation {
			return false
		}
		old.cancel()
	}
	b.flights[k] = f
	return true
}

// land records a query's answer and reports whether it is to wake its KubervisorService: a pass found it
// running, and the book still holds it (a dropped query's answer is judged by nobody).
func (b *inFlight) land(k flightKey, f *flight, res detector.Result, err error) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	f.res, f.err = res, err
	close(f.done)
	return f.wake && b.flights[k] == f
}

// drop cancels the queries of a KubervisorService and forgets them and their answers.
func (b *inFlight) drop(kvs types.NamespacedName) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for k, f := range b.flights {
		if k.kvs == kvs {
			f.cancel()
			delete(b.flights, k)
		}
	}
}

// stop cancels every query and starts none after: the manager is stopping, and no query is to outlive it
// by its timeout.
func (b *inFlight) stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stopped = true
	for k, f := range b.flights {
		f.cancel()
		delete(b.flights, k)
	}
}
