package controller

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
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
	// The wake-up is the first instant of the wake grid at or after the offset.
	wake := onGrid(h.clock.Now().Add(offset)).Sub(h.clock.Now())
	if h.calls("b") != 0 || res.RequeueAfter != wake || wake < offset || wake >= offset+wakeGrid {
		t.Errorf("after a restart: %d calls, requeue %s; want none, at the spread offset %s on the grid (%s)", h.calls("b"), res.RequeueAfter, offset, wake)
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

// TestAdoptionAndSelectionGoThroughIndexes: a pass lists pods only through an index (the Service's pods by
// one label pair, not every pod of the namespace), and a new pod's adoption, from its own event or its
// Service's, reads the Services whose selector holds one of its labels and their KubervisorServices,
// never every one in the namespace; the pod goes to the right owner all the same. A Service's event reads
// the claims on its pods once, not its KubervisorService again for each pod it owns.
func TestAdoptionAndSelectionGoThroughIndexes(t *testing.T) {
	objs := []client.Object{testService(true), testPod("p0", "yes", nil), testKVS(nil, "b")}
	for i := range 200 {
		name := fmt.Sprintf("other-%d", i)
		objs = append(objs,
			&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: name}, Spec: corev1.ServiceSpec{Selector: map[string]string{"app": name}}},
			&kvv1.KubervisorService{ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: name}, Spec: kvv1.KubervisorServiceSpec{Service: name}},
			&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: name + "-pod", Labels: map[string]string{"app": name}}})
	}
	for _, name := range []string{"new", "new2"} {
		fresh := testPod(name, "yes", nil)
		delete(fresh.Labels, kvv1.LabelName)
		objs = append(objs, fresh)
	}
	h := newHarness(t, objs...)
	unfiltered := func() int {
		return h.lists["*v1.PodList"] + h.lists["*v1alpha1.KubervisorServiceList"] + h.lists["*v1.ServiceList"]
	}
	for _, c := range []struct {
		what string
		run  func() error
		// kvsGets is how many KubervisorServices it may read one by one (-1: not checked).
		kvsGets int
	}{
		{"the new pod's event", func() error {
			_, err := h.podReconciler().Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKey{Namespace: testNS, Name: "new"}})
			return err
		}, -1}, // not counted: the pod reconciler reads the pod and its owner
		{"its Service's event (adopting new2)", func() error {
			r := &ServiceReconciler{Client: h.client, adoptions: h.adoptions}
			_, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKey{Namespace: testNS, Name: "svc"}})
			return err
		}, 0},
		{"a breaker pass", func() error { _, err := h.pass(h.kvsReconciler()); return err }, 1},
	} {
		h.lists, h.gets = map[string]int{}, map[string]int{}
		if err := c.run(); err != nil {
			t.Fatalf("%s: %v", c.what, err)
		}
		if n := unfiltered(); n != 0 {
			t.Errorf("%s listed pods, Services or KubervisorServices without an index %d times (%v), want none", c.what, n, h.lists)
		}
		if c.kvsGets >= 0 && h.gets["*v1alpha1.KubervisorService"] != c.kvsGets {
			t.Errorf("%s read KubervisorServices one by one %d times, want %d", c.what, h.gets["*v1alpha1.KubervisorService"], c.kvsGets)
		}
	}
	for _, c := range []struct{ pod, owner string }{{"new", "kvs"}, {"new2", "kvs"}, {"other-7-pod", ""}} {
		p := &corev1.Pod{}
		if err := h.client.Get(context.Background(), client.ObjectKey{Namespace: testNS, Name: c.pod}, p); err != nil {
			t.Fatal(err)
		}
		if got := p.Labels[kvv1.LabelName]; got != c.owner {
			t.Errorf("pod %s is owned by %q, want %q", c.pod, got, c.owner)
		}
	}
}

// TestShardLeavesOtherShardsPodsAlone: a manager restricted to shard=a never adopts, releases, restores or
// labels the pods of a KubervisorService of shard b, and still releases true orphans.
func TestShardLeavesOtherShardsPodsAlone(t *testing.T) {
	theirs := testKVS(func(k *kvv1.KubervisorService) { k.Labels = map[string]string{"shard": "b"} }, "b")
	ejected := ejectedPod("p1", 1, t0.Add(-time.Hour)) // due for restore long ago
	orphan := testPod("o", "no", nil)
	orphan.Labels[kvv1.LabelName] = "gone"
	h := newHarness(t, testService(true), ejected, orphan, theirs)
	opts := h.opts()
	sel, err := labels.Parse("shard=a")
	if err != nil {
		t.Fatal(err)
	}
	opts.KubervisorServiceSelector = sel
	r := NewPodReconciler(h.client, liveReader{Reader: h.client, h: h}, h.events, h.evictor, opts)
	for _, name := range []string{"p1", "p1"} { // twice: the second answer comes from the remembered foreign owner
		if _, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKey{Namespace: testNS, Name: name}}); err != nil {
			t.Fatal(err)
		}
	}
	if len(h.patches) != 0 || h.traffic("p1")[0] != "no" {
		t.Errorf("shard a patched shard b's pod: %q, traffic %v", h.patches, h.traffic("p1"))
	}
	if _, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKey{Namespace: testNS, Name: "o"}}); err != nil {
		t.Fatal(err)
	}
	if h.traffic("o")[0] != "yes" {
		t.Errorf("an orphan was not released by the shard: traffic %v", h.traffic("o"))
	}

	// Without the selector the same reconciler restores p1: the test can fail.
	all := NewPodReconciler(h.client, liveReader{Reader: h.client, h: h}, h.events, h.evictor, h.opts())
	if _, err := all.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKey{Namespace: testNS, Name: "p1"}}); err != nil {
		t.Fatal(err)
	}
	if h.traffic("p1")[0] != "yes" {
		t.Errorf("an unsharded manager did not restore p1: %v", h.traffic("p1"))
	}
}

