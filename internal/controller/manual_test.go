package controller

import (
	"context"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/podstate"
)

// requested is a Ready pod in traffic carrying a manual request by alice at requestAt.
func requested(name, traffic, kind string, extra map[string]string) *corev1.Pod {
	a := map[string]string{kvv1.AnnotationRequest: kind, kvv1.AnnotationRequestBy: "alice", kvv1.AnnotationRequestAt: requestAt,
		kvv1.AnnotationRequestReason: "canary"}
	maps.Copy(a, extra)
	return testPod(name, traffic, a)
}

const requestAt = "2026-03-14T15:09:20.000000001Z"

func TestManualControl(t *testing.T) {
	floor := func(n int32) func(*kvv1.KubervisorService) {
		return func(k *kvv1.KubervisorService) { k.Spec.Breakers[0].MinPodsAvailableCount = new(n) }
	}
	fleetWith := func(p1 *corev1.Pod) []client.Object {
		return []client.Object{testService(true), testPod("p0", "yes", nil), p1, testPod("p2", "yes", nil), testPod("p3", "yes", nil)}
	}
	until := podstate.FormatTime(t0.Add(10 * time.Minute))
	cases := map[string]struct {
		objs []client.Object
		kvs  *kvv1.KubervisorService

		wantTraffic     string // of p1
		wantOutcome     string
		wantAnnotations map[string]string // of p1, Kubervisor's only
		wantEvents      []string
		wantManual      []kvv1.ManualHold
	}{
		"eject within the floor, for 10m: out, with who, why and until; the request answered": {
			objs:        fleetWith(requested("p1", "yes", kvv1.RequestEject, map[string]string{kvv1.AnnotationRequestFor: "10m"})),
			kvs:         testKVS(floor(3), "b"),
			wantTraffic: "no", wantOutcome: requestAt + " Done: out of traffic until " + until,
			wantAnnotations: map[string]string{kvv1.AnnotationBreakAt: podstate.FormatTime(t0), kvv1.AnnotationManualBy: "alice",
				kvv1.AnnotationManualReason: "canary", kvv1.AnnotationManualUntil: until},
			wantEvents: []string{
				"Normal ManualEject Eject KubervisorService/kvs: alice asked to eject pod p1 (reason: canary): out of traffic until " + until,
				"Normal ManualEject Eject Pod/p1: alice asked to eject pod p1 (reason: canary): out of traffic until " + until,
			},
			wantManual: []kvv1.ManualHold{{Pod: "p1", By: "alice", Reason: "canary", Since: new(apiTime(t0)), Until: new(apiTime(t0.Add(10 * time.Minute)))}},
		},
		"eject at the floor: refused, the pod stays in traffic": {
			objs:        fleetWith(requested("p1", "yes", kvv1.RequestEject, nil)),
			kvs:         testKVS(floor(4), "b"),
			wantTraffic: "yes",
			wantOutcome: requestAt + " Refused: the floor keeps 4 pods in traffic and 4 serve: ejecting this one would leave 3 (use --force to break the floor)",
			wantEvents: []string{
				"Warning ManualRequestRefused Eject KubervisorService/kvs: Refused the request of alice to eject pod p1 (reason: canary): the floor keeps 4 pods in traffic and 4 serve: ejecting this one would leave 3 (use --force to break the floor)",
				"Warning ManualRequestRefused Eject Pod/p1: Refused the request of alice to eject pod p1 (reason: canary): the floor keeps 4 pods in traffic and 4 serve: ejecting this one would leave 3 (use --force to break the floor)",
			},
		},
		"eject at the floor with --force: out until restored": {
			objs:        fleetWith(requested("p1", "yes", kvv1.RequestEject, map[string]string{kvv1.AnnotationRequestForce: "true"})),
			kvs:         testKVS(floor(4), "b"),
			wantTraffic: "no", wantOutcome: requestAt + " Done: out of traffic until restored by hand, forced under the floor of 4",
			wantAnnotations: map[string]string{kvv1.AnnotationBreakAt: podstate.FormatTime(t0), kvv1.AnnotationManualBy: "alice",
				kvv1.AnnotationManualReason: "canary"},
			wantEvents: []string{
				"Normal ManualEject Eject KubervisorService/kvs: alice asked to eject pod p1 (reason: canary): out of traffic until restored by hand, forced under the floor of 4",
				"Normal ManualEject Eject Pod/p1: alice asked to eject pod p1 (reason: canary): out of traffic until restored by hand, forced under the floor of 4",
			},
			wantManual: []kvv1.ManualHold{{Pod: "p1", By: "alice", Reason: "canary", Since: new(apiTime(t0))}},
		},
		"restore a paused pod: back in traffic at once": {
			objs:        fleetWith(requested("p1", "pause", kvv1.RequestRestore, nil)),
			kvs:         testKVS(nil, "b"),
			wantTraffic: "yes", wantOutcome: requestAt + " Done: back in traffic (it was pause)",
			wantAnnotations: map[string]string{kvv1.AnnotationRestoredAt: podstate.FormatTime(t0)},
			wantEvents: []string{
				"Normal ManualRestore Restore KubervisorService/kvs: alice asked to restore pod p1 (reason: canary): back in traffic (it was pause)",
				"Normal ManualRestore Restore Pod/p1: alice asked to restore pod p1 (reason: canary): back in traffic (it was pause)",
			},
		},
		"a request without who asked is refused": {
			objs: fleetWith(func() *corev1.Pod {
				p := requested("p1", "yes", kvv1.RequestEject, nil)
				delete(p.Annotations, kvv1.AnnotationRequestBy)
				return p
			}()),
			kvs:         testKVS(nil, "b"),
			wantTraffic: "yes",
			wantOutcome: requestAt + " Refused: the request is malformed: kubervisor/request-by is missing: a request names who asked",
			wantEvents: []string{
				"Warning ManualRequestRefused Eject KubervisorService/kvs: Refused the request of someone to eject pod p1 (reason: canary): the request is malformed: kubervisor/request-by is missing: a request names who asked",
				"Warning ManualRequestRefused Eject Pod/p1: Refused the request of someone to eject pod p1 (reason: canary): the request is malformed: kubervisor/request-by is missing: a request names who asked",
			},
		},
		"eject in dry run: refused": {
			objs:        fleetWith(requested("p1", "yes", kvv1.RequestEject, nil)),
			kvs:         testKVS(func(k *kvv1.KubervisorService) { k.Spec.DryRun = true }, "b"),
			wantTraffic: "yes",
			wantOutcome: requestAt + " Refused: the KubervisorService only reports (dry run, or the Service selector lacks kubervisor/traffic): nothing is ejected",
			wantEvents: []string{
				"Warning ManualRequestRefused Eject KubervisorService/kvs: Refused the request of alice to eject pod p1 (reason: canary): the KubervisorService only reports (dry run, or the Service selector lacks kubervisor/traffic): nothing is ejected",
				"Warning ManualRequestRefused Eject Pod/p1: Refused the request of alice to eject pod p1 (reason: canary): the KubervisorService only reports (dry run, or the Service selector lacks kubervisor/traffic): nothing is ejected",
			},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, append(tc.objs, tc.kvs)...)
			if _, err := h.pass(h.kvsReconciler()); err != nil {
				t.Fatalf("pass: %v", err)
			}
			p := &corev1.Pod{}
			if err := h.client.Get(context.Background(), client.ObjectKey{Namespace: testNS, Name: "p1"}, p); err != nil {
				t.Fatal(err)
			}
			if got := p.Labels[kvv1.LabelTraffic]; got != tc.wantTraffic {
				t.Errorf("traffic = %q, want %q", got, tc.wantTraffic)
			}
			if got := p.Annotations[kvv1.AnnotationRequestOutcome]; got != tc.wantOutcome {
				t.Errorf("outcome = %q\nwant      %q", got, tc.wantOutcome)
			}
			got := map[string]string{}
			for k, v := range p.Annotations {
				if strings.HasPrefix(k, "kubervisor/") && k != kvv1.AnnotationRequestOutcome && k != kvv1.AnnotationRequestReason {
					got[k] = v
				}
			}
			if _, ok := p.Annotations[kvv1.AnnotationRequest]; ok {
				t.Errorf("the request is still on the pod: %v", p.Annotations)
			}
			want := tc.wantAnnotations
			if want == nil {
				want = map[string]string{}
			}
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("annotations mismatch (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tc.wantEvents, h.events.take()); d != "" {
				t.Errorf("events mismatch (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tc.wantManual, h.kvs().Status.Manual); d != "" {
				t.Errorf("status.manual mismatch (-want +got):\n%s", d)
			}
		})
	}
}

