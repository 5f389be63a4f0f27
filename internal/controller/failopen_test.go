package controller

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/metrics"
	"github.com/kubervisor/kubervisor/internal/podstate"
)

// These tests drive the KubervisorService reconciler through the three behaviours of "never make an
// incident worse" (SPEC §5 steps 12–14) as sequences of steps: change the cluster or the clock, run one
// pass, check exactly what was sent (pod patches, events, status writes, detector calls) and what the
// status says.

// step is one pass of a sequence: mutate, then one reconcile, then the expectations (nil: not checked,
// except patches, events and status writes, which are always checked).
type step struct {
	name   string
	mutate func(h *harness)
	// answer, when set, is what breaker b's detector says from this step on.
	answer []string

	wantResult       *ctrl.Result
	wantErr          bool
	wantTraffic      map[string]string
	wantPatches      []string
	wantEvents       []string
	wantStatusWrites int
	wantCalls        int // detector calls of breaker b in this pass
	wantDecisions    []string
	wantEjection     string // EjectionAllowed as "Status/Reason: message" (message only when it has a ':' in the want)
	wantRestorations float64
}

func runSteps(t *testing.T, h *harness, steps []step) {
	t.Helper()
	r := h.kvsReconciler()
	restorations := restorationsSoFar(t)
	for _, s := range steps {
		if s.mutate != nil {
			s.mutate(h)
		}
		if s.answer != nil {
			h.answer("b", nil, s.answer...)
		}
		calls := h.calls("b")
		res, err := h.pass(r)
		if (err != nil) != s.wantErr {
			t.Fatalf("%s: Reconcile error %v, want an error: %t", s.name, err, s.wantErr)
		}
		if s.wantResult != nil {
			if d := cmp.Diff(*s.wantResult, res); d != "" {
				t.Errorf("%s: result mismatch (-want +got):\n%s", s.name, d)
			}
		}
		for pod, want := range s.wantTraffic {
			if got := h.traffic(pod)[0]; got != want {
				t.Errorf("%s: pod %s traffic %q, want %q", s.name, pod, got, want)
			}
		}
		if d := cmp.Diff(s.wantPatches, h.patches); d != "" {
			t.Errorf("%s: pod patches mismatch (-want +got):\n%s", s.name, d)
		}
		if d := cmp.Diff(s.wantEvents, h.events.take()); d != "" {
			t.Errorf("%s: events mismatch (-want +got):\n%s", s.name, d)
		}
		if h.statusWrites != s.wantStatusWrites {
			t.Errorf("%s: %d status writes, want %d", s.name, h.statusWrites, s.wantStatusWrites)
		}
		if got := h.calls("b") - calls; got != s.wantCalls {
			t.Errorf("%s: %d detector calls, want %d", s.name, got, s.wantCalls)
		}
		k := h.kvs()
		if s.wantDecisions != nil {
			var got []string
			for _, b := range k.Status.Breakers {
				for _, d := range b.Anomalies {
					got = append(got, fmt.Sprintf("%s/%s=%s: %s", b.Name, d.Pod, d.Decision, d.Reason))
				}
			}
			if d := cmp.Diff(s.wantDecisions, got, cmpopts.EquateEmpty()); d != "" {
				t.Errorf("%s: status anomalies mismatch (-want +got):\n%s", s.name, d)
			}
		}
		if s.wantEjection != "" {
			c := meta.FindStatusCondition(k.Status.Conditions, kvv1.ConditionEjectionAllowed)
			got := fmt.Sprintf("%s/%s: %s", c.Status, c.Reason, c.Message)
			if d := cmp.Diff(s.wantEjection, got); d != "" {
				t.Errorf("%s: EjectionAllowed mismatch (-want +got):\n%s", s.name, d)
			}
		}
		now := restorationsSoFar(t)
		if got := now - restorations; got != s.wantRestorations {
			t.Errorf("%s: kubervisor_floor_restorations_total grew by %v, want %v", s.name, got, s.wantRestorations)
		}
		restorations = now
	}
}

