package breaker

import (
	"testing"
	"time"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
)

func TestGuard(t *testing.T) {
	t0 := time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)
	fleet := func(ready, notReady, terminating int) []Pod {
		var out []Pod
		for i := range ready {
			out = append(out, Pod{Name: "r" + string(rune('a'+i)), Ready: true, Traffic: kvv1.TrafficYes})
		}
		for i := range notReady {
			out = append(out, Pod{Name: "n" + string(rune('a'+i)), Traffic: kvv1.TrafficYes})
		}
		for i := range terminating {
			out = append(out, Pod{Name: "t" + string(rune('a'+i)), Ready: true, Terminating: true, Traffic: kvv1.TrafficYes})
		}
		return out
	}
	flag := func(names ...string) []Anomaly {
		out := make([]Anomaly, 0, len(names))
		for _, n := range names {
			out = append(out, Anomaly{Pod: n})
		}
		return out
	}
	defaults := kvv1.Guards{MaxAnomalousPercent: 50}
	cases := map[string]struct {
		g         kvv1.Guards
		pods      []Pod
		anomalous []Anomaly
		lastStorm time.Time
		now       time.Time
		want      GuardResult
	}{
		"half the Ready pods anomalous is not a storm at 50%": {
			g: defaults, pods: fleet(8, 0, 0), anomalous: flag("ra", "rb", "rc", "rd"), now: t0,
			want: GuardResult{Verdict: Judge},
		},
		"5 of 8 is a storm": {
			g: defaults, pods: fleet(8, 0, 0), anomalous: flag("ra", "rb", "rc", "rd", "re"), now: t0,
			want: GuardResult{Verdict: Storm, StormAt: t0,
				Why: "5 of 8 Ready pods anomalous, more than maxAnomalousPercent 50%: the detector is suspect, nobody is ejected"},
		},
		"the share counts Ready, not terminating pods only, each once": {
			g: defaults, pods: fleet(4, 3, 3), anomalous: flag("ra", "ra", "rb", "na", "nb", "nc", "ta", "tb", "ghost"), now: t0,
			want: GuardResult{Verdict: Judge},
		},
		"100 turns the storm guard off": {
			g: kvv1.Guards{MaxAnomalousPercent: 100}, pods: fleet(2, 0, 0), anomalous: flag("ra", "rb"), now: t0,
			want: GuardResult{Verdict: Judge},
		},
		"0 makes any anomaly a storm": {
			g: kvv1.Guards{}, pods: fleet(10, 0, 0), anomalous: flag("ra"), now: t0,
			want: GuardResult{Verdict: Storm, StormAt: t0,
				Why: "1 of 10 Ready pods anomalous, more than maxAnomalousPercent 0%: the detector is suspect, nobody is ejected"},
		},
		"cooldown not over: still held, the storm's time kept": {
			g: kvv1.Guards{MaxAnomalousPercent: 50, StormCooldown: time.Minute}, pods: fleet(8, 0, 0), anomalous: flag("ra", "rb"),
			lastStorm: t0, now: t0.Add(59 * time.Second),
			want: GuardResult{Verdict: Storm, StormAt: t0,
				Why: "storm cooldown: the last storm was at 2026-03-14T15:09:26Z, stormCooldown 1m0s: nobody is ejected before 2026-03-14T15:10:26Z"},
		},
		"cooldown over: judged again": {
			g: kvv1.Guards{MaxAnomalousPercent: 50, StormCooldown: time.Minute}, pods: fleet(8, 0, 0), anomalous: flag("ra", "rb"),
			lastStorm: t0, now: t0.Add(time.Minute),
			want: GuardResult{Verdict: Judge, StormAt: t0},
		},
		"a storm during the cooldown restarts it": {
			g: kvv1.Guards{MaxAnomalousPercent: 50, StormCooldown: time.Minute}, pods: fleet(4, 0, 0), anomalous: flag("ra", "rb", "rc"),
			lastStorm: t0, now: t0.Add(30 * time.Second),
			want: GuardResult{Verdict: Storm, StormAt: t0.Add(30 * time.Second),
				Why: "3 of 4 Ready pods anomalous, more than maxAnomalousPercent 50%: the detector is suspect, nobody is ejected"},
		},
		"fewer Ready pods than minPodsToJudge: nobody judged, terminating and NotReady pods do not count": {
			g: kvv1.Guards{MinPodsToJudge: 5, MaxAnomalousPercent: 50}, pods: fleet(4, 2, 2), anomalous: flag("ra"), now: t0,
			want: GuardResult{Verdict: FleetTooSmall, Why: "4 Ready pods, fewer than minPodsToJudge 5: nobody is judged"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := Guard(tc.g, tc.pods, tc.anomalous, tc.lastStorm, tc.now)
			if got != tc.want {
				t.Errorf("Guard() = %+v\nwant      %+v", got, tc.want)
			}
		})
	}
}
