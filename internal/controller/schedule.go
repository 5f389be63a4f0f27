package controller

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/detector"
)

// schedule remembers, per KubervisorService, when each breaker is due next and its detector. It lives in
// memory only: after a restart every breaker is due at once, which is what a fresh controller should do.
// NOTE: this is what lets a pass evaluate only the breakers that are due although any pod or Service event
// also triggers a pass, without writing a timestamp to status on every evaluation (SPEC §9).
type schedule struct {
	mu      sync.Mutex
	entries map[types.NamespacedName]*scheduleEntry
}

type scheduleEntry struct {
	generation int64
	next       map[string]time.Time
	detectors  map[string]detector.Detector
	// last holds each breaker's latest outcome. NOTE: a status write can lose a race (the cache lags behind
	// our own previous write); the outcome must survive until the retry writes it, since the breaker is not
	// due again before its period.
	last map[string]kvv1.BreakerStatus
}

func newSchedule() *schedule {
	return &schedule{entries: map[types.NamespacedName]*scheduleEntry{}}
}

// entry returns the entry of a KubervisorService, reset when its spec generation changed so that a new
// spec takes effect at once.
func (s *schedule) entry(kvs *kvv1.KubervisorService) *scheduleEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := types.NamespacedName{Namespace: kvs.Namespace, Name: kvs.Name}
	e, ok := s.entries[key]
	if !ok || e.generation != kvs.Generation {
		e = &scheduleEntry{generation: kvs.Generation, next: map[string]time.Time{}, detectors: map[string]detector.Detector{},
			last: map[string]kvv1.BreakerStatus{}}
		s.entries[key] = e
	}
	return e
}

func (s *schedule) forget(key types.NamespacedName) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.entries, key)
}

// recall puts the remembered outcomes into status, replacing what the (possibly stale) object holds.
func (e *scheduleEntry) recall(status *kvv1.KubervisorServiceStatus) {
	for name, b := range e.last {
		replaced := false
		for i := range status.Breakers {
			if status.Breakers[i].Name == name {
				status.Breakers[i] = *b.DeepCopy()
				replaced = true
			}
		}
		if !replaced {
			status.Breakers = append(status.Breakers, *b.DeepCopy())
		}
	}
}

// remember keeps the outcomes of the breakers evaluated in this pass.
func (e *scheduleEntry) remember(status *kvv1.KubervisorServiceStatus, evaluated map[string]string) {
	for i := range status.Breakers {
		if _, ok := evaluated[status.Breakers[i].Name]; ok {
			e.last[status.Breakers[i].Name] = *status.Breakers[i].DeepCopy()
		}
	}
}

// due reports whether the breaker is due at now.
func (e *scheduleEntry) due(breaker string, now time.Time) bool {
	next, ok := e.next[breaker]
	return !ok || !now.Before(next)
}

// wait returns the time from now to the next due breaker, or zero when none is scheduled.
func (e *scheduleEntry) wait(now time.Time) time.Duration {
	var min time.Duration
	for _, next := range e.next {
		d := max(next.Sub(now), time.Millisecond)
		if min == 0 || d < min {
			min = d
		}
	}
	return min
}
