package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	ctrl "sigs.k8s.io/controller-runtime"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/detector"
)

// newFlight is a query of the book for uid and generation, its context's error reported by ctxErr.
func newFlight(uid types.UID, generation int64) (*flight, func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	return &flight{uid: uid, generation: generation, cancel: cancel, done: make(chan struct{})}, ctx.Err
}

// TestInFlightBook: a breaker has one query at a time; its answer is taken once, and wakes the
// KubervisorService only if a pass found it running; a query of another UID or generation is cancelled and
// its answer dropped; drop cancels one KubervisorService's queries only.
func TestInFlightBook(t *testing.T) {
	book := newInFlight()
	kvs := types.NamespacedName{Namespace: testNS, Name: "kvs"}
	k := flightKey{kvs: kvs, breaker: "b"}

	first, firstErr := newFlight("u1", 1)
	if !book.start(k, first) {
		t.Fatal("the first query was not started")
	}
	if again, _ := newFlight("u1", 1); book.start(k, again) {
		t.Error("a second query of the same breaker was started while the first is in flight")
	}
	if f, state := book.take(k, "u1", 1); state != flying || f != first {
		t.Fatalf("take of a running query = %v, want flying (the first query)", state)
	}
	if !book.land(k, first, detector.Result{NoData: true}, nil) {
		t.Error("an answer a pass waited for in vain did not wake its KubervisorService")
	}
	if f, state := book.take(k, "u1", 1); state != landed || f != first || !f.res.NoData {
		t.Fatalf("take of an answered query = %v, want landed with its answer", state)
	}
	if _, state := book.take(k, "u1", 1); state != noFlight {
		t.Errorf("an answer was taken twice (%v)", state)
	}
	if firstErr() != nil {
		t.Errorf("a query judged was cancelled: %v", firstErr())
	}

	// Answered before any pass looked: the pass that waits for it takes it; no wake-up.
	quick, _ := newFlight("u1", 1)
	book.start(k, quick)
	if book.land(k, quick, detector.Result{}, nil) {
		t.Error("an answer nobody gave up on woke its KubervisorService")
	}
	if _, state := book.take(k, "u1", 1); state != landed {
		t.Errorf("take = %v, want landed", state)
	}

	// The spec changed (generation 2), or the object was recreated (another UID): the old query is cancelled
	// and its answer, when it comes, is judged by nobody.
	for _, c := range []struct {
		name       string
		uid        types.UID
		generation int64
	}{{"spec change", "u1", 2}, {"recreated", "u2", 1}} {
		old, oldErr := newFlight("u1", 1)
		book.start(k, old)
		if _, state := book.take(k, c.uid, c.generation); state != noFlight {
			t.Errorf("%s: take = %v, want noFlight", c.name, state)
		}
		if !errors.Is(oldErr(), context.Canceled) {
			t.Errorf("%s: the old query was not cancelled", c.name)
		}
		if book.land(k, old, detector.Result{Anomalies: []detector.Anomaly{{Pod: "p0"}}}, nil) {
			t.Errorf("%s: the old query's answer woke its KubervisorService", c.name)
		}
		if _, state := book.take(k, "u1", 1); state != noFlight {
			t.Errorf("%s: the old query's answer is still in the book (%v)", c.name, state)
		}
	}
	// A query started for a new generation replaces and cancels one of the old.
	old, oldErr := newFlight("u1", 1)
	book.start(k, old)
	if fresh, _ := newFlight("u1", 2); !book.start(k, fresh) || !errors.Is(oldErr(), context.Canceled) {
		t.Error("a query of generation 2 did not replace and cancel the one of generation 1")
	}

	// drop cancels the queries of one KubervisorService, not another's.
	other := flightKey{kvs: types.NamespacedName{Namespace: testNS, Name: "other"}, breaker: "b"}
	kept, keptErr := newFlight("u3", 1)
	book.start(other, kept)
	mine, mineErr := newFlight("u1", 2)
	book.start(flightKey{kvs: kvs, breaker: "c"}, mine)
	book.drop(kvs)
	if !errors.Is(mineErr(), context.Canceled) || keptErr() != nil {
		t.Errorf("drop: this KubervisorService's query cancelled %v, the other's %v; want it cancelled, the other running",
			mineErr(), keptErr())
	}
	if _, state := book.take(other, "u3", 1); state != flying || len(book.flights) != 1 {
		t.Errorf("drop left %d queries and the other's %v; want the other's only, running", len(book.flights), state)
	}
}

// TestInFlightBookStop: stopping the book (the manager stops) cancels every query, and none starts after.
func TestInFlightBookStop(t *testing.T) {
	book := newInFlight()
	a, aErr := newFlight("u1", 1)
	b, bErr := newFlight("u2", 1)
	book.start(flightKey{kvs: types.NamespacedName{Namespace: testNS, Name: "a"}, breaker: "x"}, a)
	book.start(flightKey{kvs: types.NamespacedName{Namespace: testNS, Name: "b"}, breaker: "x"}, b)
	book.stop()
	if !errors.Is(aErr(), context.Canceled) || !errors.Is(bErr(), context.Canceled) || len(book.flights) != 0 {
		t.Errorf("after stop: queries %v, %v, %d in the book; want both cancelled, none left", aErr(), bErr(), len(book.flights))
	}
	late, _ := newFlight("u1", 1)
	if book.start(flightKey{kvs: types.NamespacedName{Namespace: testNS, Name: "a"}, breaker: "x"}, late) {
		t.Error("a query was started after stop")
	}
}

