package controller

import (
	"context"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
)

// TestOrphanSweep: the resync finds the pods labelled for a KubervisorService that does not exist (and only
// those), and hands them to the Pod reconciler, which releases them.
func TestOrphanSweep(t *testing.T) {
	orphan := testPod("orphan", kvv1.TrafficNo, nil)
	orphan.Labels[kvv1.LabelName] = "gone"
	free := testPod("free", "", nil)
	delete(free.Labels, kvv1.LabelName)
	h := newHarness(t, testService(true), testKVS(nil, "b"), testPod("kept", "yes", nil), orphan, free)
	clk := clocktesting.NewFakeClock(t0)
	s := newOrphanSweep(h.client, clk)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Start(ctx) }()
	for deadline := time.Now().Add(30 * time.Second); !clk.HasWaiters(); {
		if time.Now().After(deadline) {
			t.Fatal("the sweep never waited on its ticker")
		}
		time.Sleep(time.Millisecond)
	}
	clk.Step(OrphanResync)
	select {
	case ev := <-s.found:
		if ev.Object.Name != "orphan" {
			t.Fatalf("the sweep found %s, want the orphan", ev.Object.Name)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the sweep found nothing after its period")
	}
	select {
	case ev := <-s.found:
		t.Fatalf("the sweep also found %s, a pod of an existing KubervisorService or of none", ev.Object.Name)
	default:
	}
	req := ctrl.Request{NamespacedName: client.ObjectKey{Namespace: testNS, Name: "orphan"}}
	if _, err := h.podReconciler().Reconcile(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if got := h.traffic("orphan")[0]; got != "yes" {
		t.Errorf("orphan traffic %q after the Pod reconciler, want released (yes)", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
