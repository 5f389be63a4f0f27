package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/kubervisor/kubervisor/test/fleet"
)

// newTestApp returns an app that records the delays it would sleep instead of sleeping.
func newTestApp(t *testing.T, delay time.Duration, initial behaviour) (*app, *[]time.Duration) {
	t.Helper()
	a, err := newApp(100, delay, initial)
	if err != nil {
		t.Fatal(err)
	}
	var slept []time.Duration
	a.sleep = func(_ context.Context, d time.Duration) bool {
		slept = append(slept, d)
		return true
	}
	return a, &slept
}

func do(t *testing.T, a *app, method, target string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	a.handler().ServeHTTP(rec, httptest.NewRequest(method, target, nil))
	return rec
}

func decode[T any](t *testing.T, rec *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Fatalf("decoding %q: %v", rec.Body.String(), err)
	}
	return v
}

func TestPriceFollowsTheDeviation(t *testing.T) {
	a, slept := newTestApp(t, 20*time.Millisecond, behaviour{Deviation: 1, Ready: true})
	for _, dev := range []float64{1, 3, 0} {
		if rec := do(t, a, http.MethodPost, "/fault?deviation="+jsonNumber(dev)); rec.Code != http.StatusOK {
			t.Fatalf("POST /fault: %d %s", rec.Code, rec.Body)
		}
		rec := do(t, a, http.MethodGet, "/")
		if rec.Code != http.StatusOK {
			t.Fatalf("GET / with deviation %v: %d, want 200", dev, rec.Code)
		}
		price := decode[map[string]float64](t, rec)["price"]
		lo, hi := 99*dev, 101*dev
		if price < lo || price > hi {
			t.Errorf("GET / with deviation %v: price %v, want within [%v, %v]", dev, price, lo, hi)
		}
		if gauge := testutil.ToFloat64(a.priceNow); gauge < lo || gauge > hi {
			t.Errorf("demo_price with deviation %v = %v, want within [%v, %v]", dev, gauge, lo, hi)
		}
	}
	if want := []time.Duration{20 * time.Millisecond, 60 * time.Millisecond, 0}; !slices.Equal(*slept, want) {
		t.Errorf("delays %v, want %v (the delay times the deviation)", *slept, want)
	}
}

func jsonNumber(f float64) string {
	b, _ := json.Marshal(f)
	return string(b)
}

func TestErrorRateIsExact(t *testing.T) {
	a, _ := newTestApp(t, 0, behaviour{ErrorRate: 0.5, Deviation: 1, Ready: true})
	var codes []int
	for range 6 {
		codes = append(codes, do(t, a, http.MethodGet, "/").Code)
	}
	if want := []int{200, 500, 200, 500, 200, 500}; !slices.Equal(codes, want) {
		t.Errorf("codes %v, want %v", codes, want)
	}
	if got := testutil.ToFloat64(a.requests.WithLabelValues("500")); got != 3 {
		t.Errorf("demo_http_requests_total{code=500} = %v, want 3", got)
	}
	if got := testutil.ToFloat64(a.requests.WithLabelValues("200")); got != 3 {
		t.Errorf("demo_http_requests_total{code=200} = %v, want 3", got)
	}
}

// TestMetricsAreTheFleetsWithoutPodLabels scrapes /metrics: the names are test/fleet's, so that its
// PromQL reads a real fleet, and no series carries a pod or namespace label, which Prometheus adds
// from service discovery (a label of the app's own would clash with it).
func TestMetricsAreTheFleetsWithoutPodLabels(t *testing.T) {
	a, _ := newTestApp(t, 0, behaviour{Deviation: 1, Ready: true})
	do(t, a, http.MethodGet, "/")
	rec := do(t, a, http.MethodGet, "/metrics")
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics: %d", rec.Code)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(rec.Body.String()))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for name, mf := range families {
		names = append(names, name)
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == fleet.PodLabel || l.GetName() == fleet.NamespaceLabel {
					t.Errorf("%s has the label %s", name, l.GetName())
				}
			}
		}
	}
	slices.Sort(names)
	want := []string{fleet.MetricPrice, fleet.MetricRequests, fleet.MetricDuration}
	slices.Sort(want)
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("metric families (-want +got):\n%s", diff)
	}
	// Both codes are there from the start, so that increase() counts the first errors.
	var codes []string
	for _, m := range families[fleet.MetricRequests].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == fleet.CodeLabel {
				codes = append(codes, l.GetValue())
			}
		}
	}
	slices.Sort(codes)
	if !slices.Equal(codes, []string{"200", "500"}) {
		t.Errorf("codes of %s: %v, want [200 500]", fleet.MetricRequests, codes)
	}
	if n := families[fleet.MetricDuration].GetMetric()[0].GetHistogram().GetSampleCount(); n != 1 {
		t.Errorf("%s counts %d requests, want 1", fleet.MetricDuration, n)
	}
}