// heldDetector holds each query until the test answers it on answers (the pods flagged), telling asked when
// a query comes and cancelled when one's context ends first.
type heldDetector struct {
	calls     atomic.Int32
	asked     chan struct{}
	answers   chan []string
	cancelled chan error
}

func newHeldDetector() *heldDetector {
	return &heldDetector{asked: make(chan struct{}, 10), answers: make(chan []string), cancelled: make(chan error, 10)}
}

func (d *heldDetector) Detect(ctx context.Context, req detector.Request) (detector.Result, error) {
	d.calls.Add(1)
	d.asked <- struct{}{}
	select {
	case pods := <-d.answers:
		var res detector.Result
		for _, p := range pods {
			if _, ok := req.Pods[p]; ok {
				res.Anomalies = append(res.Anomalies, detector.Anomaly{Pod: p, Reason: "flagged"})
			}
		}
		res.NoData = len(res.Anomalies) == 0
		return res, nil
	case <-ctx.Done():
		d.cancelled <- ctx.Err()
		return detector.Result{}, ctx.Err()
	}
}

// within fails the test unless ch delivers within a minute (a bound for a hang, not a timing assertion).
func within[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(time.Minute):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

// passGivingUp runs a pass whose held detector does not answer: once the query is asked and the pass waits on
// its clock, the clock moves queryWait on, and the pass returns without the answer.
func passGivingUp(t *testing.T, h *harness, r *KubervisorServiceReconciler, d *heldDetector) ctrl.Result {
	t.Helper()
	type result struct {
		res ctrl.Result
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := h.pass(r)
		done <- result{res, err}
	}()
	within(t, d.asked, "the held query")
	for deadline := time.Now().Add(time.Minute); !h.clock.HasWaiters(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the pass never waited for its query")
		}
	}
	h.clock.Step(queryWait)
	got := within(t, done, "the pass")
	if got.err != nil {
		t.Fatal(got.err)
	}
	return got.res
}

// heldHarness is a KubervisorService with breakers "slow" (held) and "fast" (answers at once) over four pods.
func heldHarness(t *testing.T) (*harness, *KubervisorServiceReconciler, *heldDetector, chan types.NamespacedName) {
	h := newHarness(t, testService(true), testPod("p0", "yes", nil), testPod("p1", "yes", nil), testPod("p2", "yes", nil),
		testPod("p3", "yes", nil), testKVS(nil, "slow", "fast"))
	held := newHeldDetector()
	opts := h.opts()
	fake := opts.NewDetector
	opts.NewDetector = func(b *kvv1.BreakerStrategy, o detector.Options) (detector.Detector, error) {
		if b.Name == "slow" {
			return held, nil
		}
		return fake(b, o)
	}
	r := NewKubervisorServiceReconciler(h.client, liveReader{Reader: h.client, h: h}, h.events, opts)
	woken := make(chan types.NamespacedName, 10)
	r.wake = func(k types.NamespacedName) { woken <- k }
	return h, r, held, woken
}

func breakerResults(k *kvv1.KubervisorService) string {
	out := ""
	for _, b := range k.Status.Breakers {
		out += fmt.Sprintf("%s=%s ", b.Name, b.LastResult)
	}
	return out
}

