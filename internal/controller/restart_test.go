package controller

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/podstate"
)

// A restart of the manager is a new reconciler (its memory empty) on the same API server.

// TestStormCooldownSurvivesARestart: a storm, then its cooldown; the manager restarts during the cooldown:
// the new one ejects nothing until a whole cooldown has passed (counted from its start, never less), and
// neither the storm nor the cooldown rewrites the status at every evaluation.
func TestStormCooldownSurvivesARestart(t *testing.T) {
	fleet := []client.Object{testService(true)}
	for i := range 8 {
		fleet = append(fleet, testPod(fmt.Sprintf("p%d", i), "yes", nil))
	}
	h := newHarness(t, append(fleet, testKVS(func(k *kvv1.KubervisorService) {
		k.Spec.Breakers[0].StormCooldown = new(intstr.FromString("1m"))
	}, "b"))...)
	storm := []string{"p0", "p1", "p2", "p3", "p4"}
	period := func(h *harness) { h.clock.Step(5 * time.Second) }
	stormEvent := "Warning StormSuspected Evaluate KubervisorService/kvs: Breaker b: 5 of 8 Ready pods anomalous, more than " +
		"maxAnomalousPercent 50%: the detector is suspect, nobody is ejected"
	runSteps(t, h, []step{
		{name: "a storm", answer: storm, wantCalls: 1, wantStatusWrites: 1, wantEvents: []string{stormEvent}},
		{name: "the storm lasts: nothing written", mutate: period, wantCalls: 1},
		{name: "the storm is over, its cooldown starts: lastStormTime written", mutate: period, answer: []string{"p1"}, wantCalls: 1,
			wantStatusWrites: 1, wantTraffic: map[string]string{"p1": "yes"}},
		{name: "the cooldown lasts: nothing written", mutate: period, wantCalls: 1, wantTraffic: map[string]string{"p1": "yes"}},
	})
	if got := h.kvs().Status.Breakers[0].LastStormTime; got == nil || !got.Equal(new(apiTime(t0.Add(5*time.Second)))) {
		t.Fatalf("lastStormTime = %v, want the last storm evaluation, %v", got, apiTime(t0.Add(5*time.Second)))
	}

	// The manager restarts 20s after the storm (first evaluations spread over the period).
	h.clock.Step(5 * time.Second)
	restarted := h.kvsReconciler()
	writes := 0
	for range 12 {
		res, err := h.pass(restarted)
		if err != nil {
			t.Fatal(err)
		}
		if got := h.traffic("p1")[0]; got != "yes" {
			t.Fatalf("%s after the restart: p1 ejected during the cooldown", h.clock.Since(t0.Add(20*time.Second)))
		}
		writes += h.statusWrites
		h.clock.Step(max(res.RequeueAfter, time.Second))
	}
	// One write: the first evaluation after the restart says when the cooldown, counted from the restart, ends.
	if writes > 1 {
		t.Errorf("%d status writes during the cooldown after the restart, want at most 1", writes)
	}
	// A whole cooldown after the restart: judged again, ejected.
	for range 10 {
		res, err := h.pass(restarted)
		if err != nil {
			t.Fatal(err)
		}
		if h.traffic("p1")[0] == "no" {
			if since := h.clock.Since(t0.Add(20 * time.Second)); since < time.Minute {
				t.Fatalf("ejected %s after the restart, before a whole cooldown", since)
			}
			return
		}
		h.clock.Step(res.RequeueAfter)
	}
	t.Fatalf("p1 never ejected after the cooldown; status %+v", h.kvs().Status.Breakers)
}

// TestRestartDoesNotFlapReady: a restarted manager's first passes, before any breaker is evaluated again,
// keep Ready as it was (no Pending), and write nothing while nothing changed.
func TestRestartDoesNotFlapReady(t *testing.T) {
	for name, err := range map[string]error{"healthy": nil, "a failing detector": fmt.Errorf("connection refused")} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, testService(true), testPod("p0", "yes", nil), testPod("p1", "yes", nil), testKVS(nil, "b"))
			h.answer("b", err)
			mustPass(h, h.kvsReconciler())
			want := meta.FindStatusCondition(h.kvs().Status.Conditions, kvv1.ConditionReady)

			h.clock.Step(time.Second)
			restarted := h.kvsReconciler()
			calls := h.calls("b")
			if _, err := h.pass(restarted); err != nil {
				t.Fatal(err)
			}
			if h.calls("b") != calls {
				t.Fatalf("the first pass after the restart evaluated the breaker: the spread should delay it")
			}
			got := meta.FindStatusCondition(h.kvs().Status.Conditions, kvv1.ConditionReady)
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("Ready after the restart mismatch (-want +got):\n%s", d)
			}
			if h.statusWrites != 0 {
				t.Errorf("%d status writes by the first pass after the restart, want 0", h.statusWrites)
			}
		})
	}
}