func TestManualHoldLifecycle(t *testing.T) {
	pod := requested("p1", "yes", kvv1.RequestEject, map[string]string{kvv1.AnnotationRequestFor: "10m"})
	h := newHarness(t, testService(true), testPod("p0", "yes", nil), pod, testPod("p2", "yes", nil), testKVS(nil, "b"))
	r, act := h.kvsReconciler(), h.podReconciler()
	mustPass(h, r)
	activate := func() ctrl.Result {
		t.Helper()
		res, err := act.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKey{Namespace: testNS, Name: "p1"}})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	if res := activate(); res.RequeueAfter != 10*time.Minute || h.traffic("p1")[0] != "no" {
		t.Errorf("activator on a 10m hold: %+v, traffic %v; want a wait of 10m, still out", res, h.traffic("p1"))
	}

	// A restarted manager (new reconcilers, empty memory) keeps the hold and its due time.
	r, act = h.kvsReconciler(), h.podReconciler()
	h.clock.Step(5 * time.Minute)
	mustPass(h, r)
	if res := activate(); res.RequeueAfter != 5*time.Minute || h.traffic("p1")[0] != "no" {
		t.Errorf("after a restart: %+v, traffic %v; want a wait of 5m, still out", res, h.traffic("p1"))
	}
	if m := h.kvs().Status.Manual; len(m) != 1 || m[0].By != "alice" {
		t.Errorf("status.manual = %+v, want alice's hold", m)
	}

	// --for passes: the activator restores it, the hold annotations go, status.manual empties.
	h.clock.Step(5 * time.Minute)
	activate()
	p := &corev1.Pod{}
	if err := h.client.Get(context.Background(), client.ObjectKey{Namespace: testNS, Name: "p1"}, p); err != nil {
		t.Fatal(err)
	}
	if p.Labels[kvv1.LabelTraffic] != "yes" || p.Annotations[kvv1.AnnotationManualBy] != "" {
		t.Errorf("after --for: labels %v annotations %v; want back in traffic without the hold", p.Labels, p.Annotations)
	}
	mustPass(h, r)
	if m := h.kvs().Status.Manual; len(m) != 0 {
		t.Errorf("status.manual = %+v after the hold ended, want none", m)
	}
}

