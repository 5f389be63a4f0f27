package controller

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/intstr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
)

// logLines records the Info lines (level 0) of a logger.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) context() context.Context {
	return logf.IntoContext(context.Background(), funcr.New(func(prefix, args string) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.lines = append(l.lines, args)
	}, funcr.Options{Verbosity: 0}))
}

func (l *logLines) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range l.lines {
		if strings.Contains(line, `"msg"="`+msg+`"`) {
			n++
		}
	}
	return n
}

// TestFaultsAreLoggedAtTheDefaultLevel: a failing detector, a storm and a refused eviction each have a line
// at the default level, once per change (not at every evaluation of the same failure).
func TestFaultsAreLoggedAtTheDefaultLevel(t *testing.T) {
	fleet := []client.Object{testService(true)}
	for i := range 8 {
		fleet = append(fleet, testPod(fmt.Sprintf("p%d", i), "yes", nil))
	}
	h := newHarness(t, append(fleet, testKVS(nil, "b"))...)
	r := h.kvsReconciler()
	var logs logLines
	ctx := logs.context()
	pass := func() {
		t.Helper()
		if _, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKey{Namespace: testNS, Name: "kvs"}}); err != nil {
			t.Fatal(err)
		}
		h.clock.Step(5*time.Second + wakeGrid)
	}
	h.answer("b", fmt.Errorf("connection refused"))
	pass()
	pass()
	if n := logs.count("Detector failed; no pod is ejected"); n != 1 {
		t.Errorf("%d lines for a detector failing twice the same way, want 1", n)
	}
	h.answer("b", nil, "p0", "p1", "p2", "p3", "p4")
	pass()
	pass()
	if n := logs.count("Storm suspected; nobody is ejected"); n != 1 {
		t.Errorf("%d lines for a storm over two evaluations, want 1", n)
	}

	h = newHarness(t, testService(true), testKVS(func(k *kvv1.KubervisorService) {
		k.Spec.DefaultActivator = &kvv1.ActivatorStrategy{Mode: kvv1.ActivatorModeRetryAndKill, Period: new(intstr.FromString("10s")),
			MaxRetryCount: new(int32(0))}
	}, "b"), ejectedPod("e", 1, t0.Add(-time.Minute)))
	h.evictor.err = apierrors.NewTooManyRequests("Cannot evict pod as it would violate the pod's disruption budget.", 10)
	if _, err := h.podReconciler().Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKey{Namespace: testNS, Name: "e"}}); err != nil {
		t.Fatal(err)
	}
	if n := logs.count("Eviction refused; the pod stays out of traffic"); n != 1 {
		t.Errorf("%d lines for a refused eviction, want 1 (evicted: %v)", n, h.evictor.evicted)
	}
}
