package fleet

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func runningPod(name string, ready bool) *corev1.Pod {
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", Labels: map[string]string{"app": "pricer"}},
		Status: corev1.PodStatus{
			Phase: corev1.PodRunning, PodIP: "10.0.0.1",
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: status}},
		},
	}
}

// requests reads the fleet's request counter of a pod and code (0 when the series does not exist).
func requests(t *testing.T, f *Fleet, pod, code string) float64 {
	t.Helper()
	v, _ := requestSeries(t, f, pod, code)
	return v
}

// requestSeries returns the value of the request counter of pod and code (if any), and the number
// of request series.
func requestSeries(t *testing.T, f *Fleet, pod, code string) (value float64, series int) {
	t.Helper()
	mfs, err := f.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != MetricRequests {
			continue
		}
		for _, m := range mf.GetMetric() {
			series++
			var p, c string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case PodLabel:
					p = l.GetValue()
				case CodeLabel:
					c = l.GetValue()
				}
			}
			if p == pod && c == code {
				value = m.GetCounter().GetValue()
			}
		}
	}
	return value, series
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestFleet proves the fleet serves the pods it selects, only sends requests to Ready ones, answers
// exactly the error rate injected, forgets vanished pods and refuses unknown ones.
func TestFleet(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset(runningPod("a", true), runningPod("b", true), runningPod("c", false))
	f, err := Start(ctx, cs, Options{Namespace: "shop", Selector: "app=pricer", Interval: 5 * time.Millisecond, BaselineErrorRate: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Stop()

	if err := f.SetErrorRate("a", 0.25); err != nil {
		t.Fatal(err)
	}
	if err := f.SetErrorRate("nobody", 0.5); !errors.Is(err, ErrUnknownPod) {
		t.Fatalf("SetErrorRate on an unknown pod: got %v, want ErrUnknownPod", err)
	}
	if err := f.SetErrorRate("a", 1.5); err == nil {
		t.Fatal("SetErrorRate accepted a ratio above 1")
	}
	if err := f.SetDeviation("b", -1); err == nil {
		t.Fatal("SetDeviation accepted a negative factor")
	}
	// A factor of 0 (a pod answering price 0) is a fault the fleet can play.
	if err := f.SetDeviation("b", 0); err != nil {
		t.Fatal(err)
	}
	if err := f.SetDeviation("b", 3); err != nil {
		t.Fatal(err)
	}
	// Errors are injected from the first whole round on; wait for a few more.
	eventually(t, "pods a and b answered requests", func() bool {
		return requests(t, f, "a", "500") >= 20 && requests(t, f, "b", "200") >= 80
	})

	f.mu.Lock() // a consistent reading, between two rounds
	a200, a500, a404 := requests(t, f, "a", "200"), requests(t, f, "a", "500"), requests(t, f, "a", "404")
	b500, b404 := requests(t, f, "b", "500"), requests(t, f, "b", "404")
	c200, c500, c404 := requests(t, f, "c", "200"), requests(t, f, "c", "500"), requests(t, f, "c", "404")
	f.mu.Unlock()
	if got := c200 + c500 + c404; got != 0 {
		t.Errorf("NotReady pod c answered %v requests, want 0", got)
	}
	if b500 != 0 || b404 != 0 || a404 != 0 {
		t.Errorf("errors beyond the injected ones: b500=%v b404=%v a404=%v", b500, b404, a404)
	}
	// The rate holds to the request (one round of 10 came before the fault).
	if ratio := a500 / (a200 + a500); ratio < 0.2 || ratio > 0.25 {
		t.Errorf("pod a error ratio %v, want about 0.25 (200: %v, 500: %v)", ratio, a200, a500)
	}
	if got := f.Anomalies(); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("Anomalies() = %v, want [a b] (error rate first)", got)
	}

	if err := cs.CoreV1().Pods("shop").Delete(ctx, "a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// 3 codes for each of b and c: a's series are gone.
	eventually(t, "pod a is no longer served", func() bool { _, n := requestSeries(t, f, "", ""); return n == 6 })
	if got := f.Anomalies(); !slices.Equal(got, []string{"b"}) {
		t.Errorf("Anomalies() after deleting a = %v, want [b]", got)
	}

	resp, err := http.Post(f.URL()+"/heal", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := resp.Body.Close(); err != nil {
		t.Fatal(err)
	}
	if got := f.Anomalies(); len(got) != 0 {
		t.Errorf("Anomalies() after POST /heal = %v, want none", got)
	}
	resp, err = http.Post(f.URL()+"/fault?pod=a&errors=0.5", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := resp.Body.Close(); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("POST /fault for a deleted pod: %s, want 404", resp.Status)
	}
}

func TestQueries(t *testing.T) {
	for got, want := range map[string]string{
		DiscreteQuery(""):     DiscretePromQL,
		ContinuousQuery(""):   ContinuousPromQL,
		LatencyQuery(""):      LatencyPromQL,
		DiscreteQuery("shop"): `sum(increase(demo_http_requests_total{namespace="shop"}[20s])) by (code, pod)`,
		ContinuousQuery("ns"): `avg by (pod) (demo_price{namespace="ns"}) / scalar(quantile(0.5, avg by (pod) (demo_price{namespace="ns"})))`,
	} {
		if got != want {
			t.Errorf("got  %s\nwant %s", got, want)
		}
	}
}