// restorationsSoFar reads kubervisor_floor_restorations_total of the tests' KubervisorService.
func restorationsSoFar(t *testing.T) float64 {
	t.Helper()
	var m dto.Metric
	if err := metrics.FloorRestorations.WithLabelValues(testNS, "kvs").Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// setReady sets a pod's Ready condition in the fake API server (the cache of these tests).
func setReady(h *harness, name string, ready bool) {
	h.t.Helper()
	p := &corev1.Pod{}
	if err := h.client.Get(context.Background(), client.ObjectKey{Namespace: testNS, Name: name}, p); err != nil {
		h.t.Fatal(err)
	}
	s := corev1.ConditionFalse
	if ready {
		s = corev1.ConditionTrue
	}
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: s, LastTransitionTime: metav1.NewTime(t0.Add(-time.Hour))}}
	if err := h.client.Status().Update(context.Background(), p); err != nil {
		h.t.Fatal(err)
	}
}

// ejectPatchAt is ejectPatch at another time than t0; kept drops the strategy label (already "b") and the
// fingerprint (already recorded).
func ejectPatchAt(name, rv string, retries int, at time.Time, kept bool) string {
	p := strings.Replace(ejectPatch(name, rv, retries), podstate.FormatTime(t0), podstate.FormatTime(at), 1)
	if kept {
		p = strings.Replace(p, `"kubervisor/strategy":"b",`, "", 1)
		p = strings.Replace(p, `"kubervisor/activator":"`+defaultFingerprint+`",`, "", 1)
	}
	return p
}

// restorePatch is the exact patch that puts an ejected pod back in traffic at now.
func restorePatch(name string, now time.Time) string {
	return fmt.Sprintf(`%s: {"metadata":{"annotations":{"controller.kubernetes.io/pod-deletion-cost":null,"kubervisor/restored-at":"%s"},`+
		`"labels":{"kubervisor/traffic":"yes"},"resourceVersion":"999"}}`, name, podstate.FormatTime(now))
}

