package controller

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/metrics"
)

// podSeries counts the kubervisor_pods series of namespace ns.
func podSeries(t *testing.T, ns string) int {
	t.Helper()
	reg := prometheus.NewRegistry()
	if err := reg.Register(metrics.Pods); err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range families {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "namespace" && l.GetValue() == ns {
					n++
				}
			}
		}
	}
	return n
}

// A pass skips setting pod counts that did not change, but a KubervisorService whose series were dropped
// (metrics.Forget, beside memory.forget) gets them back at its next pass, even with the same counts.
func TestPodCountsAreSetAgainAfterTheSeriesAreForgotten(t *testing.T) {
	kvs := &kvv1.KubervisorService{ObjectMeta: metav1.ObjectMeta{Namespace: "metrics-forget", Name: "kvs"}}
	counts := kvv1.PodCounts{Managed: 4, Ready: 4, InTraffic: 3, Ejected: 1}
	m := newMemory()
	recordPodMetrics(kvs, counts, m.of(kvs, time.Time{}))
	if n := podSeries(t, kvs.Namespace); n != 6 {
		t.Fatalf("%d series after the first pass, want 6 (one per state)", n)
	}
	metrics.Forget(kvs.Namespace, kvs.Name)
	m.forget(client.ObjectKeyFromObject(kvs))
	recordPodMetrics(kvs, counts, m.of(kvs, time.Time{}))
	if n := podSeries(t, kvs.Namespace); n != 6 {
		t.Fatalf("%d series after forgetting and a pass with the same counts, want 6", n)
	}
}
