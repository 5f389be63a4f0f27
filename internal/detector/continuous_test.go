package detector

import (
	"context"
	"math"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kubervisor/kubervisor/api/v1alpha1"
)

const continuousPromQL = `avg by (pod) (price_latency_seconds) / scalar(avg(price_latency_seconds))`

func TestContinuousValueDeviation(t *testing.T) {
	s := func(value, pod string) string { return promSample(value, "pod", pod) }
	inf := math.Inf(1)
	// deviation computes at run time, as the detector does: Go would fold a constant expression exactly.
	deviation := func(v float64) float64 { return math.Abs(1 - v) }

	tests := map[string]struct {
		maxDeviation *int32
		pods         []string
		status       int // 0 is 200
		body         string
		delay        time.Duration
		timeout      time.Duration // Options.Timeout; 0 is 3s
		prefix       string
		want         Result
		wantErr      []string
	}{
		"ranked by deviation then name; infinities first, NaN and values on the limit never": {
			maxDeviation: new(int32(30)),
			pods:         []string{"a", "b", "c", "d", "e", "f", "g", "h", "i"},
			body: promVector(
				s("1", "a"), s("1.31", "b"), s("1.5", "d"), s("0.5", "c"),
				s("-Inf", "f"), s("+Inf", "e"), s("NaN", "g"),
				s("0.7", "h"), s("1.3", "i"), // exactly 0.3 away, whatever the float rounding
			),
			want: Result{Anomalies: []Anomaly{
				{Pod: "e", Score: inf, Reason: "deviation +Inf > 0.3 (value +Inf, fleet average 1)"},
				{Pod: "f", Score: inf, Reason: "deviation +Inf > 0.3 (value -Inf, fleet average 1)"},
				{Pod: "c", Score: 0.5, Reason: "deviation 0.5 > 0.3 (value 0.5, fleet average 1)"},
				{Pod: "d", Score: 0.5, Reason: "deviation 0.5 > 0.3 (value 1.5, fleet average 1)"},
				{Pod: "b", Score: deviation(1.31), Reason: "deviation 0.31 > 0.3 (value 1.31, fleet average 1)"},
			}},
		},
		"default maxDeviationPercent is 75": {
			pods: []string{"a", "b", "c", "d"},
			body: promVector(s("1.75", "a"), s("0.2", "b"), s("1.76", "c"), s("0.26", "d")),
			want: Result{Anomalies: []Anomaly{
				{Pod: "b", Score: deviation(0.2), Reason: "deviation 0.8 > 0.75 (value 0.2, fleet average 1)"},
				{Pod: "c", Score: deviation(1.76), Reason: "deviation 0.76 > 0.75 (value 1.76, fleet average 1)"},
			}},
		},
		"maxDeviationPercent above 100": {
			maxDeviation: new(int32(1000)),
			pods:         []string{"a", "b"},
			body:         promVector(s("9", "a"), s("12.5", "b")),
			prefix:       "/prom",
			want: Result{Anomalies: []Anomaly{
				{Pod: "b", Score: 11.5, Reason: "deviation 11.5 > 10 (value 12.5, fleet average 1)"},
			}},
		},
		"samples about unmanaged pods are ignored and counted": {
			pods: []string{"a", "b"},
			body: promVector(s("1.1", "a"), s("0.1", "b"), s("9", "other-1"), s("0", "other-2")),
			want: Result{Ignored: 2, Anomalies: []Anomaly{
				{Pod: "b", Score: 0.9, Reason: "deviation 0.9 > 0.75 (value 0.1, fleet average 1)"},
			}},
		},
		"a vector about no managed pod is NoData": {
			pods: []string{"a"},
			body: promVector(s("9", "other")),
			want: Result{NoData: true, Ignored: 1},
		},
		"an empty vector is NoData": {
			pods: []string{"a"},
			body: promVector(),
			want: Result{NoData: true},
		},
		"only NaN is NoData": {
			pods: []string{"a", "b"},
			body: promVector(s("NaN", "a"), s("NaN", "b")),
			want: Result{NoData: true},
		},
		"several series for one pod are ambiguous": {
			pods:    []string{"a"},
			body:    promVector(promSample("1", "pod", "a", "instance", "x"), promSample("5", "pod", "a", "instance", "y")),
			wantErr: []string{`pod "a" appears in several series (one is {instance="y", pod="a"}): the query must return one value per pod`},
		},
		"several series for an unmanaged pod are ambiguous too": {
			pods:    []string{"a"},
			body:    promVector(s("1", "a"), promSample("1", "pod", "b", "instance", "x"), promSample("5", "pod", "b", "instance", "y")),
			wantErr: []string{`pod "b" appears in several series`},
		},
		"a series without the pod label is an error": {
			pods:    []string{"a"},
			body:    promVector(s("1", "a"), promSample("3", "kubernetes_pod_name", "b")),
			wantErr: []string{`for breaker "latency"`, `series {kubernetes_pod_name="b"} has no label "pod" (podNameKey)`},
		},
		"a native histogram is an error": {
			pods:    []string{"a"},
			body:    promVector(`{"metric":{"pod":"a"},"histogram":[1700000000.5,{"count":"10","sum":"3.5","buckets":[[0,"0.5","1","10"]]}]}`),
			wantErr: []string{`series {pod="a"} is a native histogram, expected a float sample`},
		},
		"a scalar is an error": {
			pods:    []string{"a"},
			body:    promScalar,
			wantErr: []string{`continuousValueDeviation promQL`, `returned a scalar, expected an instant vector with one value per pod`},
		},
		"a matrix is an error": {
			pods:    []string{"a"},
			body:    promMatrix,
			wantErr: []string{`returned a matrix, expected an instant vector with one value per pod`},
		},
		"a string is an error": {
			pods:    []string{"a"},
			body:    promString,
			wantErr: []string{`expected an instant vector with one value per pod`, `unexpected value type "string"`},
		},
		"400 bad_data is an error": {
			pods:    []string{"a"},
			status:  http.StatusBadRequest,
			body:    promBadData,
			wantErr: []string{`for breaker "latency": bad_data: invalid parameter "query"`},
		},
		"503 is an error": {
			pods:    []string{"a"},
			status:  http.StatusServiceUnavailable,
			body:    "no healthy upstream",
			wantErr: []string{`for breaker "latency": server_error: server error: 503 (body "no healthy upstream")`},
		},
		"an answer slower than the timeout is an error": {
			pods:    []string{"a"},
			body:    promVector(s("9", "a")),
			delay:   5 * time.Second,
			timeout: 100 * time.Millisecond,
			wantErr: []string{`no answer within the timeout (100ms`, "context deadline exceeded"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			status := tc.status
			if status == 0 {
				status = http.StatusOK
			}
			srv := newFakeServer(t, tc.prefix+"/api/v1/query", status, "application/json", tc.body, tc.delay)
			address := srv.hostPort()
			if tc.prefix != "" {
				address = srv.URL + tc.prefix
			}
			timeout, wantTimeoutParam := tc.timeout, ""
			if timeout == 0 {
				timeout, wantTimeoutParam = 3*time.Second, "3s"
			}
			det, err := New(&v1alpha1.BreakerStrategy{Name: "latency", ContinuousValueDeviation: &v1alpha1.ContinuousValueDeviation{
				PrometheusService:   address,
				PromQL:              continuousPromQL,
				PodNameKey:          "pod",
				MaxDeviationPercent: tc.maxDeviation,
			}}, Options{Timeout: timeout, Now: func() time.Time { return fixedNow }})
			if err != nil {
				t.Fatalf("New() error = %v", err)
			}

			got, err := det.Detect(context.Background(), Request{Namespace: "shop", KubervisorService: "pricer", Breaker: "latency", Pods: podSet(tc.pods...)})
			checkErr(t, err, tc.wantErr)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Detect() result mismatch (-want +got):\n%s", diff)
			}
			checkPromRequest(t, srv, tc.prefix, continuousPromQL, wantTimeoutParam)
		})
	}
}