func TestManualRequestOnUnsupervisedPod(t *testing.T) {
	p := requested("p9", "", kvv1.RequestEject, nil)
	delete(p.Labels, kvv1.LabelName)
	p.Labels["app"] = "elsewhere"
	h := newHarness(t, testService(true), p)
	var patched int
	if _, err := h.podReconciler().Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKey{Namespace: testNS, Name: "p9"}}); err != nil {
		t.Fatal(err)
	}
	got := &corev1.Pod{}
	if err := h.client.Get(context.Background(), client.ObjectKey{Namespace: testNS, Name: "p9"}, got); err != nil {
		t.Fatal(err)
	}
	patched = len(h.patches)
	if want := requestAt + " Refused: no KubervisorService supervises this pod"; got.Annotations[kvv1.AnnotationRequestOutcome] != want {
		t.Errorf("outcome = %q, want %q", got.Annotations[kvv1.AnnotationRequestOutcome], want)
	}
	if _, ok := got.Labels[kvv1.LabelTraffic]; ok || patched != 1 {
		t.Errorf("labels %v after %d patches; want no traffic label, one patch", got.Labels, patched)
	}
	if ev := h.events.take(); len(ev) != 1 || !strings.HasPrefix(ev[0], "Warning ManualRequestRefused Eject Pod/p9") {
		t.Errorf("events = %q, want one Warning on the pod", ev)
	}
}
