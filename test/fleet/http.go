package fleet

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
)

func (f *Fleet) handlePods(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, f.Pods())
}

// handleAnomalies answers a customService breaker. The query parameters the controller sends
// (namespace, kubervisorservice, breaker) are accepted and ignored: a fleet is one namespace.
func (f *Fleet) handleAnomalies(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, map[string][]string{"pods": f.Anomalies()})
}

func (f *Fleet) handleFault(w http.ResponseWriter, r *http.Request) {
	pod := r.URL.Query().Get("pod")
	errs, dev := r.URL.Query().Get("errors"), r.URL.Query().Get("deviation")
	if pod == "" || (errs == "" && dev == "") {
		http.Error(w, "need pod and at least one of errors (0..1) and deviation (>= 0)", http.StatusBadRequest)
		return
	}
	if errs != "" {
		ratio, err := strconv.ParseFloat(errs, 64)
		if err == nil {
			err = f.SetErrorRate(pod, ratio)
		}
		if writeErr(w, err) {
			return
		}
	}
	if dev != "" {
		factor, err := strconv.ParseFloat(dev, 64)
		if err == nil {
			err = f.SetDeviation(pod, factor)
		}
		if writeErr(w, err) {
			return
		}
	}
	f.handlePods(w, r)
}

func (f *Fleet) handleHeal(w http.ResponseWriter, r *http.Request) {
	if pod := r.URL.Query().Get("pod"); pod != "" {
		if writeErr(w, f.Heal(pod)) {
			return
		}
	} else {
		f.HealAll()
	}
	f.handlePods(w, r)
}

func (f *Fleet) handleReady(w http.ResponseWriter, r *http.Request) {
	ready, err := strconv.ParseBool(r.URL.Query().Get("ready"))
	if err == nil {
		err = f.SetReady(r.URL.Query().Get("pod"), ready)
	}
	if writeErr(w, err) {
		return
	}
	f.handlePods(w, r)
}

// writeErr answers err (404 for an unknown pod, else 400) and reports whether it did.
func writeErr(w http.ResponseWriter, err error) bool {
	if err == nil {
		return false
	}
	code := http.StatusBadRequest
	if errors.Is(err, ErrUnknownPod) {
		code = http.StatusNotFound
	}
	http.Error(w, err.Error(), code)
	return true
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