// staleReader answers Gets of the KubervisorService with a copy of an older version of it (when kvs is
// set), as a cache whose watch has not delivered our last writes yet; it counts the patches sent to the
// KubervisorService and keeps the last one's result in patched.
type staleReader struct {
	client.Client
	kvs     *kvv1.KubervisorService
	patches *int
	patched **kvv1.KubervisorService
}

func (s staleReader) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
	k, ok := obj.(*kvv1.KubervisorService)
	if !ok {
		return s.Client.Patch(ctx, obj, patch, opts...)
	}
	*s.patches++
	err := s.Client.Patch(ctx, obj, patch, opts...)
	if err == nil {
		*s.patched = k.DeepCopy()
	}
	return err
}

func (s staleReader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if k, ok := obj.(*kvv1.KubervisorService); ok && s.kvs != nil && key.Name == s.kvs.Name {
		s.kvs.DeepCopyInto(k)
		return nil
	}
	return s.Client.Get(ctx, key, obj, opts...)
}

// TestPassWaitsForTheCacheToSeeItsOwnWrite: the first pass adds the finalizer, then writes status (two
// writes); a pass that reads the KubervisorService as it was before either of them sends nothing (its
// writes would lose their optimistic-lock race) and comes back shortly; once the cache shows the writes,
// passes go on as usual.
func TestPassWaitsForTheCacheToSeeItsOwnWrite(t *testing.T) {
	fresh := testKVS(func(k *kvv1.KubervisorService) { k.Finalizers = nil }, "b")
	h := newHarness(t, testService(true), testPod("p0", "yes", nil), testPod("p1", "yes", nil), fresh)
	before := h.kvs()
	r := h.kvsReconciler()
	kvsPatches := 0
	var finalized *kvv1.KubervisorService // as the finalizer patch left it, before the status write
	r.Client = staleReader{Client: h.client, patches: &kvsPatches, patched: &finalized}
	mustPass(h, r)
	if h.statusWrites != 1 || kvsPatches != 1 {
		t.Fatalf("the first pass wrote status %d times and patched the KubervisorService %d times, want 1 and 1", h.statusWrites, kvsPatches)
	}
	kvsPatches = 0
	for _, stale := range []*kvv1.KubervisorService{before, finalized} {
		r.Client = staleReader{Client: h.client, kvs: stale, patches: &kvsPatches, patched: new(*kvv1.KubervisorService)}
		h.clock.Step(10 * time.Second) // the breaker is due again: a pass on the stale copy would evaluate and write
		res, err := h.pass(r)
		if err != nil {
			t.Fatal(err)
		}
		if h.statusWrites != 0 || kvsPatches != 0 || len(h.patches) != 0 || h.calls("b") != 1 || res.RequeueAfter != conflictRetry {
			t.Errorf("on a stale copy (finalizers %v): %d status writes, %d KubervisorService patches, pod patches %v, %d detector calls, requeue %s; want none, none, none, still 1, %s",
				stale.Finalizers, h.statusWrites, kvsPatches, h.patches, h.calls("b"), res.RequeueAfter, conflictRetry)
		}
	}
	r.Client = h.client
	mustPass(h, r)
	if h.calls("b") != 2 {
		t.Errorf("once the cache caught up: %d detector calls, want 2", h.calls("b"))
	}
}

// TestAdoptionWritesPodCountsOnceComplete: while pods of the Service wait for adoption, passes do not
// rewrite the pod counts as each pod is adopted; the counts appear with the pass that finds adoption done.
func TestAdoptionWritesPodCountsOnceComplete(t *testing.T) {
	unadopted := testPod("p2", "yes", nil)
	delete(unadopted.Labels, kvv1.LabelName)
	h := newHarness(t, testService(true), testPod("p0", "yes", nil), testPod("p1", "yes", nil), unadopted, testKVS(nil, "b"))
	r := h.kvsReconciler()
	mustPass(h, r)
	if got := h.kvs().Status.Pods; got != (kvv1.PodCounts{}) {
		t.Errorf("during adoption the status counts %+v, want none written yet", got)
	}
	if _, err := h.podReconciler().Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKey{Namespace: testNS, Name: "p2"}}); err != nil {
		t.Fatal(err)
	}
	mustPass(h, r)
	if got := h.kvs().Status.Pods; got.Managed != 3 || got.InTraffic != 3 {
		t.Errorf("adoption done: status counts %+v, want 3 managed and in traffic", got)
	}
}
