package controller

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/detector"
)

// memorySnapshot is what evaluate could write into a KubervisorService's memory.
type memorySnapshot struct {
	Next        map[string]time.Time
	Storms      map[string]time.Time
	StormActive map[string]bool
	Streaks     map[string]map[string]int
	Detectors   []string
	Outcomes    []string
}

func snapshot(e *kvsMemory) memorySnapshot {
	s := memorySnapshot{Next: maps.Clone(e.next), Storms: maps.Clone(e.storms), StormActive: maps.Clone(e.stormActive),
		Streaks: map[string]map[string]int{}}
	for b, st := range e.streaks {
		s.Streaks[b] = maps.Clone(st)
	}
	for b := range e.detectors {
		s.Detectors = append(s.Detectors, b)
	}
	for b, o := range e.outcomes {
		s.Outcomes = append(s.Outcomes, fmt.Sprintf("%s=%s@%s", b, o.lastResult(), o.changedAt))
	}
	slices.Sort(s.Detectors)
	slices.Sort(s.Outcomes)
	return s
}

// TestEvaluateWritesNothing: evaluate returns what it learned (the schedule, a detector built, a storm, the
// failureThreshold counts) and leaves the memory as it was; learn keeps it. The one thing it writes is the book
// of queries in flight (flights.go), which is not a lesson: it starts its queries there and takes their
// answers out, so a pass whose detectors all answered leaves it empty.
func TestEvaluateWritesNothing(t *testing.T) {
	fleet := []client.Object{testService(true)}
	for i := range 8 {
		fleet = append(fleet, testPod(fmt.Sprintf("p%d", i), "yes", nil))
	}
	kvs := testKVS(func(k *kvv1.KubervisorService) {
		k.Spec.Breakers[0].StormCooldown = new(intstr.FromString("1m"))
		k.Spec.Breakers[1].FailureThreshold = new(int32(3))
	}, "storm", "sustained", "fresh")
	h := newHarness(t, append(fleet, kvs)...)
	r := h.kvsReconciler()
	h.answer("storm", nil, "p0")
	h.answer("sustained", nil, "p1")
	mustPass(h, r)
	delete(r.memory.of(h.kvs(), t0).detectors, "fresh") // the next pass builds this one again

	h.clock.Step(5*time.Second + wakeGrid)
	h.answer("storm", nil, "p0", "p1", "p2", "p3", "p4")
	ctx := context.Background()
	k := h.kvs()
	mem := r.memory.of(k, h.clock.Now())
	before := snapshot(mem)
	obs, err := r.observe(ctx, k)
	if err != nil {
		t.Fatal(err)
	}
	ev := r.evaluate(ctx, k, obs, mem, h.clock.Now())
	if d := cmp.Diff(before, snapshot(mem)); d != "" {
		t.Errorf("evaluate wrote into the memory (-before +after):\n%s", d)
	}
	if n := len(r.memory.flights.flights); n != 0 || len(ev.flying) != 0 {
		t.Errorf("evaluate left %d queries in the book and %v in flight, want none: every detector answered", n, ev.flying)
	}
	if len(ev.schedule) != 3 || len(ev.detectors) != 1 || ev.detectors["fresh"] == nil {
		t.Errorf("evaluation schedules %v and built detectors %v; want the three breakers and the fresh one's", ev.schedule, ev.detectors)
	}
	if b := ev.breakers[0]; !b.guarded || !b.stormActive || !b.stormAt.Equal(h.clock.Now()) {
		t.Errorf("the storm breaker's evaluation = guarded %t, active %t, at %s; want a storm now", b.guarded, b.stormActive, b.stormAt)
	}
	if b := ev.breakers[1]; !b.keepStreaks || b.streaks["p1"] != 2 {
		t.Errorf("the sustained breaker's counts = %v (keep %t), want p1 at 2", b.streaks, b.keepStreaks)
	}

	mem.learn(&lesson{ev: ev})
	after := snapshot(mem)
	if !after.Storms["storm"].Equal(h.clock.Now()) || !after.StormActive["storm"] || after.Streaks["sustained"]["p1"] != 2 ||
		!after.Next["storm"].Equal(ev.schedule["storm"]) || len(after.Detectors) != 3 {
		t.Errorf("memory after learn = %+v; want the storm, the counts, the schedule and the detector kept", after)
	}
	retried := r.memory.of(k, h.clock.Now())
	due := retried.next["sustained"]
	retried.learn(&lesson{ev: evaluation{breakers: []breakerEval{{name: "sustained"}},
		schedule: map[string]time.Time{"sustained": due.Add(time.Hour)}}, retry: true})
	if !retried.next["sustained"].Equal(due) {
		t.Errorf("a lesson whose act failed rescheduled the breaker it evaluated to %s (was %s)", retried.next["sustained"], due)
	}
}

// gatedDetector holds every query until the test releases them, counting those in flight.
type gatedDetector struct {
	mu            sync.Mutex
	inFlight, max int
	release       chan struct{}
}

func (g *gatedDetector) Detect(ctx context.Context, _ detector.Request) (detector.Result, error) {
	g.mu.Lock()
	g.inFlight++
	g.max = max(g.max, g.inFlight)
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.inFlight--
		g.mu.Unlock()
	}()
	select {
	case <-g.release:
	case <-ctx.Done():
		return detector.Result{}, ctx.Err()
	}
	return detector.Result{NoData: true}, nil
}

func (g *gatedDetector) peak() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.max
}

// TestBreakersOfAPassAreAskedAtOnce: the detectors of one pass's breakers are asked concurrently, at most
// maxQueriesPerPass at a time (sequential queries would never have two in flight).
func TestBreakersOfAPassAreAskedAtOnce(t *testing.T) {
	var names []string
	for i := range 12 {
		names = append(names, fmt.Sprintf("b%d", i))
	}
	h := newHarness(t, testService(true), testPod("p0", "yes", nil), testKVS(nil, names...))
	g := &gatedDetector{release: make(chan struct{})}
	opts := h.opts()
	opts.NewDetector = func(*kvv1.BreakerStrategy, detector.Options) (detector.Detector, error) { return g, nil }
	r := NewKubervisorServiceReconciler(h.client, liveReader{Reader: h.client, h: h}, h.events, opts)
	done := make(chan error, 1)
	go func() {
		_, err := h.pass(r)
		done <- err
	}()
	deadline := time.Now().Add(30 * time.Second)
	for g.peak() < maxQueriesPerPass && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	close(g.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := g.peak(); got != maxQueriesPerPass {
		t.Errorf("%d queries in flight at most, want %d (concurrent, bounded)", got, maxQueriesPerPass)
	}
	if got := len(h.kvs().Status.Breakers); got != len(names) {
		t.Errorf("%d breakers in status, want %d", got, len(names))
	}
}
