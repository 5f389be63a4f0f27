package detector

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/common/model"

	"github.com/kubervisor/kubervisor/api/v1alpha1"
)

// TestNamespacedAnswers checks SPEC §5 step 8 for the three Prometheus detectors: the namespaces shop and
// staging each run a pod web-0, and only the series of the request's namespace (shop) are judged; the
// others are counted, never acted on, and never make a pod "appear in several series".
func TestNamespacedAnswers(t *testing.T) {
	const (
		shop    = "shop"
		staging = "staging"
	)
	// ns labels a series with the namespace under the label key.
	ns := func(value, pod, key, namespace string, more ...string) string {
		return promSample(value, append([]string{"pod", pod, key, namespace}, more...)...)
	}
	discrete := func(namespaceKey *string) *v1alpha1.BreakerStrategy {
		return &v1alpha1.BreakerStrategy{Name: "b", NamespaceKey: namespaceKey, DiscreteValueOutOfList: &v1alpha1.DiscreteValueOutOfList{
			PromQL: discretePromQL, Key: "code", PodNameKey: "pod", GoodValues: []string{"200"},
		}}
	}
	continuous := func(namespaceKey *string) *v1alpha1.BreakerStrategy {
		return &v1alpha1.BreakerStrategy{Name: "b", NamespaceKey: namespaceKey, ContinuousValueDeviation: &v1alpha1.ContinuousValueDeviation{
			PromQL: continuousPromQL, PodNameKey: "pod",
		}}
	}
	peer := func(namespaceKey *string) *v1alpha1.BreakerStrategy {
		return &v1alpha1.BreakerStrategy{Name: "b", NamespaceKey: namespaceKey, PeerOutlier: &v1alpha1.PeerOutlier{
			PromQL: peerPromQL, PodNameKey: "pod", Direction: v1alpha1.PeerDirectionLow,
		}}
	}
	// In shop web-0 is healthy and web-1 is bad; in staging web-0 is very bad.
	discreteBody := func(key string) string {
		return promVector(
			ns("10", "web-0", key, shop, "code", "200"), ns("0", "web-0", key, shop, "code", "500"),
			ns("1", "web-1", key, shop, "code", "200"), ns("9", "web-1", key, shop, "code", "500"),
			ns("30", "web-0", key, staging, "code", "500"),
		)
	}
	web1 := Anomaly{Pod: "web-1", Score: 0.9, Reason: "bad ratio 0.9 > tolerance 0.5 over 10 events (9 bad)"}
	// web-0 with staging's 30 bad events added to its 10 good ones.
	web0Mixed := Anomaly{Pod: "web-0", Score: 0.75, Reason: "bad ratio 0.75 > tolerance 0.5 over 40 events (30 bad)"}
	// In shop web-0, web-1 and web-2 (without the label) read about 10; in staging web-0 and web-9 read 0.
	peerBody := func(key string) string {
		return promVector(
			ns("10", "web-0", key, shop), ns("10.25", "web-1", key, shop), promSample("10.5", "pod", "web-2"),
			ns("0", "web-0", key, staging), ns("0", "web-9", key, staging),
		)
	}

	tests := map[string]struct {
		breaker   *v1alpha1.BreakerStrategy // prometheusService is filled in
		namespace string                    // Request.Namespace
		body      string
		want      Result
		wantErr   []string
	}{
		"discrete: the other namespace's web-0 is ignored": {
			breaker:   discrete(nil),
			namespace: shop,
			body:      discreteBody("namespace"),
			want:      Result{Ignored: 1, IgnoredOtherNamespace: 1, Anomalies: []Anomaly{web1}},
		},
		"discrete: namespaceKey \"\" turns the check off and web-0 is judged on both namespaces": {
			breaker:   discrete(new("")),
			namespace: shop,
			body:      discreteBody("namespace"),
			want:      Result{Anomalies: []Anomaly{web1, web0Mixed}},
		},
		"discrete: a request without a namespace turns the check off": {
			breaker: discrete(nil),
			body:    discreteBody("namespace"),
			want:    Result{Anomalies: []Anomaly{web1, web0Mixed}},
		},
		"discrete: another namespaceKey": {
			breaker:   discrete(new("kubernetes_namespace")),
			namespace: shop,
			body:      discreteBody("kubernetes_namespace"),
			want:      Result{Ignored: 1, IgnoredOtherNamespace: 1, Anomalies: []Anomaly{web1}},
		},
		"discrete: a label other than namespaceKey is not read": {
			breaker:   discrete(new("kubernetes_namespace")),
			namespace: shop,
			body:      discreteBody("namespace"),
			want:      Result{Anomalies: []Anomaly{web1, web0Mixed}},
		},
		"discrete: only other namespaces is NoData": {
			breaker:   discrete(nil),
			namespace: "prod",
			body:      discreteBody("namespace"),
			want:      Result{NoData: true, Ignored: 5, IgnoredOtherNamespace: 5},
		},
		"continuous: the other namespace's web-0 is ignored": {
			breaker:   continuous(nil),
			namespace: shop,
			body:      promVector(ns("1", "web-0", "namespace", shop), ns("1.1", "web-1", "namespace", shop), ns("5", "web-0", "namespace", staging)),
			want:      Result{Ignored: 1, IgnoredOtherNamespace: 1},
		},
		"continuous: without the check web-0 is in two series": {
			breaker:   continuous(new("")),
			namespace: shop,
			body:      promVector(ns("1", "web-0", "namespace", shop), ns("1.1", "web-1", "namespace", shop), ns("5", "web-0", "namespace", staging)),
			wantErr:   []string{`pod "web-0" appears in several series`},
		},
		"continuous: only other namespaces is NoData": {
			breaker:   continuous(nil),
			namespace: shop,
			body:      promVector(ns("1", "web-0", "namespace", staging), ns("5", "web-1", "namespace", staging)),
			want:      Result{NoData: true, Ignored: 2, IgnoredOtherNamespace: 2},
		},
		"peer outlier: staging's pods neither count as peers nor are judged": {
			breaker:   peer(nil),
			namespace: shop,
			body:      peerBody("namespace"),
			want:      Result{Ignored: 2, IgnoredOtherNamespace: 2},
		},
		// Without the check the answer holds web-0 of both namespaces: which to judge would be a guess.
		"peer outlier: without the check staging's web-0 is in two series": {
			breaker:   peer(new("")),
			namespace: shop,
			body:      peerBody("namespace"),
			wantErr:   []string{`pod "web-0" appears in several series`},
		},
		"peer outlier: another namespaceKey": {
			breaker:   peer(new("kubernetes_namespace")),
			namespace: shop,
			body:      peerBody("kubernetes_namespace"),
			want:      Result{Ignored: 2, IgnoredOtherNamespace: 2},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			srv := newFakeServer(t, "/api/v1/query", http.StatusOK, "application/json", tc.body, 0)
			switch b := tc.breaker; {
			case b.DiscreteValueOutOfList != nil:
				b.DiscreteValueOutOfList.PrometheusService = srv.hostPort()
			case b.ContinuousValueDeviation != nil:
				b.ContinuousValueDeviation.PrometheusService = srv.hostPort()
			default:
				b.PeerOutlier.PrometheusService = srv.hostPort()
			}
			det, err := New(tc.breaker, Options{Timeout: time.Second})
			if err != nil {
				t.Fatalf("New() error = %v", err)
			}
			got, err := det.Detect(context.Background(), Request{Namespace: tc.namespace, Pods: podSet("web-0", "web-1", "web-2")})
			checkErr(t, err, tc.wantErr)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Detect() result mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestInNamespaceDoesNotCopy checks that the common case, an answer about one namespace, costs no copy of
// the vector.
func TestInNamespaceDoesNotCopy(t *testing.T) {
	v := model.Vector{
		{Metric: model.Metric{"pod": "a", "namespace": "shop"}, Value: 1},
		{Metric: model.Metric{"pod": "b"}, Value: 2},
		{Metric: model.Metric{"pod": "c", "namespace": ""}, Value: 3},
	}
	got, dropped := inNamespace(v, "namespace", "shop")
	if dropped != 0 || len(got) != len(v) || &got[0] != &v[0] {
		t.Errorf("inNamespace() = %d samples, %d dropped, copied %t; want the same 3 samples, none dropped", len(got), dropped, &got[0] != &v[0])
	}
}