// TestFloorRestoration: fewer pods serve than the floor for a reason that is not Kubervisor's (pods turn
// NotReady, are deleted); the pass that the pod event wakes restores pods the breakers ejected, unflagged
// first, then by earliest break-at, without waiting for the breaker to be due.
func TestFloorRestoration(t *testing.T) {
	floor4 := func(k *kvv1.KubervisorService) {
		k.Spec.Breakers[0].MinPodsAvailableCount = new(int32(4))
		k.Spec.Breakers[0].MaxAnomalousPercent = new(int32(100))
		k.Spec.DefaultActivator = &kvv1.ActivatorStrategy{Period: new(intstr.FromString("10m"))}
	}
	// p0..p3 serve; p4 and p5 were ejected by breaker b (p5 earlier).
	fleet := func() []client.Object {
		return []client.Object{testService(true), testPod("p0", "yes", nil), testPod("p1", "yes", nil), testPod("p2", "yes", nil),
			testPod("p3", "yes", nil), recordedPod("p4", 1, t0.Add(-10*time.Second)), recordedPod("p5", 2, t0.Add(-20*time.Second))}
	}
	due := ctrl.Result{RequeueAfter: 4 * time.Second}

	t.Run("a pod turns NotReady: the unflagged ejected pod is back in the same pass; the fleet recovers", func(t *testing.T) {
		h := newHarness(t, append(fleet(), testKVS(floor4, "b"))...)
		runSteps(t, h, []step{
			{
				name: "first pass: the detector flags p5, already out", answer: []string{"p5"},
				wantStatusWrites: 1, wantCalls: 1,
				wantEjection: "True/WithinFloor: No anomalous pod is withheld by the floor",
			},
			{
				name:   "p0 turns NotReady 1s later: 3 serve under a floor of 4; p4 (not flagged) comes back, p5 stays out",
				mutate: func(h *harness) { h.clock.Step(time.Second); setReady(h, "p0", false) },
				// Not due: the restoration does not wait for the breaker.
				wantResult:  &due,
				wantTraffic: map[string]string{"p4": "yes", "p5": "no"},
				wantPatches: []string{restorePatch("p4", t0.Add(time.Second))},
				wantEvents: []string{
					"Normal Restored Restore Pod/p4: Pod p4 back in traffic: 3 pods served, under the floor of 4 (breaker b ejected it)",
					"Warning FloorRestored Restore KubervisorService/kvs: 3 pods in traffic, under the floor of 4: restored 1 pods the breakers ejected: p4",
				},
				wantStatusWrites: 1,
				wantEjection:     "False/BelowFloor: 3 pods in traffic, under the floor of 4: restored 1 pods the breakers ejected: p4",
				wantRestorations: 1,
			},
			{
				name:         "nothing changed: nothing sent, BelowFloor stays",
				mutate:       func(h *harness) { h.clock.Step(time.Second) },
				wantEjection: "False/BelowFloor: 3 pods in traffic, under the floor of 4: restored 1 pods the breakers ejected: p4",
			},
			{
				name:             "p0 Ready again: 5 serve, above the floor; EjectionAllowed back to True",
				mutate:           func(h *harness) { setReady(h, "p0", true) },
				wantTraffic:      map[string]string{"p4": "yes", "p5": "no"},
				wantStatusWrites: 1,
				wantEjection:     "True/WithinFloor: No anomalous pod is withheld by the floor",
			},
			{
				name:   "due, the detector flags the restored p4: the quota ejects it again as usual",
				mutate: func(h *harness) { h.clock.Step(3 * time.Second) }, answer: []string{"p4"},
				wantTraffic: map[string]string{"p4": "no"},
				wantPatches: []string{ejectPatchAt("p4", "1000", 1, t0.Add(5*time.Second), true)},
				wantEvents: []string{
					"Normal Ejected Eject KubervisorService/kvs: Breaker b took pod p4 out of traffic: flagged",
					"Normal Ejected Eject Pod/p4: Breaker b took pod p4 out of traffic: flagged",
				},
				wantStatusWrites: 1, wantCalls: 1,
			},
		})
	})

	t.Run("two pods deleted: both ejected pods back, earliest break-at first; manual holds and paused pods named, left out", func(t *testing.T) {
		held := testPod("p6", "yes", nil)
		podstate.EjectByHand("alice", "debugging", time.Time{}, t0.Add(-time.Minute)).ApplyTo(&held.ObjectMeta)
		paused := ejectedPod("p7", 3, t0.Add(-time.Hour))
		paused.Labels[kvv1.LabelTraffic] = kvv1.TrafficPause
		h := newHarness(t, append(fleet(), held, paused, testKVS(floor4, "b"))...)
		msg := "2 pods in traffic, under the floor of 4: restored 2 pods the breakers ejected: p5, p4; left out of traffic " +
			"(held by hand: p6; paused: p7)"
		runSteps(t, h, []step{
			{name: "first pass", wantStatusWrites: 1, wantCalls: 1},
			{
				name: "p0 and p1 deleted",
				mutate: func(h *harness) {
					for _, n := range []string{"p0", "p1"} {
						if err := h.client.Delete(context.Background(), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: n}}); err != nil {
							h.t.Fatal(err)
						}
					}
				},
				wantTraffic: map[string]string{"p4": "yes", "p5": "yes", "p6": "no", "p7": "pause"},
				wantPatches: []string{restorePatch("p5", t0), restorePatch("p4", t0)},
				wantEvents: []string{
					"Normal Restored Restore Pod/p5: Pod p5 back in traffic: 2 pods served, under the floor of 4 (breaker b ejected it)",
					"Normal Restored Restore Pod/p4: Pod p4 back in traffic: 2 pods served, under the floor of 4 (breaker b ejected it)",
					"Warning FloorRestored Restore KubervisorService/kvs: " + msg,
				},
				wantStatusWrites: 1, wantEjection: "False/BelowFloor: " + msg, wantRestorations: 2,
			},
		})
	})

	// Restoring never punishes: in dry run and with an inactive selector (no traffic key in the Service's
	// selector) alike, the ejected pods are restored.
	for name, variant := range map[string]struct {
		service client.Object
		dryRun  bool
	}{
		"dry run: restored all the same (restoring never punishes)":                           {service: testService(true), dryRun: true},
		"inactive selector (no traffic key in the Service's selector): restored all the same": {service: testService(false)},
	} {
		t.Run(name, func(t *testing.T) {
			objs := fleet()
			objs[0] = variant.service
			h := newHarness(t, append(objs, testKVS(func(k *kvv1.KubervisorService) { floor4(k); k.Spec.DryRun = variant.dryRun }, "b"))...)
			runSteps(t, h, []step{
				{name: "first pass", wantStatusWrites: 1, wantCalls: 1},
				{
					name:        "p0 NotReady",
					mutate:      func(h *harness) { setReady(h, "p0", false) },
					wantTraffic: map[string]string{"p5": "yes", "p4": "no"},
					wantPatches: []string{restorePatch("p5", t0)},
					wantEvents: []string{
						"Normal Restored Restore Pod/p5: Pod p5 back in traffic: 3 pods served, under the floor of 4 (breaker b ejected it)",
						"Warning FloorRestored Restore KubervisorService/kvs: 3 pods in traffic, under the floor of 4: restored 1 pods the breakers ejected: p5",
					},
					wantStatusWrites: 1, wantRestorations: 1,
				},
			})
		})
	}

	t.Run("under the floor with nothing to restore: BelowFloor says so, nothing is sent", func(t *testing.T) {
		h := newHarness(t, testService(true), testPod("p0", "yes", nil), testPod("p1", "yes", nil), testKVS(floor4, "b"))
		runSteps(t, h, []step{{
			name: "2 pods, floor 4", wantStatusWrites: 1, wantCalls: 1,
			wantEjection: "False/BelowFloor: 2 pods in traffic, under the floor of 4, and no pod a breaker ejected can serve to make up for it",
		}})
	})
}