// TestOverlay: the pass's own traffic writes count until the cache shows the pod past the version they were
// made on (expectations).
func TestOverlay(t *testing.T) {
	pod := func(name, rv, traffic string) *corev1.Pod {
		p := testPod(name, traffic, nil)
		p.ResourceVersion = rv
		return p
	}
	mem := &kvsMemory{}
	mem.expect([]podWrite{{pod: "stale", base: "10", traffic: "no"}, {pod: "caught-up", base: "20", traffic: "no"},
		{pod: "moved-on", base: "30", traffic: "no"}, {pod: "gone", base: "40", traffic: "yes"}})
	cached := []*corev1.Pod{pod("stale", "10", "yes"), pod("caught-up", "21", "no"), pod("moved-on", "35", "yes"), pod("other", "1", "yes")}
	original := cached[0]
	mem.overlay(cached)
	got := map[string]string{}
	for _, p := range cached {
		got[p.Name] = podstate.TrafficOf(p)
	}
	want := map[string]string{"stale": "no", "caught-up": "no", "moved-on": "yes", "other": "yes"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("traffic after the overlay mismatch (-want +got):\n%s", d)
	}
	if podstate.TrafficOf(original) != "yes" {
		t.Errorf("the overlay wrote into the cache's object")
	}
	if d := cmp.Diff([]string{"stale"}, slices.Sorted(maps.Keys(mem.expected))); d != "" {
		t.Errorf("expectations left mismatch (-want +got):\n%s", d)
	}
}

// TestEventsAfterTheStatusWrite: the events that report an outcome go out once the status recording it is
// written (a conflicted write holds them for the next pass, which sends them once), and only when what they
// report changes.
func TestEventsAfterTheStatusWrite(t *testing.T) {
	fleet := []client.Object{testService(true)}
	for i := range 8 {
		fleet = append(fleet, testPod(fmt.Sprintf("p%d", i), "yes", nil))
	}
	h := newHarness(t, append(fleet, testKVS(func(k *kvv1.KubervisorService) {
		k.Spec.Breakers[0].MinPodsAvailableCount = new(int32(8))
	}, "b"))...)
	period := func(h *harness) { h.clock.Step(5*time.Second + wakeGrid) }
	withheld := "Warning EjectionWithheld Evaluate KubervisorService/kvs: Breaker b kept 1 anomalous pods in traffic to hold the floor: p1"
	failed := "Warning DetectorFailed Evaluate KubervisorService/kvs: Breaker b: timeout; no pod is ejected on this evaluation"
	runSteps(t, h, []step{
		{name: "withheld, but the status write fails: no event yet", answer: []string{"p1"}, wantCalls: 1, wantStatusWrites: 1,
			mutate: func(h *harness) { h.failStatus = 1 }, wantErr: true},
		{name: "the next pass writes the status, then sends the event", mutate: func(h *harness) { h.clock.Step(conflictRetry) },
			wantStatusWrites: 1, wantEvents: []string{withheld}},
		{name: "withheld again: no event", mutate: period, wantCalls: 1},
		{name: "withheld again: no event", mutate: period, wantCalls: 1},
		{name: "the detector fails: one event", mutate: func(h *harness) { period(h); h.answer("b", fmt.Errorf("timeout")) }, wantCalls: 1,
			wantStatusWrites: 1, wantEvents: []string{failed}},
		{name: "fails the same way: no event", mutate: period, wantCalls: 1},
		{name: "withheld again: the event again (it changed)", mutate: period, answer: []string{"p1"}, wantCalls: 1,
			wantStatusWrites: 1, wantEvents: []string{withheld}},
	})
}

// TestStatusPatchIsExact: the status patch sets the whole status, whatever the server holds: fields the
// desired status omits are removed (a plain merge patch would keep them), lists are replaced.
func TestStatusPatchIsExact(t *testing.T) {
	held := testKVS(nil, "b")
	held.Status = kvv1.KubervisorServiceStatus{ObservedGeneration: 1,
		Manual:   []kvv1.ManualHold{{Pod: "p0", By: "alice"}},
		Breakers: []kvv1.BreakerStatus{{Name: "b", LastResult: "OK", EjectedPods: []string{"p0", "p1"}}, {Name: "gone"}},
		Pods:     kvv1.PodCounts{Managed: 4, Ejected: 2}}
	h := newHarness(t, held)
	want := kvv1.KubervisorServiceStatus{ObservedGeneration: 2, Breakers: []kvv1.BreakerStatus{{Name: "b", LastResult: "NoData"}},
		Pods: kvv1.PodCounts{Managed: 3}}
	patch, err := statusPatch(&want)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.client.Status().Patch(context.Background(), testKVS(nil, "b"), patch); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, h.kvs().Status); d != "" {
		t.Errorf("status after the patch mismatch (-want +got):\n%s", d)
	}
}
