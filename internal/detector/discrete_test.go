package detector

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kubervisor/kubervisor/api/v1alpha1"
)

const discretePromQL = `sum(increase(http_requests_total{job="pricer"}[1m])) by (code, pod)`

func TestDiscreteValueOutOfList(t *testing.T) {
	// code is the value label and pod the pod label in every case.
	s := func(value, code, pod string) string { return promSample(value, "code", code, "pod", pod) }
	// ratio computes at run time, as the detector does: Go would fold a constant expression exactly.
	ratio := func(bad, good float64) float64 { return bad / (good + bad) }

	tests := map[string]struct {
		mutate   func(*v1alpha1.DiscreteValueOutOfList) // applied to a spec with goodValues [200], defaults otherwise
		pods     []string
		status   int // 0 is 200
		body     string
		delay    time.Duration
		timeout  time.Duration // Options.Timeout; 0 is 2s
		deadline time.Duration // ctx deadline given by the caller; 0 is none
		prefix   string        // path prefix of the Prometheus URL; when set the address is an http:// URL
		// wantTimeoutParam is the evaluation timeout Prometheus must receive; "" skips the check (it
		// depends on the wall clock when the caller's deadline is the shorter).
		wantTimeoutParam string
		want             Result
		wantErr          []string
	}{
		"ranked by bad ratio, then total, then name; a ratio equal to the tolerance is not anomalous": {
			pods: []string{"a", "b", "c", "d", "e", "f", "g", "h"},
			body: promVector(
				s("10", "200", "a"), s("10", "500", "a"), // 0.5: not above the tolerance
				s("2", "200", "b"), s("8", "500", "b"), // 0.8 over 10
				s("4", "200", "c"), s("16", "503", "c"), // 0.8 over 20: before b
				s("1", "200", "d"), s("4", "500", "d"), // 0.8 over 5: after b
				s("1", "200", "e"), s("9", "404", "e"), // 0.9: worst
				s("1", "500", "f"),                     // 1 event < minActivity 2: not judged
				s("1", "200", "h"), s("3", "500", "h"), // 0.75 over 4, tie with g: by name
				s("3", "500", "g"), s("1", "200", "g"),
			),
			wantTimeoutParam: "2s",
			want: Result{Anomalies: []Anomaly{
				{Pod: "e", Score: 0.9, Reason: "bad ratio 0.9 > tolerance 0.5 over 10 events (9 bad)"},
				{Pod: "c", Score: 0.8, Reason: "bad ratio 0.8 > tolerance 0.5 over 20 events (16 bad)"},
				{Pod: "b", Score: 0.8, Reason: "bad ratio 0.8 > tolerance 0.5 over 10 events (8 bad)"},
				{Pod: "d", Score: 0.8, Reason: "bad ratio 0.8 > tolerance 0.5 over 5 events (4 bad)"},
				{Pod: "g", Score: 0.75, Reason: "bad ratio 0.75 > tolerance 0.5 over 4 events (3 bad)"},
				{Pod: "h", Score: 0.75, Reason: "bad ratio 0.75 > tolerance 0.5 over 4 events (3 bad)"},
			}},
		},
		"badValues: every other value is good": {
			mutate: func(d *v1alpha1.DiscreteValueOutOfList) {
				d.GoodValues, d.BadValues = nil, []string{"500", "503"}
			},
			pods: []string{"a", "b"},
			body: promVector(
				s("1", "200", "a"), s("3", "404", "a"), s("1", "500", "a"), // 404 is good here: 0.2
				s("1", "404", "b"), s("3", "503", "b"), // 0.75
			),
			wantTimeoutParam: "2s",
			want: Result{Anomalies: []Anomaly{
				{Pod: "b", Score: 0.75, Reason: "bad ratio 0.75 > tolerance 0.5 over 4 events (3 bad)"},
			}},
		},
		"sub-1 counts are evidence (a truncating implementation sees no event)": {
			mutate: func(d *v1alpha1.DiscreteValueOutOfList) { d.MinActivity = new(int32(0)) },
			pods:   []string{"a", "b"},
			body: promVector(
				s("0.2", "200", "a"), s("0.4", "500", "a"), // 0.4 bad of 0.6
				s("0.5", "200", "b"), s("0.25", "500", "b"), // 0.33: healthy
			),
			wantTimeoutParam: "2s",
			want: Result{Anomalies: []Anomaly{
				{Pod: "a", Score: ratio(0.4, 0.2), Reason: "bad ratio 0.667 > tolerance 0.5 over 0.6 events (0.4 bad)"},
			}},
		},
		"fractional totals reach minActivity (truncated, 0.9+1.6 would be 1 event)": {
			pods: []string{"a", "b"},
			body: promVector(
				s("0.9", "200", "a"), s("1.6", "500", "a"), // 2.5 events, 0.64 bad
				s("0.4", "200", "b"), s("1.5", "500", "b"), // 1.9 events: below minActivity 2
			),
			wantTimeoutParam: "2s",
			want: Result{Anomalies: []Anomaly{
				{Pod: "a", Score: ratio(1.6, 0.9), Reason: "bad ratio 0.64 > tolerance 0.5 over 2.5 events (1.6 bad)"},
			}},
		},
		"tolerance and minActivity from the spec": {
			mutate: func(d *v1alpha1.DiscreteValueOutOfList) {
				d.Tolerance, d.MinActivity = new(int32(10)), new(int32(10))
			},
			pods: []string{"a", "b", "c"},
			body: promVector(
				s("9", "200", "a"), s("1", "500", "a"), // 0.1: not above
				s("8", "200", "b"), s("2", "500", "b"), // 0.2
				s("1", "200", "c"), s("8", "500", "c"), // 9 events < 10
			),
			wantTimeoutParam: "2s",
			want: Result{Anomalies: []Anomaly{
				{Pod: "b", Score: 0.2, Reason: "bad ratio 0.2 > tolerance 0.1 over 10 events (2 bad)"},
			}},
		},
		"a pod in several series is summed": {
			pods: []string{"a"},
			body: promVector(
				promSample("3", "code", "200", "pod", "a", "instance", "10.0.0.1:8080"),
				promSample("1", "code", "500", "pod", "a", "instance", "10.0.0.1:8080"),
				promSample("1", "code", "500", "pod", "a", "instance", "10.0.0.2:8080"),
				promSample("2", "code", "502", "pod", "a", "instance", "10.0.0.2:8080"),
			),
			wantTimeoutParam: "2s",
			want: Result{Anomalies: []Anomaly{
				{Pod: "a", Score: ratio(4, 3), Reason: "bad ratio 0.571 > tolerance 0.5 over 7 events (4 bad)"},
			}},
		},
		"samples about unmanaged pods are ignored and counted": {
			pods: []string{"a"},
			body: promVector(
				s("1", "200", "a"), s("3", "500", "a"),
				s("0", "200", "other"), s("50", "500", "other"),
			),
			prefix:           "/prometheus",
			wantTimeoutParam: "2s",
			want: Result{Ignored: 2, Anomalies: []Anomaly{
				{Pod: "a", Score: 0.75, Reason: "bad ratio 0.75 > tolerance 0.5 over 4 events (3 bad)"},
			}},
		},
		"a vector about no managed pod is NoData": {
			pods:             []string{"a"},
			body:             promVector(s("1", "200", "other"), s("9", "500", "other")),
			wantTimeoutParam: "2s",
			want:             Result{NoData: true, Ignored: 2},
		},
		"an empty vector is NoData": {
			pods:             []string{"a"},
			body:             promVector(),
			wantTimeoutParam: "2s",
			want:             Result{NoData: true},
		},
		"a NaN count is skipped": {
			pods:             []string{"a", "b"},
			body:             promVector(s("NaN", "200", "a"), s("5", "500", "a"), s("NaN", "500", "b")),
			wantTimeoutParam: "2s",
			want: Result{Anomalies: []Anomaly{
				{Pod: "a", Score: 1, Reason: "bad ratio 1 > tolerance 0.5 over 5 events (5 bad)"},
			}},
		},
		"only NaN counts is NoData": {
			pods:             []string{"a"},
			body:             promVector(s("NaN", "200", "a"), s("NaN", "500", "a")),
			wantTimeoutParam: "2s",
			want:             Result{NoData: true},
		},
		"counts of 0 are data, not NoData: the pod served nothing": {
			pods:             []string{"a"},
			body:             promVector(s("0", "200", "a"), s("0", "500", "a")),
			wantTimeoutParam: "2s",
			want:             Result{},
		},
		"Prometheus warnings are passed on": {
			pods:             []string{"a"},
			body:             promWarnings,
			wantTimeoutParam: "2s",
			want:             Result{NoData: true, Warnings: []string{"PromQL info: metric might not be a counter"}},
		},
		"an infinite count is an error": {
			pods:             []string{"a"},
			body:             promVector(s("1", "200", "a"), s("+Inf", "500", "a")),
			wantTimeoutParam: "2s",
			wantErr:          []string{`for breaker "http-errors"`, `series {code="500", pod="a"} has count +Inf: counts must be finite and non-negative`},
		},
		"a negative count is an error, even for an unmanaged pod": {
			pods:             []string{"a"},
			body:             promVector(s("1", "200", "a"), s("-2", "500", "other")),
			wantTimeoutParam: "2s",
			wantErr:          []string{`series {code="500", pod="other"} has count -2`},
		},
		"a series without the pod label is an error": {
			pods:             []string{"a"},
			body:             promVector(s("1", "200", "a"), promSample("4", "code", "500")),
			wantTimeoutParam: "2s",
			wantErr:          []string{`series {code="500"} has no label "pod" (podNameKey)`},
		},
		"a series without the key label is an error": {
			pods:             []string{"a"},
			body:             promVector(promSample("4", "pod", "a", "status", "500")),
			wantTimeoutParam: "2s",
			wantErr:          []string{`series {pod="a", status="500"} has no label "code" (key)`},
		},
		"a scalar is an error": {
			pods:             []string{"a"},
			body:             promScalar,
			wantTimeoutParam: "2s",
			wantErr:          []string{`for breaker "http-errors": discreteValueOutOfList promQL`, `returned a scalar, expected an instant vector with one counter per (code, pod)`},
		},
		"a matrix is an error": {
			pods:             []string{"a"},
			body:             promMatrix,
			wantTimeoutParam: "2s",
			wantErr:          []string{`returned a matrix, expected an instant vector`},
		},
		"a string is an error": {
			pods:             []string{"a"},
			body:             promString,
			wantTimeoutParam: "2s",
			wantErr:          []string{`expected an instant vector with one counter per (code, pod)): unmarshalerDecoder: unexpected value type "string"`},
		},
		"400 bad_data (a bad query) is an error": {
			pods:             []string{"a"},
			status:           http.StatusBadRequest,
			body:             promBadData,
			wantTimeoutParam: "2s",
			wantErr:          []string{`querying Prometheus at 127.0.0.1:`, `for breaker "http-errors": bad_data: invalid parameter "query": 1:32: parse error`},
		},
		"422 execution error is an error": {
			pods:             []string{"a"},
			status:           http.StatusUnprocessableEntity,
			body:             promExecErr,
			wantTimeoutParam: "2s",
			wantErr:          []string{`execution: query processing would load too many samples`},
		},
		"503 from a proxy is an error showing its body": {
			pods:             []string{"a"},
			status:           http.StatusServiceUnavailable,
			body:             "upstream connect error or disconnect/reset before headers",
			wantTimeoutParam: "2s",
			wantErr:          []string{`server_error: server error: 503 (body "upstream connect error or disconnect/reset before headers")`},
		},
		"an answer slower than Options.Timeout is an error": {
			pods:    []string{"a"},
			body:    promVector(s("1", "500", "a"), s("1", "500", "a")),
			delay:   5 * time.Second,
			timeout: 100 * time.Millisecond,
			wantErr: []string{`for breaker "http-errors": no answer within the timeout (100ms`, "context deadline exceeded"},
		},
		"an answer slower than the caller's deadline is an error": {
			pods:     []string{"a"},
			body:     promVector(s("1", "500", "a"), s("1", "500", "a")),
			delay:    5 * time.Second,
			deadline: 100 * time.Millisecond,
			wantErr:  []string{`for breaker "http-errors": no answer within the timeout`, "context deadline exceeded"},
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
			spec := &v1alpha1.DiscreteValueOutOfList{
				PrometheusService: address,
				PromQL:            discretePromQL,
				Key:               "code",
				PodNameKey:        "pod",
				GoodValues:        []string{"200"},
			}
			if tc.mutate != nil {
				tc.mutate(spec)
			}
			timeout := tc.timeout
			if timeout == 0 {
				timeout = 2 * time.Second
			}
			det, err := New(&v1alpha1.BreakerStrategy{Name: "http-errors", DiscreteValueOutOfList: spec},
				Options{Timeout: timeout, Now: func() time.Time { return fixedNow }})
			if err != nil {
				t.Fatalf("New() error = %v", err)
			}
			ctx := context.Background()
			if tc.deadline > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.deadline)
				defer cancel()
			}

			got, err := det.Detect(ctx, Request{Namespace: "shop", KubervisorService: "pricer", Breaker: "http-errors", Pods: podSet(tc.pods...)})
			checkErr(t, err, tc.wantErr)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Detect() result mismatch (-want +got):\n%s", diff)
			}
			checkPromRequest(t, srv, tc.prefix, discretePromQL, tc.wantTimeoutParam)
		})
	}
}

// checkPromRequest checks that exactly one instant query reached Prometheus, with the configured PromQL,
// the injected evaluation time and, when wantTimeout is set, that evaluation timeout.
func checkPromRequest(t *testing.T, srv *fakeServer, prefix, promQL, wantTimeout string) {
	t.Helper()
	reqs := srv.recorded()
	if len(reqs) != 1 {
		t.Fatalf("Prometheus received %d requests, want 1: %+v", len(reqs), reqs)
	}
	r := reqs[0]
	if r.Path != prefix+"/api/v1/query" {
		t.Errorf("request path = %q, want %q", r.Path, prefix+"/api/v1/query")
	}
	if got := r.Params.Get("query"); got != promQL {
		t.Errorf("query parameter = %q, want %q", got, promQL)
	}
	if got := r.Params.Get("time"); got != fixedNowParam {
		t.Errorf("time parameter = %q, want %q", got, fixedNowParam)
	}
	if wantTimeout != "" {
		if got := r.Params.Get("timeout"); got != wantTimeout {
			t.Errorf("timeout parameter = %q, want %q", got, wantTimeout)
		}
	}
}