// TestSustainedEvidence: failureThreshold 3 ejects on the third consecutive flagging evaluation, not before;
// an evaluation that does not flag the pod starts the count again, a failed one leaves it; while Pending,
// the passes send nothing.
func TestSustainedEvidence(t *testing.T) {
	threshold := func(n int32) func(*kvv1.KubervisorService) {
		return func(k *kvv1.KubervisorService) { k.Spec.Breakers[0].FailureThreshold = new(n) }
	}
	fleet := func(mutate func(*kvv1.KubervisorService)) []client.Object {
		return []client.Object{testService(true), testPod("p0", "yes", nil), testPod("p1", "yes", nil), testPod("p2", "yes", nil),
			testPod("p3", "yes", nil), testKVS(mutate, "b")}
	}
	period := func(h *harness) { h.clock.Step(5 * time.Second) }
	pending1 := "b/p1=Pending: flagged; pending: anomalous in 1 of 3 consecutive evaluations"

	t.Run("Pending, Pending, then Ejected on the third evaluation", func(t *testing.T) {
		h := newHarness(t, fleet(threshold(3))...)
		runSteps(t, h, []step{
			{name: "1st", answer: []string{"p1"}, wantStatusWrites: 1, wantCalls: 1, wantTraffic: map[string]string{"p1": "yes"},
				wantDecisions: []string{pending1}},
			{name: "2nd: still Pending, nothing written", mutate: period, wantCalls: 1, wantTraffic: map[string]string{"p1": "yes"},
				wantDecisions: []string{pending1}},
			{
				name: "3rd: ejected", mutate: period, wantCalls: 1, wantTraffic: map[string]string{"p1": "no"},
				wantPatches: []string{ejectPatchAt("p1", "999", 0, t0.Add(10*time.Second), false)},
				wantEvents: []string{
					"Normal Ejected Eject KubervisorService/kvs: Breaker b took pod p1 out of traffic: flagged",
					"Normal Ejected Eject Pod/p1: Breaker b took pod p1 out of traffic: flagged",
				},
				wantStatusWrites: 1, wantDecisions: []string{"b/p1=Ejected: flagged"},
			},
		})
	})

	t.Run("an unflagging evaluation starts the count again; a failed one leaves it", func(t *testing.T) {
		h := newHarness(t, fleet(threshold(2))...)
		pending := "b/p1=Pending: flagged; pending: anomalous in 1 of 2 consecutive evaluations"
		runSteps(t, h, []step{
			{name: "flagged (1)", answer: []string{"p1"}, wantStatusWrites: 1, wantCalls: 1, wantDecisions: []string{pending}},
			{name: "not flagged (0)", mutate: period, answer: []string{}, wantStatusWrites: 1, wantCalls: 1, wantDecisions: []string{}},
			{name: "flagged (1)", mutate: period, answer: []string{"p1"}, wantStatusWrites: 1, wantCalls: 1,
				wantTraffic: map[string]string{"p1": "yes"}, wantDecisions: []string{pending}},
			{
				name: "detector error: the count stays 1", mutate: func(h *harness) { period(h); h.answer("b", fmt.Errorf("timeout")) },
				wantEvents:       []string{"Warning DetectorFailed Evaluate KubervisorService/kvs: Breaker b: timeout; no pod is ejected on this evaluation"},
				wantStatusWrites: 1, wantCalls: 1, wantTraffic: map[string]string{"p1": "yes"},
			},
			{
				name: "flagged (2): ejected", mutate: period, answer: []string{"p1"}, wantCalls: 1,
				wantTraffic: map[string]string{"p1": "no"}, wantPatches: []string{ejectPatchAt("p1", "999", 0, t0.Add(20*time.Second), false)},
				wantEvents: []string{
					"Normal Ejected Eject KubervisorService/kvs: Breaker b took pod p1 out of traffic: flagged",
					"Normal Ejected Eject Pod/p1: Breaker b took pod p1 out of traffic: flagged",
				},
				wantStatusWrites: 1,
			},
		})
	})

	t.Run("steady state with a pod Pending: no request at all over 20 evaluations", func(t *testing.T) {
		h := newHarness(t, fleet(threshold(100))...)
		steps := []step{{name: "first", answer: []string{"p1"}, wantStatusWrites: 1, wantCalls: 1}}
		for i := range 20 {
			steps = append(steps, step{name: fmt.Sprintf("evaluation %d", i+2), mutate: period, wantCalls: 1,
				wantDecisions: []string{"b/p1=Pending: flagged; pending: anomalous in 1 of 100 consecutive evaluations"}})
		}
		runSteps(t, h, steps)
	})

	t.Run("failureThreshold 1 (the default) ejects on the first evaluation", func(t *testing.T) {
		h := newHarness(t, fleet(nil)...)
		runSteps(t, h, []step{{
			name: "1st", answer: []string{"p1"}, wantCalls: 1, wantTraffic: map[string]string{"p1": "no"},
			wantPatches: []string{ejectPatch("p1", "999", 0)},
			wantEvents: []string{
				"Normal Ejected Eject KubervisorService/kvs: Breaker b took pod p1 out of traffic: flagged",
				"Normal Ejected Eject Pod/p1: Breaker b took pod p1 out of traffic: flagged",
			},
			wantStatusWrites: 1,
		}})
	})
}

