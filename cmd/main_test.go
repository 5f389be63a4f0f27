package main

import (
	"testing"
	"time"
)

func TestCheckLeaderElection(t *testing.T) {
	for _, tc := range []struct {
		lease, renew, retry time.Duration
		ok                  bool
	}{
		{15 * time.Second, 10 * time.Second, 2 * time.Second, true},
		{60 * time.Second, 40 * time.Second, 5 * time.Second, true},
		{15 * time.Second, 20 * time.Second, 2 * time.Second, false}, // a standby takes the Lease while the leader still renews
		{15 * time.Second, 15 * time.Second, 2 * time.Second, false},
		{15 * time.Second, 10 * time.Second, 10 * time.Second, false}, // no retry before the deadline
		{15 * time.Second, 10 * time.Second, 0, false},
	} {
		if err := checkLeaderElection(tc.lease, tc.renew, tc.retry); (err == nil) != tc.ok {
			t.Errorf("lease %s, renew %s, retry %s: error %v, want ok=%t", tc.lease, tc.renew, tc.retry, err, tc.ok)
		}
	}
}
