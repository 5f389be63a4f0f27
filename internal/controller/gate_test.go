package controller

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/podstate"
)

// gatedPod is a pod of the Service, adopted by "kvs", declaring the readiness gate, with its
// kubervisor.io/in-traffic condition ("" for none), ContainersReady and Ready.
func gatedPod(name, traffic string, gate corev1.ConditionStatus, containersReady, ready bool) *corev1.Pod {
	p := testPod(name, traffic, nil)
	p.Spec.ReadinessGates = []corev1.PodReadinessGate{{ConditionType: kvv1.ConditionInTraffic}}
	status := func(ok bool) corev1.ConditionStatus {
		if ok {
			return corev1.ConditionTrue
		}
		return corev1.ConditionFalse
	}
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: status(ready)},
		{Type: corev1.ContainersReady, Status: status(containersReady)}}
	if gate != "" {
		p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: kvv1.ConditionInTraffic, Status: gate})
	}
	return p
}

func gateMode(k *kvv1.KubervisorService) { k.Spec.TrafficControl = kvv1.TrafficControlReadinessGate }

// gates returns "name=status" for the named pods' kubervisor.io/in-traffic condition.
func (h *harness) gates(names ...string) []string {
	var out []string
	for _, n := range names {
		p := &corev1.Pod{}
		if err := h.client.Get(context.Background(), client.ObjectKey{Namespace: testNS, Name: n}, p); err != nil {
			h.t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s=%s", n, podstate.GateStatus(p)))
	}
	return out
}

func TestReadinessGateBreaker(t *testing.T) {
	// Selector without the traffic key: readinessGate mode needs no selector edit.
	svc := testService(false)

	t.Run("ejection sets the condition False through pods/status, naming the breaker; a pod without the gate is never ejected", func(t *testing.T) {
		plain := gatedPod("p3", "yes", "", true, true)
		plain.Spec.ReadinessGates = nil
		h := newHarness(t, svc, gatedPod("p0", "yes", "True", true, true), gatedPod("p1", "yes", "True", true, true),
			gatedPod("p2", "yes", "True", true, true), plain, testKVS(gateMode, "b"))
		h.answer("b", nil, "p3", "p1")
		mustPass(h, h.kvsReconciler())
		if d := cmp.Diff([]string{"yes", "no", "yes", "yes"}, h.traffic("p0", "p1", "p2", "p3")); d != "" {
			t.Errorf("traffic mismatch (-want +got):\n%s", d)
		}
		if d := cmp.Diff([]string{"p0=True", "p1=False", "p2=True"}, h.gates("p0", "p1", "p2")); d != "" {
			t.Errorf("gates mismatch (-want +got):\n%s", d)
		}
		if len(h.statusPatches) != 1 || !strings.HasPrefix(h.statusPatches[0], "p1/status application/strategic-merge-patch+json: ") ||
			!strings.Contains(h.statusPatches[0], `"message":"Taken out of traffic by Kubervisor, breaker b"`) ||
			!strings.Contains(h.statusPatches[0], `"resourceVersion"`) {
			t.Errorf("status patches = %q, want one strategic merge patch of p1's status, with its resourceVersion, naming breaker b", h.statusPatches)
		}
		for _, p := range h.patches {
			if strings.Contains(p, "conditions") {
				t.Errorf("a metadata patch carries conditions: %s", p)
			}
		}
		k := h.kvs()
		var decisions []string
		for _, d := range k.Status.Breakers[0].Anomalies {
			decisions = append(decisions, d.Pod+"="+string(d.Decision)+": "+d.Reason)
		}
		want := []string{"p3=Ignored: flagged; the pod lacks the readiness gate kubervisor.io/in-traffic: never ejected", "p1=Ejected: flagged"}
		if d := cmp.Diff(want, decisions); d != "" {
			t.Errorf("decisions mismatch (-want +got):\n%s", d)
		}
		conds := conditionsOf(k)
		for _, c := range []string{"TrafficControlled=False/PodsLackReadinessGate", "ReadinessGateMissing=True/PodsLackReadinessGate"} {
			if !slices.Contains(conds, c) {
				t.Errorf("conditions %v lack %s", conds, c)
			}
		}
	})

	t.Run("the floor counts ContainersReady: a pod whose gate is not True yet still serves", func(t *testing.T) {
		// p2 was just adopted: its containers are ready, its gate not yet True, so Ready is False.
		h := newHarness(t, svc, gatedPod("p0", "yes", "True", true, true), gatedPod("p1", "yes", "True", true, true),
			gatedPod("p2", "yes", "", true, false), testKVS(func(k *kvv1.KubervisorService) {
				gateMode(k)
				k.Spec.Breakers[0].MinPodsAvailableCount = new(int32(2))
				k.Spec.Breakers[0].MaxAnomalousPercent = new(int32(100))
			}, "b"))
		h.answer("b", nil, "p0")
		mustPass(h, h.kvsReconciler())
		if d := cmp.Diff([]string{"no", "yes", "yes"}, h.traffic("p0", "p1", "p2")); d != "" {
			t.Errorf("traffic mismatch (-want +got), 3 serving over a floor of 2:\n%s", d)
		}
		if got := h.kvs().Status.Pods; got.Ready != 3 || got.InTraffic != 2 {
			t.Errorf("counts %+v, want Ready 3 (ContainersReady), InTraffic 2", got)
		}
	})

	t.Run("selector mode: the gate stays True and the selector decides", func(t *testing.T) {
		h := newHarness(t, svc, gatedPod("p0", "yes", "True", true, true), gatedPod("p1", "yes", "True", true, true),
			testKVS(nil, "b"))
		h.answer("b", nil, "p1")
		mustPass(h, h.kvsReconciler())
		if d := cmp.Diff([]string{"p0=True", "p1=True"}, h.gates("p0", "p1")); d != "" || len(h.statusPatches) != 0 {
			t.Errorf("gates %v after %d status patches; want both True, none sent", h.gates("p0", "p1"), len(h.statusPatches))
		}
	})
}

func TestReadinessGatePodReconciler(t *testing.T) {
	svc := testService(false)
	reconcilePod := func(h *harness, name string) ctrl.Result {
		h.t.Helper()
		res, err := h.podReconciler().Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKey{Namespace: testNS, Name: name}})
		if err != nil {
			h.t.Fatal(err)
		}
		return res
	}
	unadopted := func() *corev1.Pod {
		p := gatedPod("new", "", "", true, false)
		delete(p.Labels, kvv1.LabelName)
		return p
	}

	t.Run("adoption sets the condition True at once", func(t *testing.T) {
		h := newHarness(t, svc, unadopted(), testKVS(gateMode, "b"))
		reconcilePod(h, "new")
		if d := cmp.Diff([]string{"new=True"}, h.gates("new")); d != "" {
			t.Errorf("gate mismatch (-want +got):\n%s", d)
		}
		if got := h.traffic("new"); got[0] != "yes" {
			t.Errorf("traffic %v, want yes", got)
		}
	})

	t.Run("restore sets it True; pause keeps it False", func(t *testing.T) {
		ejected := gatedPod("e", "no", "False", true, false)
		podstate.Eject(podstate.State{}, "b", t0.Add(-time.Minute), "").ApplyTo(&ejected.ObjectMeta)
		h := newHarness(t, svc, ejected, testKVS(gateMode, "b"))
		reconcilePod(h, "e")
		if d := cmp.Diff([]string{"e=True"}, h.gates("e")); d != "" || h.traffic("e")[0] != "yes" {
			t.Errorf("after restore: gate %v, traffic %v; want True, yes", h.gates("e"), h.traffic("e"))
		}

		paused := gatedPod("e", "pause", "True", true, true)
		h = newHarness(t, svc, paused, testKVS(gateMode, "b"))
		reconcilePod(h, "e")
		if d := cmp.Diff([]string{"e=False"}, h.gates("e")); d != "" {
			t.Errorf("a paused pod's gate mismatch (-want +got):\n%s", d)
		}
	})

	t.Run("a pod whose KubervisorService is gone, or in selector mode, gets True back", func(t *testing.T) {
		orphan := gatedPod("o", "no", "False", true, false)
		h := newHarness(t, svc, orphan)
		reconcilePod(h, "o")
		if d := cmp.Diff([]string{"o=True"}, h.gates("o")); d != "" || h.traffic("o")[0] != "yes" {
			t.Errorf("orphan: gate %v, traffic %v; want True, yes", h.gates("o"), h.traffic("o"))
		}

		switched := gatedPod("s", "no", "False", true, false)
		podstate.Eject(podstate.State{}, "b", t0, "").ApplyTo(&switched.ObjectMeta)
		h = newHarness(t, svc, switched, testKVS(nil, "b"))
		reconcilePod(h, "s")
		if d := cmp.Diff([]string{"s=True"}, h.gates("s")); d != "" {
			t.Errorf("switched to selector mode: gate mismatch (-want +got):\n%s", d)
		}
	})

	t.Run("deleting the KubervisorService sets the condition True on every pod", func(t *testing.T) {
		ejected := gatedPod("e", "no", "False", true, false)
		kvs := testKVS(gateMode, "b")
		kvs.DeletionTimestamp = new(metav1.NewTime(t0))
		h := newHarness(t, svc, ejected, gatedPod("p", "yes", "True", true, true), kvs)
		mustPass(h, h.kvsReconciler())
		if d := cmp.Diff([]string{"e=True", "p=True"}, h.gates("e", "p")); d != "" {
			t.Errorf("gates after deletion mismatch (-want +got):\n%s", d)
		}
	})
}