// TestWarmup: a pod Ready for less than the breaker's warmup is judged, not ejected (WarmingUp), and uses
// no quota; a warm pod flagged beside it is ejected.
func TestWarmup(t *testing.T) {
	readySince := func(p *corev1.Pod, since time.Time) *corev1.Pod {
		p.Status.Conditions[0].LastTransitionTime = metav1.NewTime(since)
		return p
	}
	h := newHarness(t, testService(true), testPod("p0", "yes", nil),
		readySince(testPod("p1", "yes", nil), t0.Add(-10*time.Second)), readySince(testPod("p2", "yes", nil), t0.Add(-time.Minute)),
		testPod("p3", "yes", nil),
		testKVS(func(k *kvv1.KubervisorService) {
			k.Spec.Breakers[0].Warmup = new(intstr.FromString("30s"))
			k.Spec.Breakers[0].MinPodsAvailableCount = new(int32(3))
		}, "b"))
	runSteps(t, h, []step{
		{
			name:   "p1 Ready 10s ago is warming up; p2 Ready a minute ago is ejected (the floor of 3 would allow only one)",
			answer: []string{"p1", "p2"}, wantCalls: 1, wantTraffic: map[string]string{"p1": "yes", "p2": "no"},
			wantPatches: []string{ejectPatch("p2", "999", 0)},
			wantEvents: []string{
				"Normal Ejected Eject KubervisorService/kvs: Breaker b took pod p2 out of traffic: flagged",
				"Normal Ejected Eject Pod/p2: Breaker b took pod p2 out of traffic: flagged",
			},
			wantStatusWrites: 1,
			wantDecisions:    []string{"b/p1=WarmingUp: flagged; warming up: Ready for 10s, warmup 30s", "b/p2=Ejected: flagged"},
		},
		{
			name: "25s later p1 is warm, and flagged: it is withheld by the floor now", mutate: func(h *harness) { h.clock.Step(25 * time.Second) },
			answer: []string{"p1"}, wantCalls: 1, wantTraffic: map[string]string{"p1": "yes"},
			wantEvents:       []string{"Warning EjectionWithheld Evaluate KubervisorService/kvs: Breaker b kept 1 anomalous pods in traffic to hold the floor: p1"},
			wantStatusWrites: 1,
			wantDecisions:    []string{"b/p1=Withheld: flagged; withheld: the floor keeps 3 pods in traffic"},
		},
	})
}

