package activator_test

import (
	"testing"
	"time"

	"github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/activator"
	"github.com/kubervisor/kubervisor/internal/podstate"
)

func TestNextRetryDescription(t *testing.T) {
	const s = time.Second
	cases := map[string]struct {
		state  podstate.State
		a      v1alpha1.ResolvedActivator
		paused int32
		want   string
	}{
		"wait of whole seconds": {
			state: ejected(2, 5*s), a: resolved(retryAndKill, 10*s, 3, 1), want: "restore in 15s",
		},
		"wait with a fraction is rounded up": {
			state: ejected(2, 5500*time.Millisecond), a: resolved(retryAndKill, 10*s, 3, 1), want: "restore in 15s",
		},
		"1ns left shows 1s, not 0s": {
			state: ejected(1, 10*s-1), a: resolved(periodic, 10*s, 3, 1), want: "restore in 1s",
		},
		"minutes": {
			state: ejected(3, 30*s), a: resolved(retryAndPause, time.Minute, 3, 1), want: "restore in 2m30s",
		},
		"due": {
			state: ejected(1, 10*s), a: resolved(periodic, 10*s, 3, 1), want: "restore now",
		},
		"pause": {
			state: ejected(4, 0), a: resolved(retryAndPause, 10*s, 3, 1), paused: 0, want: "pause now",
		},
		"kill": {
			state: ejected(4, 0), a: resolved(retryAndPause, 10*s, 3, 1), paused: 1, want: "kill now",
		},
		"in traffic": {
			state: withTraffic(ejected(1, 0), v1alpha1.TrafficYes), a: resolved(periodic, 10*s, 3, 1), want: "<none>",
		},
		"paused": {
			state: withTraffic(ejected(9, 0), v1alpha1.TrafficPause), a: resolved(retryAndKill, 10*s, 3, 1), want: "<none>",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := activator.NextRetryDescription(tc.state, tc.a, tc.paused, now); got != tc.want {
				t.Errorf("NextRetryDescription() = %q, want %q", got, tc.want)
			}
		})
	}
}
