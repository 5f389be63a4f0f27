package main

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net"
	"net/http"
	"sync"
	"time"
)

// detector is the loopback customService detector every breaker of the benchmark asks: an HTTP server
// on 127.0.0.1 that answers GET ?namespace=&kubervisorservice=&breaker= with {"pods": [...]} after a
// fixed latency. It records when each breaker called (to measure the intervals between evaluations)
// and, for the groups it is told to flag, when its answer first named the pod (to measure reaction).
type detector struct {
	latency time.Duration
	ln      net.Listener
	srv     *http.Server

	mu         sync.Mutex
	calls      map[string][]time.Time // namespace/kubervisorservice -> arrival of each call
	anomalies  map[string]string      // namespace/kubervisorservice -> the pod to name
	firstNamed map[string]time.Time   // namespace/kubervisorservice -> end of the first answer naming its pod
	bad        int                    // calls without namespace or kubervisorservice
}

func startDetector(latency time.Duration) (*detector, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	d := &detector{
		latency:    latency,
		ln:         ln,
		calls:      map[string][]time.Time{},
		anomalies:  map[string]string{},
		firstNamed: map[string]time.Time{},
	}
	d.srv = &http.Server{Handler: http.HandlerFunc(d.serve), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = d.srv.Serve(ln) }() // Serve returns ErrServerClosed on close
	return d, nil
}

// URL is the customService url of the breakers.
func (d *detector) URL() string { return "http://" + d.ln.Addr().String() + "/detect" }

func (d *detector) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := d.srv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		_ = d.srv.Close()
	}
}

func (d *detector) serve(w http.ResponseWriter, r *http.Request) {
	arrived := time.Now()
	q := r.URL.Query()
	ns, kvs := q.Get("namespace"), q.Get("kubervisorservice")
	key := ns + "/" + kvs
	d.mu.Lock()
	if ns == "" || kvs == "" {
		d.bad++
	} else {
		d.calls[key] = append(d.calls[key], arrived)
	}
	d.mu.Unlock()

	if d.latency > 0 {
		t := time.NewTimer(d.latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	d.mu.Lock()
	pod := d.anomalies[key]
	d.mu.Unlock()
	pods := []string{}
	if pod != "" {
		pods = append(pods, pod)
	}
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(map[string][]string{"pods": pods}); err != nil {
		return
	}
	if pod != "" {
		answered := time.Now()
		d.mu.Lock()
		if _, seen := d.firstNamed[key]; !seen {
			d.firstNamed[key] = answered
		}
		d.mu.Unlock()
	}
}

// flag makes the detector name pod in its answers to the breaker of key (namespace/kubervisorservice).
func (d *detector) flag(anomalies map[string]string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	maps.Copy(d.anomalies, anomalies)
}

// firstNamedAt is when the answer to key first named its pod.
func (d *detector) firstNamedAt(key string) (time.Time, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	t, ok := d.firstNamed[key]
	return t, ok
}

// callStats are the calls in [from, to): their number, and the interval between successive calls of
// one breaker (both calls in the window), in seconds.
func (d *detector) callStats(from, to time.Time) (calls int, intervals []float64, breakers int, bad int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, times := range d.calls {
		var prev time.Time
		seen := false
		for _, t := range times {
			if t.Before(from) || !t.Before(to) {
				continue
			}
			calls++
			if !prev.IsZero() {
				intervals = append(intervals, t.Sub(prev).Seconds())
			}
			prev = t
			seen = true
		}
		if seen {
			breakers++
		}
	}
	return calls, intervals, breakers, d.bad
}