// TestStormGuardJudgesRawAnomalies: the storm guard counts every flagged pod, those warmup or
// failureThreshold spare included (SPEC §5.13): a detector flagging most of a rollout's warming pods is a
// storm, not two ejections of the warm pods it also flagged.
func TestStormGuardJudgesRawAnomalies(t *testing.T) {
	const storm = "5 of 8 Ready pods anomalous, more than maxAnomalousPercent 50%: the detector is suspect, nobody is ejected"
	warming := func(name string) *corev1.Pod {
		p := testPod(name, "yes", nil)
		p.Status.Conditions[0].LastTransitionTime = metav1.NewTime(t0.Add(-10 * time.Second))
		return p
	}
	objs := []client.Object{testService(true), warming("p0"), warming("p1"), warming("p2")}
	for i := 3; i < 8; i++ {
		objs = append(objs, testPod(fmt.Sprintf("p%d", i), "yes", nil))
	}
	for name, mutate := range map[string]func(*kvv1.BreakerStrategy){
		"warmup":           func(b *kvv1.BreakerStrategy) { b.Warmup = new(intstr.FromString("30s")) },
		"failureThreshold": func(b *kvv1.BreakerStrategy) { b.FailureThreshold = new(int32(3)) },
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, append(slices.Clone(objs), testKVS(func(k *kvv1.KubervisorService) { mutate(&k.Spec.Breakers[0]) }, "b"))...)
			runSteps(t, h, []step{{
				name: "5 of 8 flagged, the warming or first-flagged ones spared", answer: []string{"p0", "p1", "p2", "p3", "p4"}, wantCalls: 1,
				wantTraffic:      map[string]string{"p3": "yes", "p4": "yes"},
				wantEvents:       []string{"Warning StormSuspected Evaluate KubervisorService/kvs: Breaker b: " + storm},
				wantStatusWrites: 1,
				wantEjection:     "False/StormSuspected: breaker b: " + storm,
			}})
		})
	}
}