// TestQueryAnsweredAfterItsPass: a pass does not wait for a query longer than queryWait; the breaker is then
// not judged (the other is), stays due, is not asked again while its query runs, and its answer wakes the
// KubervisorService and is judged once by the next pass.
func TestQueryAnsweredAfterItsPass(t *testing.T) {
	h, r, held, woken := heldHarness(t)
	h.answer("fast", nil, "p0")

	res := passGivingUp(t, h, r, held)
	if got := h.traffic("p0", "p1"); got[0] != kvv1.TrafficNo || got[1] != kvv1.TrafficYes {
		t.Errorf("traffic = %v, want p0 ejected by the breaker that answered, p1 in", got)
	}
	if got := breakerResults(h.kvs()); got != "fast=OK " {
		t.Errorf("breakers in status: %q, want fast only (slow not judged yet)", got)
	}
	if res.RequeueAfter <= time.Millisecond || res.RequeueAfter > 5*time.Second+wakeGrid {
		t.Errorf("requeue after %s, want by the query's 5s timeout, not at once", res.RequeueAfter)
	}

	// A pass while the query runs (a pod event): the breaker is not asked again, nor judged.
	h.clock.Step(time.Second)
	mustPass(h, r)
	if n := held.calls.Load(); n != 1 {
		t.Errorf("the held breaker was asked %d times, want 1 (one query in flight)", n)
	}
	if got := breakerResults(h.kvs()); got != "fast=OK " {
		t.Errorf("breakers in status: %q, want fast only", got)
	}
	select {
	case k := <-woken:
		t.Fatalf("woken (%v) before the query answered", k)
	default:
	}

	// The answer comes: it wakes the KubervisorService, whose next pass judges it with the pods it sees.
	held.answers <- []string{"p1"}
	if k := within(t, woken, "the wake-up"); k.Name != "kvs" {
		t.Errorf("woke %v, want kvs", k)
	}
	mustPass(h, r)
	if got := h.traffic("p1"); got[0] != kvv1.TrafficNo {
		t.Errorf("p1 traffic = %v, want ejected by the late answer", got)
	}
	if got := breakerResults(h.kvs()); got != "slow=OK fast=OK " {
		t.Errorf("breakers in status: %q, want both judged", got)
	}
	if n := len(r.memory.flights.flights); n != 0 {
		t.Errorf("%d queries left in the book, want none (the answer is taken)", n)
	}
	// Judged once: the breaker is scheduled again one period after its query was asked.
	mem := r.memory.of(h.kvs(), h.clock.Now())
	if want := onGrid(t0.Add(5 * time.Second)); !mem.next["slow"].Equal(want) {
		t.Errorf("slow due at %s, want %s (a period after it was asked)", mem.next["slow"], want)
	}
	mustPass(h, r)
	if n := held.calls.Load(); n != 1 || len(h.patches) != 0 || h.statusWrites != 0 {
		t.Errorf("a pass after the answer asked %d times, patched %v, wrote status %d times; want nothing", n, h.patches, h.statusWrites)
	}
}

// TestStaleAnswerIsAskedAgain: an answer that waited longer than the breaker's period for a pass (a
// backed-up work queue, a wake-up lost) is not judged: the breaker is asked again, and the new answer is.
func TestStaleAnswerIsAskedAgain(t *testing.T) {
	h, r, held, woken := heldHarness(t)
	passGivingUp(t, h, r, held)
	held.answers <- []string{"p1"}
	within(t, woken, "the wake-up")

	// No pass for longer than the period (5s) after the answer came.
	h.clock.Step(5*time.Second + time.Millisecond)
	passGivingUp(t, h, r, held)
	if got := h.traffic("p1"); got[0] != kvv1.TrafficYes {
		t.Errorf("p1 traffic = %v: an answer older than the period was judged", got)
	}
	if n := held.calls.Load(); n != 2 {
		t.Errorf("the breaker was asked %d times, want 2 (asked again in place of the stale answer)", n)
	}
	if got := breakerResults(h.kvs()); strings.Contains(got, "slow=") {
		t.Errorf("breakers in status: %q, want fast only (slow's stale answer not judged)", got)
	}

	// The new answer, judged at once, is.
	held.answers <- []string{"p1"}
	within(t, woken, "the second wake-up")
	mustPass(h, r)
	if got := h.traffic("p1"); got[0] != kvv1.TrafficNo {
		t.Errorf("p1 traffic = %v, want ejected by the fresh answer", got)
	}
}

// TestSpecChangeDropsQueriesInFlight: a query asked for an older spec is cancelled when the spec changes, and an
// answer that came for an older spec is never judged.
func TestSpecChangeDropsQueriesInFlight(t *testing.T) {
	h, r, held, _ := heldHarness(t)
	edit := func() {
		k := h.kvs()
		k.Generation++
		k.Spec.Breakers[1].EvaluationPeriod = new(intstr.FromInt32(6))
		if err := h.client.Update(context.Background(), k); err != nil {
			t.Fatal(err)
		}
	}

	// An answer that came before the spec changed is dropped.
	passGivingUp(t, h, r, held)
	held.answers <- []string{"p1"}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Millisecond) {
		r.memory.flights.mu.Lock()
		f := r.memory.flights.flights[flightKey{kvs: types.NamespacedName{Namespace: testNS, Name: "kvs"}, breaker: "slow"}]
		answered := f != nil && f.answered()
		r.memory.flights.mu.Unlock()
		if answered {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the answer never landed")
		}
	}
	edit()
	mustPass(h, r)
	if got := h.traffic("p1"); got[0] != kvv1.TrafficYes {
		t.Errorf("p1 traffic = %v: the answer asked for the old spec was judged", got)
	}
	if n := len(r.memory.flights.flights); n != 0 {
		t.Errorf("%d queries left in the book after the spec change, want none", n)
	}

	// A query running when the spec changes is cancelled.
	h.clock.Step(MaxFirstEvaluationSpread) // past the spread of the first evaluations of the new spec
	passGivingUp(t, h, r, held)
	if n := held.calls.Load(); n != 2 {
		t.Fatalf("the held breaker was asked %d times, want 2", n)
	}
	edit()
	mustPass(h, r)
	if err := within(t, held.cancelled, "the cancellation"); !errors.Is(err, context.Canceled) {
		t.Errorf("the old query ended with %v, want cancelled", err)
	}
	if got := h.traffic("p1"); got[0] != kvv1.TrafficYes {
		t.Errorf("p1 traffic = %v, want in traffic", got)
	}
}
