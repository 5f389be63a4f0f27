package plugin

import (
	"testing"
	"time"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/podstate"
)

func TestRetriesCellForgiveness(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	a := kvv1.ResolvedActivator{ForgiveAfter: time.Hour}
	back := podstate.State{Traffic: kvv1.TrafficYes, RetryCount: 3, RetryCountField: podstate.FieldValid, RestoredAt: now.Add(-2*time.Hour - time.Minute)}
	cases := []struct {
		name  string
		state podstate.State
		a     kvv1.ResolvedActivator
		want  string
	}{
		{"two full hours in traffic: the next ejection starts from 1", back, a, "3, forgiven to 1"},
		{"no forgiveAfter: the count as it is", back, kvv1.ResolvedActivator{}, "3"},
		{"out of traffic: the count as it is", func() podstate.State { s := back; s.Traffic = kvv1.TrafficNo; return s }(), a, "3"},
		{"less than an hour back: nothing forgiven yet", func() podstate.State { s := back; s.RestoredAt = now.Add(-time.Minute); return s }(), a, "3"},
	}
	for _, tc := range cases {
		if got := retriesCell(tc.state, tc.a, now); got != tc.want {
			t.Errorf("%s: retriesCell = %q, want %q", tc.name, got, tc.want)
		}
	}
}
