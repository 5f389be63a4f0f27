package activator_test

import (
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/activator"
	"github.com/kubervisor/kubervisor/internal/podstate"
)

// wait is a Wait decision due after d.
func wait(after time.Duration, reason string) activator.Decision {
	return activator.Decision{Action: activator.ActionWait, At: now.Add(after), After: after, Reason: reason}
}

// restoreAt is a Restore decision that became due at.
func restoreAt(at time.Time, reason string) activator.Decision {
	return activator.Decision{Action: activator.ActionRestore, At: at, Reason: reason}
}

// now-due decisions.
func kill(reason string) activator.Decision {
	return activator.Decision{Action: activator.ActionKill, At: now, Reason: reason}
}

func pause(reason string) activator.Decision {
	return activator.Decision{Action: activator.ActionPause, At: now, Reason: reason}
}

func none(reason string) activator.Decision {
	return activator.Decision{Action: activator.ActionNone, Reason: reason}
}

// withTraffic returns an ejected state with its traffic label replaced.
func withTraffic(s podstate.State, traffic string) podstate.State {
	s.Traffic = traffic
	return s
}

func TestNext(t *testing.T) {
	const s = time.Second
	maxDuration := time.Duration(math.MaxInt64)
	cases := map[string]struct {
		state  podstate.State
		a      v1alpha1.ResolvedActivator
		paused int32
		want   activator.Decision
	}{
		// periodic: break-at + period, whatever the retry count.
		"periodic, retry 1 waits the rest of one period": {
			state: ejected(1, 3*s), a: resolved(periodic, 10*s, 3, 1),
			want: wait(7*s, "retry 1 (periodic): back in traffic after 10s, due in 7s"),
		},
		"periodic, retry 0 counts as 1": {
			state: ejected(0, 3*s), a: resolved(periodic, 10*s, 3, 1),
			want: wait(7*s, "retry 1 (periodic): back in traffic after 10s, due in 7s"),
		},
		"periodic, retry 2 waits one period, not two": {
			state: ejected(2, 4*s), a: resolved(periodic, 10*s, 3, 1),
			want: wait(6*s, "retry 2 (periodic): back in traffic after 10s, due in 6s"),
		},
		"periodic, retry 3 at maxRetryCount waits one period": {
			state: ejected(3, 4*s), a: resolved(periodic, 10*s, 3, 1),
			want: wait(6*s, "retry 3 (periodic): back in traffic after 10s, due in 6s"),
		},
		"periodic, retry 4 beyond maxRetryCount is restored, never killed": {
			state: ejected(4, 10*s), a: resolved(periodic, 10*s, 3, 0),
			want: restoreAt(now, "retry 4 (periodic): back in traffic after 10s"),
		},
		"periodic, retry 1000 still waits one period": {
			state: ejected(1000, 4*s), a: resolved(periodic, 10*s, 3, 1),
			want: wait(6*s, "retry 1000 (periodic): back in traffic after 10s, due in 6s"),
		},
		"periodic, due exactly now": {
			state: ejected(1, 10*s), a: resolved(periodic, 10*s, 3, 1),
			want: restoreAt(now, "retry 1 (periodic): back in traffic after 10s"),
		},
		"periodic, 1ns before due": {
			state: ejected(1, 10*s-1), a: resolved(periodic, 10*s, 3, 1),
			want: wait(1, "retry 1 (periodic): back in traffic after 10s, due in 1ns"),
		},
		"periodic, overdue by an hour": {
			state: ejected(2, time.Hour), a: resolved(periodic, 10*s, 3, 1),
			want: restoreAt(now.Add(-time.Hour+10*s), "retry 2 (periodic): back in traffic after 10s"),
		},
		"periodic, sub-second period": {
			state: ejected(1, 200*time.Millisecond), a: resolved(periodic, 500*time.Millisecond, 3, 1),
			want: wait(300*time.Millisecond, "retry 1 (periodic): back in traffic after 500ms, due in 300ms"),
		},
		"periodic, break-at within clock skew ahead waits longer than a period": {
			state: ejected(1, -3*s), a: resolved(periodic, 10*s, 3, 1),
			want: wait(13*s, "retry 1 (periodic): back in traffic after 10s, due in 13s"),
		},

		// retryAndKill: break-at + retry × period up to maxRetryCount, then kill at once.
		"retryAndKill, retry 0 counts as 1": {
			state: ejected(0, 5*s), a: resolved(retryAndKill, 10*s, 3, 1),
			want: wait(5*s, "retry 1 of 3 (retryAndKill): back in traffic after 10s, due in 5s"),
		},
		"retryAndKill, retry 1": {
			state: ejected(1, 5*s), a: resolved(retryAndKill, 10*s, 3, 1),
			want: wait(5*s, "retry 1 of 3 (retryAndKill): back in traffic after 10s, due in 5s"),
		},
		"retryAndKill, retry 2 just below maxRetryCount waits two periods": {
			state: ejected(2, 5*s), a: resolved(retryAndKill, 10*s, 3, 1),
			want: wait(15*s, "retry 2 of 3 (retryAndKill): back in traffic after 20s, due in 15s"),
		},
		"retryAndKill, retry 2 due exactly now": {
			state: ejected(2, 20*s), a: resolved(retryAndKill, 10*s, 3, 1),
			want: restoreAt(now, "retry 2 of 3 (retryAndKill): back in traffic after 20s"),
		},
		"retryAndKill, retry 2, 1ns before due": {
			state: ejected(2, 20*s-1), a: resolved(retryAndKill, 10*s, 3, 1),
			want: wait(1, "retry 2 of 3 (retryAndKill): back in traffic after 20s, due in 1ns"),
		},
		"retryAndKill, retry 3 at maxRetryCount waits three periods": {
			state: ejected(3, 5*s), a: resolved(retryAndKill, 10*s, 3, 1),
			want: wait(25*s, "retry 3 of 3 (retryAndKill): back in traffic after 30s, due in 25s"),
		},
		"retryAndKill, retry 3 at maxRetryCount due exactly now": {
			state: ejected(3, 30*s), a: resolved(retryAndKill, 10*s, 3, 1),
			want: restoreAt(now, "retry 3 of 3 (retryAndKill): back in traffic after 30s"),
		},
		"retryAndKill, retry 4 just above maxRetryCount kills at once": {
			state: ejected(4, 0), a: resolved(retryAndKill, 10*s, 3, 1),
			want: kill("retry 4 exceeds maxRetryCount 3 (retryAndKill): killing the pod"),
		},
		"retryAndKill, retry 4 ejected an hour ago kills now": {
			state: ejected(4, time.Hour), a: resolved(retryAndKill, 10*s, 3, 1),
			want: kill("retry 4 exceeds maxRetryCount 3 (retryAndKill): killing the pod"),
		},
		"retryAndKill, largest retry count kills": {
			state: ejected(math.MaxInt32, 0), a: resolved(retryAndKill, 10*s, 3, 1),
			want: kill("retry 2147483647 exceeds maxRetryCount 3 (retryAndKill): killing the pod"),
		},
		"retryAndKill, maxRetryCount 0 kills at the first ejection": {
			state: ejected(1, 0), a: resolved(retryAndKill, 10*s, 0, 1),
			want: kill("retry 1 exceeds maxRetryCount 0 (retryAndKill): killing the pod"),
		},
		"retryAndKill, maxRetryCount 1, retry 1 at it": {
			state: ejected(1, 5*s), a: resolved(retryAndKill, 10*s, 1, 1),
			want: wait(5*s, "retry 1 of 1 (retryAndKill): back in traffic after 10s, due in 5s"),
		},
		"retryAndKill, maxRetryCount 1, retry 2 above it": {
			state: ejected(2, 5*s), a: resolved(retryAndKill, 10*s, 1, 1),
			want: kill("retry 2 exceeds maxRetryCount 1 (retryAndKill): killing the pod"),
		},
		"retryAndKill never pauses, whatever maxPauseCount": {
			state: ejected(4, 0), a: resolved(retryAndKill, 10*s, 3, 5), paused: 0,
			want: kill("retry 4 exceeds maxRetryCount 3 (retryAndKill): killing the pod"),
		},
		"retryAndKill, largest valid back-off (1000 × 24h)": {
			state: ejected(1000, 5*s), a: resolved(retryAndKill, 24*time.Hour, 1000, 1),
			want: wait(24000*time.Hour-5*s, "retry 1000 of 1000 (retryAndKill): back in traffic after 24000h0m0s, due in 23999h59m55s"),
		},
		"retryAndKill, back-off saturates instead of overflowing": {
			state: ejected(math.MaxInt32, 5*s), a: resolved(retryAndKill, 24*time.Hour, math.MaxInt32, 1),
			want: wait(maxDuration-5*s, "retry 2147483647 of 2147483647 (retryAndKill): back in traffic after "+
				maxDuration.String()+", due in "+(maxDuration-5*s).String()),
		},

		// retryAndPause: as retryAndKill, then pause while fewer than maxPauseCount are paused.
		"retryAndPause, retry 1": {
			state: ejected(1, 5*s), a: resolved(retryAndPause, 10*s, 3, 1),
			want: wait(5*s, "retry 1 of 3 (retryAndPause): back in traffic after 10s, due in 5s"),
		},
		"retryAndPause, retry 2 just below maxRetryCount": {
			state: ejected(2, 5*s), a: resolved(retryAndPause, 10*s, 3, 1),
			want: wait(15*s, "retry 2 of 3 (retryAndPause): back in traffic after 20s, due in 15s"),
		},
		"retryAndPause, retry 3 at maxRetryCount": {
			state: ejected(3, 5*s), a: resolved(retryAndPause, 10*s, 3, 1),
			want: wait(25*s, "retry 3 of 3 (retryAndPause): back in traffic after 30s, due in 25s"),
		},
		"retryAndPause, retry 3 at maxRetryCount due exactly now": {
			state: ejected(3, 30*s), a: resolved(retryAndPause, 10*s, 3, 1),
			want: restoreAt(now, "retry 3 of 3 (retryAndPause): back in traffic after 30s"),
		},
		"retryAndPause, retry 3 at maxRetryCount waits even when the pause limit is reached": {
			state: ejected(3, 5*s), a: resolved(retryAndPause, 10*s, 3, 0), paused: 5,
			want: wait(25*s, "retry 3 of 3 (retryAndPause): back in traffic after 30s, due in 25s"),
		},
		"retryAndPause, maxPauseCount 0, none paused: kill": {
			state: ejected(4, 0), a: resolved(retryAndPause, 10*s, 3, 0), paused: 0,
			want: kill("retry 4 exceeds maxRetryCount 3 (retryAndPause): killing the pod instead of pausing it, 0 paused already (maxPauseCount 0)"),
		},
		"retryAndPause, maxPauseCount 0, one paused: kill": {
			state: ejected(4, 0), a: resolved(retryAndPause, 10*s, 3, 0), paused: 1,
			want: kill("retry 4 exceeds maxRetryCount 3 (retryAndPause): killing the pod instead of pausing it, 1 paused already (maxPauseCount 0)"),
		},
		"retryAndPause, maxPauseCount 1, none paused: pause": {
			state: ejected(4, 0), a: resolved(retryAndPause, 10*s, 3, 1), paused: 0,
			want: pause("retry 4 exceeds maxRetryCount 3 (retryAndPause): pausing the pod, 0 of maxPauseCount 1 paused before it"),
		},
		"retryAndPause, maxPauseCount 1, one paused: kill": {
			state: ejected(4, 0), a: resolved(retryAndPause, 10*s, 3, 1), paused: 1,
			want: kill("retry 4 exceeds maxRetryCount 3 (retryAndPause): killing the pod instead of pausing it, 1 paused already (maxPauseCount 1)"),
		},
		"retryAndPause, maxPauseCount 1, two paused: kill": {
			state: ejected(4, 0), a: resolved(retryAndPause, 10*s, 3, 1), paused: 2,
			want: kill("retry 4 exceeds maxRetryCount 3 (retryAndPause): killing the pod instead of pausing it, 2 paused already (maxPauseCount 1)"),
		},
		"retryAndPause, maxPauseCount 2, none paused: pause": {
			state: ejected(4, 0), a: resolved(retryAndPause, 10*s, 3, 2), paused: 0,
			want: pause("retry 4 exceeds maxRetryCount 3 (retryAndPause): pausing the pod, 0 of maxPauseCount 2 paused before it"),
		},
		"retryAndPause, maxPauseCount 2, one paused: pause": {
			state: ejected(4, 0), a: resolved(retryAndPause, 10*s, 3, 2), paused: 1,
			want: pause("retry 4 exceeds maxRetryCount 3 (retryAndPause): pausing the pod, 1 of maxPauseCount 2 paused before it"),
		},
		"retryAndPause, maxPauseCount 2, two paused: kill": {
			state: ejected(4, 0), a: resolved(retryAndPause, 10*s, 3, 2), paused: 2,
			want: kill("retry 4 exceeds maxRetryCount 3 (retryAndPause): killing the pod instead of pausing it, 2 paused already (maxPauseCount 2)"),
		},
		"retryAndPause, maxPauseCount 2, three paused: kill": {
			state: ejected(4, 0), a: resolved(retryAndPause, 10*s, 3, 2), paused: 3,
			want: kill("retry 4 exceeds maxRetryCount 3 (retryAndPause): killing the pod instead of pausing it, 3 paused already (maxPauseCount 2)"),
		},
		"retryAndPause, maxRetryCount 0 pauses at the first ejection": {
			state: ejected(1, 0), a: resolved(retryAndPause, 10*s, 0, 1), paused: 0,
			want: pause("retry 1 exceeds maxRetryCount 0 (retryAndPause): pausing the pod, 0 of maxPauseCount 1 paused before it"),
		},

		// Only traffic=no is acted on.
		"in traffic: none, even beyond maxRetryCount": {
			state: withTraffic(ejected(9, time.Hour), v1alpha1.TrafficYes), a: resolved(retryAndKill, 10*s, 3, 1),
			want: none("in traffic: nothing to do"),
		},
		"paused: none, never killed": {
			state: withTraffic(ejected(9, time.Hour), v1alpha1.TrafficPause), a: resolved(retryAndKill, 10*s, 3, 1),
			want: none("paused: the activator never touches a paused pod"),
		},
		"paused: none, never restored": {
			state: withTraffic(ejected(1, time.Hour), v1alpha1.TrafficPause), a: resolved(periodic, 10*s, 3, 1),
			want: none("paused: the activator never touches a paused pod"),
		},
		"traffic label missing: none": {
			state: withTraffic(ejected(1, time.Hour), ""), a: resolved(periodic, 10*s, 3, 1),
			want: none("label kubervisor/traffic is missing: nothing to do"),
		},
		"traffic label unknown: none": {
			state: withTraffic(ejected(9, time.Hour), "maybe"), a: resolved(retryAndKill, 10*s, 3, 1),
			want: none(`label kubervisor/traffic is "maybe", not "no": nothing to do`),
		},
		"traffic label No (wrong case): none": {
			state: withTraffic(ejected(9, time.Hour), "No"), a: resolved(retryAndKill, 10*s, 3, 1),
			want: none(`label kubervisor/traffic is "No", not "no": nothing to do`),
		},

		// A broken activator never keeps a pod out for good.
		"zero ResolvedActivator: periodic every 10s": {
			state: ejected(1, 3*s), a: v1alpha1.ResolvedActivator{},
			want: wait(7*s, "retry 1 (periodic): back in traffic after 10s, due in 7s"),
		},
		"period 0 uses the built-in 10s": {
			state: ejected(2, 5*s), a: resolved(retryAndKill, 0, 3, 1),
			want: wait(15*s, "retry 2 of 3 (retryAndKill): back in traffic after 20s, due in 15s"),
		},
		"negative period uses the built-in 10s": {
			state: ejected(1, 5*s), a: resolved(periodic, -time.Minute, 3, 1),
			want: wait(5*s, "retry 1 (periodic): back in traffic after 10s, due in 5s"),
		},
		"unknown mode behaves as periodic and never kills": {
			state: ejected(9, 5*s), a: resolved("sometimes", 10*s, 3, 0),
			want: wait(5*s, `retry 9 (unknown mode "sometimes", treated as periodic): back in traffic after 10s, due in 5s`),
		},
		"zero break-at restores at once": {
			state: podstate.State{Traffic: v1alpha1.TrafficNo, RetryCount: 1}, a: resolved(retryAndKill, 10*s, 3, 1),
			want: restoreAt(time.Time{}.Add(10*s), "retry 1 of 3 (retryAndKill): back in traffic after 10s"),
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := activator.Next(tc.state, tc.a, tc.paused, now)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Next() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestNextWithSpec resolves the activator from a KubervisorServiceSpec, as the Pod reconciler does, to test
// the layering (breaker, then defaultActivator, then built-in defaults) together with the schedule.
func TestNextWithSpec(t *testing.T) {
	const s = time.Second
	full := v1alpha1.KubervisorServiceSpec{
		Service: "pricer",
		DefaultActivator: &v1alpha1.ActivatorStrategy{
			Mode: retryAndPause, Period: new(intstr.FromString("30s")), MaxRetryCount: ptr.To[int32](2), MaxPauseCount: ptr.To[int32](2),
		},
		Breakers: []v1alpha1.BreakerStrategy{
			{Name: "errors", Activator: &v1alpha1.ActivatorStrategy{
				Mode: retryAndKill, Period: new(intstr.FromInt32(5)), MaxRetryCount: ptr.To[int32](1), MaxPauseCount: ptr.To[int32](0),
			}},
			{Name: "latency", Activator: &v1alpha1.ActivatorStrategy{Mode: retryAndKill}},
			{Name: "slow", Activator: &v1alpha1.ActivatorStrategy{Period: new(intstr.FromString("1m"))}},
			{Name: "plain"},
		},
	}
	allNil := v1alpha1.KubervisorServiceSpec{Service: "pricer", Breakers: []v1alpha1.BreakerStrategy{{Name: "errors"}}}
	partial := v1alpha1.KubervisorServiceSpec{
		Service:          "pricer",
		DefaultActivator: &v1alpha1.ActivatorStrategy{Mode: retryAndKill},
		Breakers: []v1alpha1.BreakerStrategy{
			{Name: "errors", Activator: &v1alpha1.ActivatorStrategy{MaxRetryCount: ptr.To[int32](1)}},
		},
	}
	badPeriod := v1alpha1.KubervisorServiceSpec{
		Service:          "pricer",
		DefaultActivator: &v1alpha1.ActivatorStrategy{Mode: retryAndKill, Period: new(intstr.FromString("forever"))},
		Breakers:         []v1alpha1.BreakerStrategy{{Name: "errors"}},
	}

	cases := map[string]struct {
		spec          v1alpha1.KubervisorServiceSpec
		strategy      string
		retryCount    int32
		ago           time.Duration
		paused        int32
		wantActivator v1alpha1.ResolvedActivator
		wantErr       bool
		want          activator.Decision
	}{
		"breaker activator overrides every default field": {
			spec: full, strategy: "errors", retryCount: 1, ago: 2 * s,
			wantActivator: scoped(resolved(retryAndKill, 5*s, 1, 0), "errors"),
			want:          wait(3*s, "retry 1 of 1 (retryAndKill): back in traffic after 5s, due in 3s"),
		},
		"breaker activator kills at retry 2, where the default would retry": {
			spec: full, strategy: "errors", retryCount: 2, ago: 0,
			wantActivator: scoped(resolved(retryAndKill, 5*s, 1, 0), "errors"),
			want:          kill("retry 2 exceeds maxRetryCount 1 (retryAndKill): killing the pod"),
		},
		"partly filled breaker activator: mode from the breaker, the rest from defaultActivator": {
			spec: full, strategy: "latency", retryCount: 2, ago: 10 * s,
			wantActivator: resolved(retryAndKill, 30*s, 2, 2),
			want:          wait(50*s, "retry 2 of 2 (retryAndKill): back in traffic after 1m0s, due in 50s"),
		},
		"partly filled breaker activator kills where defaultActivator would pause": {
			spec: full, strategy: "latency", retryCount: 3, paused: 0,
			wantActivator: resolved(retryAndKill, 30*s, 2, 2),
			want:          kill("retry 3 exceeds maxRetryCount 2 (retryAndKill): killing the pod"),
		},
		"partly filled breaker activator: period from the breaker": {
			spec: full, strategy: "slow", retryCount: 2, ago: 10 * s,
			wantActivator: resolved(retryAndPause, time.Minute, 2, 2),
			want:          wait(110*s, "retry 2 of 2 (retryAndPause): back in traffic after 2m0s, due in 1m50s"),
		},
		"breaker without activator uses defaultActivator: pause": {
			spec: full, strategy: "plain", retryCount: 3, paused: 1,
			wantActivator: resolved(retryAndPause, 30*s, 2, 2),
			want:          pause("retry 3 exceeds maxRetryCount 2 (retryAndPause): pausing the pod, 1 of maxPauseCount 2 paused before it"),
		},
		"breaker without activator uses defaultActivator: pause limit reached": {
			spec: full, strategy: "plain", retryCount: 3, paused: 2,
			wantActivator: resolved(retryAndPause, 30*s, 2, 2),
			want:          kill("retry 3 exceeds maxRetryCount 2 (retryAndPause): killing the pod instead of pausing it, 2 paused already (maxPauseCount 2)"),
		},
		"unknown breaker name falls back to defaultActivator": {
			spec: full, strategy: "removed", retryCount: 1, ago: 10 * s,
			wantActivator: resolved(retryAndPause, 30*s, 2, 2),
			want:          wait(20*s, "retry 1 of 2 (retryAndPause): back in traffic after 30s, due in 20s"),
		},
		"missing strategy label falls back to defaultActivator": {
			spec: full, strategy: "", retryCount: 1, ago: 10 * s,
			wantActivator: resolved(retryAndPause, 30*s, 2, 2),
			want:          wait(20*s, "retry 1 of 2 (retryAndPause): back in traffic after 30s, due in 20s"),
		},
		"all-nil spec gets the built-in defaults": {
			spec: allNil, strategy: "errors", retryCount: 7, ago: 4 * s,
			wantActivator: resolved(periodic, 10*s, 3, 1),
			want:          wait(6*s, "retry 7 (periodic): back in traffic after 10s, due in 6s"),
		},
		"all-nil spec, unknown breaker, gets the built-in defaults": {
			spec: allNil, strategy: "gone", retryCount: 1, ago: 10 * s,
			wantActivator: resolved(periodic, 10*s, 3, 1),
			want:          restoreAt(now, "retry 1 (periodic): back in traffic after 10s"),
		},
		"partly filled at both levels: mode from defaultActivator, maxRetryCount from the breaker": {
			spec: partial, strategy: "errors", retryCount: 2,
			wantActivator: resolved(retryAndKill, 10*s, 1, 1),
			want:          kill("retry 2 exceeds maxRetryCount 1 (retryAndKill): killing the pod"),
		},
		"partly filled defaultActivator, unknown breaker: built-in defaults for the rest": {
			spec: partial, strategy: "other", retryCount: 2, ago: 5 * s,
			wantActivator: resolved(retryAndKill, 10*s, 3, 1),
			want:          wait(15*s, "retry 2 of 3 (retryAndKill): back in traffic after 20s, due in 15s"),
		},
		"unparseable period: ActivatorFor fails, Next still brings the pod back": {
			spec: badPeriod, strategy: "errors", retryCount: 2, ago: 5 * s,
			wantActivator: resolved(retryAndKill, 0, 3, 1), wantErr: true,
			want: wait(15*s, "retry 2 of 3 (retryAndKill): back in traffic after 20s, due in 15s"),
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			a, err := tc.spec.ActivatorFor(tc.strategy)
			if (err != nil) != tc.wantErr {
				t.Fatalf("ActivatorFor(%q) error = %v, want error %t", tc.strategy, err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.wantActivator, a); diff != "" {
				t.Errorf("ActivatorFor(%q) mismatch (-want +got):\n%s", tc.strategy, diff)
			}
			state := ejected(tc.retryCount, tc.ago)
			state.Strategy = tc.strategy
			got := activator.Next(state, a, tc.paused, now)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Next() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
