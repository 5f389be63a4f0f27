package controller

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
)

func TestSpreadOffset(t *testing.T) {
	const period = 5 * time.Second
	buckets := make([]int, 5)
	for i := range 1000 {
		uid := fmt.Sprintf("uid-%d", i)
		o := spreadOffset(uid, "b", period)
		if o < 0 || o >= period {
			t.Fatalf("offset %s outside [0, %s)", o, period)
		}
		if again := spreadOffset(uid, "b", period); again != o {
			t.Fatalf("offset of %s not deterministic: %s then %s", uid, o, again)
		}
		buckets[o/time.Second]++
	}
	// 1,000 KubervisorServices spread over the period: every second gets about 200 first evaluations.
	for s, n := range buckets {
		if n < 150 || n > 250 {
			t.Errorf("second %d of the period holds %d of 1000 first evaluations, want about 200 (%v)", s, n, buckets)
		}
	}
	if o := spreadOffset("uid", "b", time.Hour); o >= MaxFirstEvaluationSpread {
		t.Errorf("a 1h period spreads over %s, want at most %s", o, MaxFirstEvaluationSpread)
	}
}

// TestFirstEvaluationSpread: a KubervisorService evaluated before (its status has breakers: a restart) is
// evaluated first at its spread offset; a new one at once.
func TestFirstEvaluationSpread(t *testing.T) {
	restarted := testKVS(func(k *kvv1.KubervisorService) {
		k.UID = "restarted"
		k.Status.Breakers = []kvv1.BreakerStatus{{Name: "b", LastResult: "OK"}}
	}, "b")
	h := newHarness(t, testService(true), testPod("p0", "yes", nil), testPod("p1", "yes", nil), restarted)
	r := h.kvsReconciler()
	offset := spreadOffset("restarted", "b", 5*time.Second)
	res, err := h.pass(r)
	if err != nil {
		t.Fatal(err)
	}
	if h.calls("b") != 0 || res.RequeueAfter != max(offset, time.Millisecond) {
		t.Errorf("after a restart: %d calls, requeue %s; want none, at the spread offset %s", h.calls("b"), res.RequeueAfter, offset)
	}
	h.clock.Step(offset)
	if _, err := h.pass(r); err != nil {
		t.Fatal(err)
	}
	if h.calls("b") != 1 {
		t.Errorf("at the offset: %d calls, want 1", h.calls("b"))
	}

	fresh := newHarness(t, testService(true), testPod("p0", "yes", nil), testKVS(nil, "b"))
	if _, err := fresh.pass(fresh.kvsReconciler()); err != nil {
		t.Fatal(err)
	}
	if fresh.calls("b") != 1 {
		t.Errorf("a new KubervisorService: %d calls, want 1 at once", fresh.calls("b"))
	}
}

// TestPassesCostTheSameWithManyKubervisorServices: a breaker pass and a supervised pod's event read the
// KubervisorServices naming the Service, or the pod's owner, never every one in the namespace.
func TestPassesCostTheSameWithManyKubervisorServices(t *testing.T) {
	objs := []client.Object{testService(true), testPod("p0", "yes", nil), testPod("p1", "yes", nil), testKVS(nil, "b")}
	for i := range 200 {
		name := fmt.Sprintf("other-%d", i)
		objs = append(objs,
			&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: name}, Spec: corev1.ServiceSpec{Selector: map[string]string{"app": name}}},
			&kvv1.KubervisorService{ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: name}, Spec: kvv1.KubervisorServiceSpec{Service: name}})
	}
	h := newHarness(t, objs...)
	mustPass(h, h.kvsReconciler())
	if n := h.lists["*v1alpha1.KubervisorServiceList"]; n != 0 || h.lists["*v1alpha1.KubervisorServiceList spec.service=svc"] == 0 {
		t.Errorf("the pass listed KubervisorServices %v; want only those naming svc, through the index", h.lists)
	}
	h.lists = map[string]int{}
	if _, err := h.podReconciler().Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKey{Namespace: testNS, Name: "p0"}}); err != nil {
		t.Fatal(err)
	}
	if n := h.lists["*v1alpha1.KubervisorServiceList"] + h.lists["*v1.ServiceList"]; n != 0 {
		t.Errorf("a supervised pod's event listed KubervisorServices or Services %d times (%v), want none", n, h.lists)
	}
}
