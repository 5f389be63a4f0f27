package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The metrics, by the names of test/fleet (queries.go) so that its PromQL reads a real fleet too. They
// carry no pod or namespace label: Prometheus adds those from Kubernetes service discovery.
const (
	metricRequests = "demo_http_requests_total"
	metricPrice    = "demo_price"
	metricDuration = "demo_request_duration_seconds"
	codeLabel      = "code"
)

// behaviour is what tests change at runtime.
type behaviour struct {
	// ErrorRate is the share of requests answered 500 (0..1).
	ErrorRate float64 `json:"errorRate"`
	// Deviation multiplies the price and the latency (>= 0; 1 is healthy).
	Deviation float64 `json:"deviation"`
	// Ready is what GET /healthz answers.
	Ready bool `json:"ready"`
}

// app is a pretend price service: one pod of the real-node fleet.
type app struct {
	basePrice float64
	delay     time.Duration
	initial   behaviour
	// sleep waits d unless ctx ends first, and reports whether it waited d (replaced in tests).
	sleep func(ctx context.Context, d time.Duration) bool

	registry *prometheus.Registry
	requests *prometheus.CounterVec
	duration prometheus.Histogram
	priceNow prometheus.GaugeFunc

	mu          sync.Mutex
	now         behaviour
	terminating bool    // SIGTERM came: /healthz fails whatever now.Ready says
	errAcc      float64 // the share of an error carried to the next request, so that rates are exact
}

func newApp(basePrice float64, delay time.Duration, initial behaviour) (*app, error) {
	if err := cmp.Or(validateErrorRate(initial.ErrorRate), validateDeviation(initial.Deviation)); err != nil {
		return nil, err
	}
	a := &app{basePrice: basePrice, delay: delay, initial: initial, now: initial, sleep: sleepCtx}
	a.registry = prometheus.NewRegistry()
	a.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: metricRequests, Help: "Requests answered, by code.",
	}, []string{codeLabel})
	// Series start at zero so that increase() sees the first errors.
	for _, code := range []int{http.StatusOK, http.StatusInternalServerError} {
		a.requests.WithLabelValues(strconv.Itoa(code))
	}
	a.duration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: metricDuration, Help: "Durations of the requests answered.",
		Buckets: []float64{0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5},
	})
	// NOTE: the price is computed at scrape time, so that a deviation shows at once, with or without
	// traffic.
	a.priceNow = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: metricPrice, Help: "The price this pod computes."}, a.price)
	a.registry.MustRegister(a.requests, a.duration, a.priceNow)
	return a, nil
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func validateErrorRate(v float64) error {
	if !(v >= 0 && v <= 1) {
		return fmt.Errorf("error rate %v is not within 0..1", v)
	}
	return nil
}

func validateDeviation(v float64) error {
	if !(v >= 0) || math.IsInf(v, 0) {
		return fmt.Errorf("deviation %v is not a non-negative number", v)
	}
	return nil
}

// price is the base price times the deviation, within ±1%.
func (a *app) price() float64 {
	a.mu.Lock()
	dev := a.now.Deviation
	a.mu.Unlock()
	return a.basePrice * dev * (1 + 0.01*(2*rand.Float64()-1))
}

// handler serves:
//
//	GET  /                                     a price (200), or 500 for a share errorRate of requests
//	GET  /metrics                              the metrics, for Prometheus
//	GET  /healthz                              200 when ready and not shutting down, else 503 (the readiness probe)
//	GET  /state                                the behaviour, as JSON
//	POST /fault?errorRate=0.5&deviation=3      change either or both
//	POST /heal                                 back to the error rate and deviation of the flags
//	POST /ready?value=false                    make /healthz fail (true: succeed)
//
// The POST endpoints answer the new behaviour, as JSON.
func (a *app) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", a.handlePrice)
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", a.handleHealthz)
	mux.HandleFunc("GET /state", a.handleState)
	mux.HandleFunc("POST /fault", a.handleFault)
	mux.HandleFunc("POST /heal", a.handleHeal)
	mux.HandleFunc("POST /ready", a.handleReady)
	return mux
}

func (a *app) handlePrice(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	a.mu.Lock()
	dev := a.now.Deviation
	a.errAcc += a.now.ErrorRate
	fail := a.errAcc >= 1
	if fail {
		a.errAcc--
	}
	a.mu.Unlock()

	if !a.sleep(r.Context(), time.Duration(float64(a.delay)*dev)) {
		return // the client has gone
	}
	code := http.StatusOK
	if fail {
		code = http.StatusInternalServerError
		http.Error(w, "injected error", code)
	} else {
		writeJSON(w, map[string]float64{"price": a.price()})
	}
	a.requests.WithLabelValues(strconv.Itoa(code)).Inc()
	a.duration.Observe(time.Since(start).Seconds())
}

func (a *app) handleHealthz(w http.ResponseWriter, _ *http.Request) {
	a.mu.Lock()
	ready := a.now.Ready && !a.terminating
	a.mu.Unlock()
	if !ready {
		http.Error(w, "not ready", http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}

// terminate makes /healthz fail for good: the pod is shutting down.
func (a *app) terminate() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.terminating = true
}

func (a *app) handleState(w http.ResponseWriter, _ *http.Request) {
	a.mu.Lock()
	b := a.now
	a.mu.Unlock()
	writeJSON(w, b)
}

func (a *app) handleFault(w http.ResponseWriter, r *http.Request) {
	errorRate, hasRate, err := floatParam(r, "errorRate", validateErrorRate)
	deviation, hasDev, devErr := floatParam(r, "deviation", validateDeviation)
	if err == nil {
		err = devErr
	}
	if err == nil && !hasRate && !hasDev {
		err = errors.New("need errorRate (0..1) or deviation (>= 0), or both")
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	a.change(w, func(b *behaviour) {
		if hasRate {
			b.ErrorRate = errorRate
		}
		if hasDev {
			b.Deviation = deviation
		}
	})
}

// floatParam returns the query parameter key of r as a number that check accepts, and whether it is
// there.
func floatParam(r *http.Request, key string, check func(float64) error) (float64, bool, error) {
	q := r.URL.Query()
	if !q.Has(key) {
		return 0, false, nil
	}
	v, err := strconv.ParseFloat(q.Get(key), 64)
	if err == nil {
		err = check(v)
	}
	if err != nil {
		return 0, true, fmt.Errorf("%s: %w", key, err)
	}
	return v, true, nil
}

func (a *app) handleHeal(w http.ResponseWriter, _ *http.Request) {
	a.change(w, func(b *behaviour) { b.ErrorRate, b.Deviation = a.initial.ErrorRate, a.initial.Deviation })
}

func (a *app) handleReady(w http.ResponseWriter, r *http.Request) {
	ready, err := strconv.ParseBool(r.URL.Query().Get("value"))
	if err != nil {
		http.Error(w, "value must be true or false", http.StatusBadRequest)
		return
	}
	a.change(w, func(b *behaviour) { b.Ready = ready })
}

// change applies fn to the behaviour and answers the result.
func (a *app) change(w http.ResponseWriter, fn func(*behaviour)) {
	a.mu.Lock()
	fn(&a.now)
	b := a.now
	a.mu.Unlock()
	writeJSON(w, b)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