func TestControlEndpoints(t *testing.T) {
	initial := behaviour{ErrorRate: 0.1, Deviation: 1, Ready: true}
	tests := map[string]struct {
		requests []string // "METHOD target", in order; the last one's answer is checked
		wantCode int
		want     behaviour // GET /state afterwards
	}{
		"a fault changes both":           {[]string{"POST /fault?errorRate=0.5&deviation=3"}, 200, behaviour{0.5, 3, true}},
		"a fault changes one":            {[]string{"POST /fault?deviation=0"}, 200, behaviour{0.1, 0, true}},
		"heal restores the flags":        {[]string{"POST /fault?errorRate=1&deviation=2", "POST /heal"}, 200, initial},
		"heal keeps readiness":           {[]string{"POST /ready?value=false", "POST /heal"}, 200, behaviour{0.1, 1, false}},
		"an error rate above 1":          {[]string{"POST /fault?errorRate=1.5"}, 400, initial},
		"a negative deviation":           {[]string{"POST /fault?deviation=-1"}, 400, initial},
		"a bad value leaves the other":   {[]string{"POST /fault?errorRate=0.5&deviation=x"}, 400, initial},
		"a fault without parameters":     {[]string{"POST /fault"}, 400, initial},
		"a fault through GET":            {[]string{"GET /fault?errorRate=1"}, 405, initial},
		"unready":                        {[]string{"POST /ready?value=false"}, 200, behaviour{0.1, 1, false}},
		"ready again":                    {[]string{"POST /ready?value=false", "POST /ready?value=true"}, 200, initial},
		"a readiness that is not a bool": {[]string{"POST /ready?value=maybe"}, 400, initial},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			a, _ := newTestApp(t, 0, initial)
			var rec *httptest.ResponseRecorder
			for _, r := range tc.requests {
				method, target, _ := strings.Cut(r, " ")
				rec = do(t, a, method, target)
			}
			if rec.Code != tc.wantCode {
				t.Errorf("%s: %d %q, want %d", tc.requests[len(tc.requests)-1], rec.Code, rec.Body, tc.wantCode)
			}
			if got := decode[behaviour](t, do(t, a, http.MethodGet, "/state")); got != tc.want {
				t.Errorf("state %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestHealthzFollowsReadiness(t *testing.T) {
	a, _ := newTestApp(t, 0, behaviour{Deviation: 1, Ready: true})
	for _, step := range []struct {
		set  string
		want int
	}{{"", 200}, {"false", 503}, {"true", 200}} {
		if step.set != "" {
			do(t, a, http.MethodPost, "/ready?value="+step.set)
		}
		if got := do(t, a, http.MethodGet, "/healthz").Code; got != step.want {
			t.Errorf("GET /healthz after ready=%q: %d, want %d", step.set, got, step.want)
		}
	}
}

func TestNewAppRefusesBadFlags(t *testing.T) {
	for _, b := range []behaviour{{ErrorRate: -0.1, Deviation: 1}, {ErrorRate: 2, Deviation: 1}, {Deviation: -1}} {
		if _, err := newApp(100, 0, b); err == nil {
			t.Errorf("newApp(%+v): no error", b)
		}
	}
}

// TestShutdownFinishesRequestsInFlight: once serve's context ends, a request in flight is answered,
// new connections are refused, and serve returns nil.
func TestShutdownFinishesRequestsInFlight(t *testing.T) {
	a, err := newApp(100, 300*time.Millisecond, behaviour{Deviation: 1, Ready: true})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() { served <- serve(ctx, ln, a, 0, 5*time.Second) }()

	answered := make(chan int, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/")
		if err != nil {
			t.Errorf("the request in flight: %v", err)
			answered <- 0
			return
		}
		_ = resp.Body.Close()
		answered <- resp.StatusCode
	}()
	time.Sleep(100 * time.Millisecond) // the request is in its 300ms delay
	cancel()

	expectServed(t, served, 5*time.Second)
	if code := <-answered; code != http.StatusOK {
		t.Errorf("the request in flight was answered %d, want 200", code)
	}
	if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		_ = conn.Close()
		t.Error("a new connection was accepted after the shutdown")
	}
}

// TestShutdownServesForTheDelay: after SIGTERM (serve's context ending) the app goes on answering new
// connections for the delay, with /healthz failing, so that clients can drop it from their endpoints
// first; then it refuses them.
func TestShutdownServesForTheDelay(t *testing.T) {
	a, err := newApp(100, 0, behaviour{Deviation: 1, Ready: true})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() { served <- serve(ctx, ln, a, time.Second, 5*time.Second) }()
	get := func(path string) (int, error) {
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}} // a new connection each time
		resp, err := c.Get(base + path)
		if err != nil {
			return 0, err
		}
		_ = resp.Body.Close()
		return resp.StatusCode, nil
	}
	if code, err := get("/healthz"); err != nil || code != http.StatusOK {
		t.Fatalf("/healthz before the shutdown = %d, %v; want 200", code, err)
	}
	cancel()
	// The 503 shows that the shutdown began; within the delay, a price is still answered.
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, err := get("/healthz")
		if err != nil {
			t.Fatalf("/healthz during the delay: %v", err)
		}
		if code == http.StatusServiceUnavailable {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/healthz still answers %d after the shutdown began", code)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if code, err := get("/"); err != nil || code != http.StatusOK {
		t.Errorf("GET / during the delay = %d, %v; want 200", code, err)
	}
	expectServed(t, served, 10*time.Second)
	if _, err := get("/"); err == nil {
		t.Error("a connection after the shutdown was accepted")
	}
}

// expectServed fails the test unless serve returns nil on served within bound (a bound for a hang, not a
// timing assertion).
func expectServed(t *testing.T, served <-chan error, bound time.Duration) {
	t.Helper()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("serve() = %v, want nil", err)
		}
	case <-time.After(bound):
		t.Fatalf("serve() did not return within %s of the shutdown", bound)
	}
}