// TestMarkOutOfTraffic: the pods out of traffic that a version without the records took out get them, once
// and in one patch each: the deletion cost of a pod out of traffic (ejected and paused alike) and, for a pod
// a breaker ejected, the fingerprint of its activator. Serving pods, a pod ejected by hand (its activator's
// mode does not apply) and a pod with both records are never written.
func TestMarkOutOfTraffic(t *testing.T) {
	old := testPod("p1", kvv1.TrafficNo, map[string]string{kvv1.AnnotationBreakAt: podstate.FormatTime(t0.Add(-time.Second)),
		kvv1.AnnotationRetryCount: "1"})
	old.Labels[kvv1.LabelStrategy] = "b"
	paused := testPod("p2", kvv1.TrafficPause, nil)
	held := ejectedPod("p5", 1, t0.Add(-time.Hour))
	podstate.EjectByHand("alice", "debugging", time.Time{}, t0.Add(-time.Minute)).ApplyTo(&held.ObjectMeta)
	h := newHarness(t, testService(true), testPod("p0", "yes", nil), old, paused, testPod("p3", "yes", nil),
		ejectedPod("p4", 1, t0.Add(-time.Second)), held, recordedPod("p6", 1, t0.Add(-time.Second)), testPod("p7", "yes", nil),
		testPod("p8", "yes", nil), testKVS(nil, "b"))
	patch := func(name string, annotations ...string) string {
		return name + `: {"metadata":{"annotations":{` + strings.Join(annotations, ",") + `},"resourceVersion":"999"}}`
	}
	cost := `"controller.kubernetes.io/pod-deletion-cost":"-2147483648"`
	fingerprint := `"kubervisor/activator":"` + defaultFingerprint + `"`
	runSteps(t, h, []step{
		{name: "first pass: each marked once", wantPatches: []string{patch("p1", cost, fingerprint), patch("p2", cost), patch("p4", fingerprint)},
			wantStatusWrites: 1, wantCalls: 1},
		{name: "next pass: nothing", mutate: func(h *harness) { h.clock.Step(time.Second) }},
	})
}

// TestFloorRestorationReadinessGate: in readinessGate mode, serving is ContainersReady and the gate; a pod
// whose containers stop being ready breaks the floor, and the restored pod's gate goes back to True in the
// same pass (its label alone would leave it NotReady for every Service).
func TestFloorRestorationReadinessGate(t *testing.T) {
	out := gatedPod("p2", "yes", corev1.ConditionFalse, true, false)
	podstate.Eject(podstate.State{}, "b", t0.Add(-time.Minute), defaultFingerprint).ApplyTo(&out.ObjectMeta)
	h := newHarness(t, testService(false), gatedPod("p0", "yes", corev1.ConditionTrue, true, true),
		gatedPod("p1", "yes", corev1.ConditionTrue, true, true), out,
		testKVS(func(k *kvv1.KubervisorService) { gateMode(k); k.Spec.Breakers[0].MinPodsAvailableCount = new(int32(2)) }, "b"))
	runSteps(t, h, []step{
		{name: "first pass", wantStatusWrites: 1, wantCalls: 1},
		{
			name: "p1's containers are no longer ready",
			mutate: func(h *harness) {
				p := &corev1.Pod{}
				if err := h.client.Get(context.Background(), client.ObjectKey{Namespace: testNS, Name: "p1"}, p); err != nil {
					h.t.Fatal(err)
				}
				p.Status.Conditions[1].Status = corev1.ConditionFalse
				if err := h.client.Status().Update(context.Background(), p); err != nil {
					h.t.Fatal(err)
				}
				h.statusPatches = nil
			},
			wantTraffic: map[string]string{"p2": "yes"},
			wantPatches: []string{restorePatch("p2", t0)},
			wantEvents: []string{
				"Normal Restored Restore Pod/p2: Pod p2 back in traffic: 1 pods served, under the floor of 2 (breaker b ejected it)",
				"Warning FloorRestored Restore KubervisorService/kvs: 1 pods in traffic, under the floor of 2: restored 1 pods the breakers ejected: p2",
			},
			wantStatusWrites: 1, wantRestorations: 1,
		},
	})
	if d := cmp.Diff([]string{"p0=True", "p1=True", "p2=True"}, h.gates("p0", "p1", "p2")); d != "" {
		t.Errorf("gates mismatch (-want +got):\n%s", d)
	}
	if len(h.statusPatches) != 1 || !strings.HasPrefix(h.statusPatches[0], "p2/status") {
		t.Errorf("status patches %v, want one of p2's gate", h.statusPatches)
	}
}

// TestWarmupDoesNotCount: evaluations of a pod warming up do not count towards failureThreshold, so a
// pod flagged for being new needs the whole threshold once warm.
func TestWarmupDoesNotCount(t *testing.T) {
	p1 := testPod("p1", "yes", nil)
	p1.Status.Conditions[0].LastTransitionTime = metav1.NewTime(t0.Add(-10 * time.Second))
	h := newHarness(t, testService(true), testPod("p0", "yes", nil), p1, testPod("p2", "yes", nil), testPod("p3", "yes", nil),
		testKVS(func(k *kvv1.KubervisorService) {
			k.Spec.Breakers[0].Warmup = new(intstr.FromString("30s"))
			k.Spec.Breakers[0].FailureThreshold = new(int32(2))
		}, "b"))
	runSteps(t, h, []step{
		{name: "warming up", answer: []string{"p1"}, wantCalls: 1, wantStatusWrites: 1,
			wantDecisions: []string{"b/p1=WarmingUp: flagged; warming up: Ready for 10s, warmup 30s"}},
		{name: "warm, flagged: 1 of 2, not ejected", mutate: func(h *harness) { h.clock.Step(20 * time.Second) }, wantCalls: 1,
			wantStatusWrites: 1, wantTraffic: map[string]string{"p1": "yes"},
			wantDecisions: []string{"b/p1=Pending: flagged; pending: anomalous in 1 of 2 consecutive evaluations"}},
	})
}

// TestFinalizeReleasesEveryPod: a pod whose release is refused (a webhook) does not keep the others out of
// traffic; the error is reported, not requeued quietly, and the finalizer stays until all are released.
func TestFinalizeReleasesEveryPod(t *testing.T) {
	kvs := testKVS(nil, "b")
	kvs.DeletionTimestamp = new(metav1.NewTime(t0))
	h := newHarness(t, testService(true), ejectedPod("p0", 1, t0.Add(-time.Second)), ejectedPod("p1", 1, t0.Add(-time.Second)), kvs)
	h.refusePods = map[string]bool{"p0": true}
	h.conflictPods = map[string]bool{}
	_, err := h.pass(h.kvsReconciler())
	if !apierrors.IsForbidden(err) {
		t.Fatalf("Reconcile error = %v, want the webhook's Forbidden", err)
	}
	if d := cmp.Diff([]string{"no", "yes"}, h.traffic("p0", "p1")); d != "" {
		t.Errorf("traffic mismatch (-want +got):\n%s", d)
	}
	if !slices.Contains(h.kvs().Finalizers, kvv1.Finalizer) {
		t.Errorf("the finalizer went while p0 is still out of traffic")
	}
}
