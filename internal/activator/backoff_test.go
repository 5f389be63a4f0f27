package activator_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/activator"
	"github.com/kubervisor/kubervisor/internal/podstate"
)

func TestWait(t *testing.T) {
	const s = time.Second
	lin := v1alpha1.ResolvedActivator{Period: 10 * s, Backoff: v1alpha1.BackoffLinear}
	exp := v1alpha1.ResolvedActivator{Period: 10 * s, Backoff: v1alpha1.BackoffExponential}
	capped := func(a v1alpha1.ResolvedActivator, c time.Duration) v1alpha1.ResolvedActivator {
		a.MaxPeriod = c
		return a
	}
	cases := []struct {
		name string
		a    v1alpha1.ResolvedActivator
		n    int32
		want time.Duration
	}{
		{"linear retry 1: one period", lin, 1, 10 * s},
		{"linear retry 3: three periods", lin, 3, 30 * s},
		{"linear, a count below 1 counts as 1", lin, 0, 10 * s},
		{"linear, negative count counts as 1", lin, -4, 10 * s},
		{"unset backoff is linear", v1alpha1.ResolvedActivator{Period: 10 * s}, 4, 40 * s},
		{"exponential retry 1: one period", exp, 1, 10 * s},
		{"exponential retry 2: two periods", exp, 2, 20 * s},
		{"exponential retry 5: 16 periods", exp, 5, 160 * s},
		{"exponential capped by maxPeriod", capped(exp, time.Minute), 5, time.Minute},
		{"exponential under the cap is not capped", capped(exp, time.Minute), 3, 40 * s},
		{"linear capped", capped(lin, 25*s), 3, 25 * s},
		{"exponential at retry 1000 saturates, then the cap", capped(exp, 5*time.Minute), 1000, 5 * time.Minute},
		{"exponential at retry 1000 without a cap saturates, never wraps", exp, 1000, math.MaxInt64},
		{"exponential at retry 62 saturates", exp, 62, math.MaxInt64},
		{"period 0 counts as the built-in 10s", v1alpha1.ResolvedActivator{}, 2, 20 * s},
		{"a 1ns cap still waits", capped(exp, time.Nanosecond), 3, time.Nanosecond},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := activator.Wait(tc.a, tc.n, "uid"); got != tc.want {
				t.Errorf("Wait(retry %d) = %s, want %s", tc.n, got, tc.want)
			}
		})
	}
}

func TestWaitLinearLargestCountSaturates(t *testing.T) {
	// 24h × 2^31 ns overflows int64 (it is about 1.9e23 ns): saturates.
	a := v1alpha1.ResolvedActivator{Period: 24 * time.Hour, Backoff: v1alpha1.BackoffLinear}
	if got := activator.Wait(a, math.MaxInt32, "uid"); got != math.MaxInt64 {
		t.Errorf("Wait = %d, want the largest Duration", got)
	}
	// 24h × 106,751 still fits (about 9.2e18 ns); one more does not.
	if got := activator.Wait(a, 106_751, "uid"); got != 106_751*24*time.Hour {
		t.Errorf("Wait(106751) = %d, want %d", got, 106_751*24*time.Hour)
	}
	if got := activator.Wait(a, 106_752, "uid"); got != math.MaxInt64 {
		t.Errorf("Wait(106752) = %d, want the largest Duration", got)
	}
}

func TestWaitJitter(t *testing.T) {
	const s = time.Second
	a := v1alpha1.ResolvedActivator{Period: 100 * s, Backoff: v1alpha1.BackoffLinear, JitterPercent: 20}
	seen := map[time.Duration]bool{}
	for i := range 200 {
		uid := types.UID(fmt.Sprintf("pod-%d", i))
		w := activator.Wait(a, 1, uid)
		if w < 80*s || w > 120*s {
			t.Fatalf("Wait with 20%% jitter = %s, want within [80s, 120s]", w)
		}
		if again := activator.Wait(a, 1, uid); again != w {
			t.Fatalf("the same pod and retry gave %s then %s", w, again)
		}
		seen[w] = true
	}
	// 200 pods ejected together do not come back together.
	if len(seen) < 190 {
		t.Errorf("200 pods got only %d distinct waits", len(seen))
	}
	// The retry count is part of the seed: retry 2 of a pod is not retry 1 doubled.
	same := 0
	for i := range 100 {
		uid := types.UID(fmt.Sprintf("pod-%d", i))
		if activator.Wait(a, 2, uid) == 2*activator.Wait(a, 1, uid) {
			same++
		}
	}
	if same > 5 {
		t.Errorf("%d of 100 pods got retry 2 = 2 × retry 1: the retry count does not seed the jitter", same)
	}
	// 100% jitter never waits zero or less.
	full := a
	full.JitterPercent = 100
	for i := range 1000 {
		if w := activator.Wait(full, 1, types.UID(fmt.Sprint(i))); w <= 0 || w > 200*s {
			t.Fatalf("Wait with 100%% jitter = %s, want within (0, 200s]", w)
		}
	}
}

// TestWaitProperties: for random retry counts, periods, caps and jitter, the wait is in (0, maxPeriod] (when
// set), monotone in the retry count without jitter, and the same for the same pod UID and retry.
func TestWaitProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(10, 6))
	for iter := range 20000 {
		a := v1alpha1.ResolvedActivator{
			Period:  time.Duration(1 + rng.Int64N(int64(24*time.Hour))),
			Backoff: []v1alpha1.Backoff{v1alpha1.BackoffLinear, v1alpha1.BackoffExponential, ""}[rng.IntN(3)],
		}
		if rng.IntN(2) == 0 {
			a.MaxPeriod = time.Duration(1 + rng.Int64N(int64(24*time.Hour)))
		}
		if rng.IntN(2) == 0 {
			a.JitterPercent = rng.Int32N(101)
		}
		n := rng.Int32N(2000) - 5
		uid := types.UID(fmt.Sprintf("uid-%d", rng.IntN(50)))
		w := activator.Wait(a, n, uid)
		if w <= 0 || (a.MaxPeriod > 0 && w > a.MaxPeriod) {
			t.Fatalf("iteration %d: Wait(%+v, %d) = %d, want in (0, maxPeriod %d]", iter, a, n, w, a.MaxPeriod)
		}
		if again := activator.Wait(a, n, uid); again != w {
			t.Fatalf("iteration %d: Wait not deterministic: %d then %d", iter, w, again)
		}
		flat := a
		flat.JitterPercent = 0
		if lo, hi := activator.Wait(flat, n, uid), activator.Wait(flat, n+1, uid); hi < lo {
			t.Fatalf("iteration %d: without jitter retry %d waits %d but retry %d waits %d", iter, n, lo, n+1, hi)
		}
	}
}

func TestForgive(t *testing.T) {
	restored := now.Add(-time.Hour)
	cases := []struct {
		name  string
		count int32
		at    time.Time
		after time.Duration
		want  int32
	}{
		{"never forgives without forgiveAfter", 3, restored, 0, 3},
		{"never restored: nothing to forgive", 3, time.Time{}, 10 * time.Minute, 3},
		{"one full period in traffic: one less", 3, now.Add(-10 * time.Minute), 10 * time.Minute, 2},
		{"a period not yet full counts for nothing", 3, now.Add(-10*time.Minute + time.Nanosecond), 10 * time.Minute, 3},
		{"six periods forgive six, never below zero", 3, restored, 10 * time.Minute, 0},
		{"two periods of five", 5, now.Add(-25 * time.Minute), 10 * time.Minute, 3},
		{"restored in the future (clock skew): nothing", 3, now.Add(time.Minute), 10 * time.Minute, 3},
		{"a week ago, forgiveAfter 1h: start afresh", 1, now.Add(-7 * 24 * time.Hour), time.Hour, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := activator.Forgive(tc.count, tc.at, tc.after, now); got != tc.want {
				t.Errorf("Forgive(%d) = %d, want %d", tc.count, got, tc.want)
			}
		})
	}
}

func TestNextBackoffManualAndEdits(t *testing.T) {
	const s = time.Second
	kill3 := resolved(retryAndKill, 10*s, 3, 1)
	kill1 := resolved(retryAndKill, 10*s, 1, 1)
	stamped := func(st podstate.State, a v1alpha1.ResolvedActivator) podstate.State {
		st.Activator = a.Fingerprint()
		return st
	}
	manual := func(until time.Time) podstate.State {
		st := ejected(2, 30*s)
		st.Strategy = v1alpha1.ManualStrategy
		st.Manual = &podstate.ManualHold{By: "alice", Reason: "canary", Until: until}
		return st
	}
	expo := kill3
	expo.Backoff, expo.MaxPeriod = v1alpha1.BackoffExponential, 25*s
	periodicExp := resolved(periodic, 10*s, 3, 1)
	periodicExp.Backoff = v1alpha1.BackoffExponential
	cases := []struct {
		name  string
		state podstate.State
		a     v1alpha1.ResolvedActivator
		want  activator.Decision
	}{
		{"exponential: retry 3 waits 40s, capped at 25s", ejected(3, 5*s), expo,
			wait(20*s, "retry 3 of 3 (retryAndKill): back in traffic after 25s, due in 20s")},
		{"periodic keeps one period per retry with linear back-off", ejected(3, 5*s), resolved(periodic, 10*s, 3, 1),
			wait(5*s, "retry 3 (periodic): back in traffic after 10s, due in 5s")},
		{"periodic with exponential back-off grows", ejected(3, 5*s), periodicExp,
			wait(35*s, "retry 3 (periodic): back in traffic after 40s, due in 35s")},
		{"past maxRetryCount under the activator of its ejection: killed", stamped(ejected(2, 5*s), kill1), kill1,
			kill("retry 2 exceeds maxRetryCount 1 (retryAndKill): killing the pod")},
		{"past a maxRetryCount lowered since its ejection: restored once on the new schedule", stamped(ejected(2, 5*s), kill3), kill1,
			wait(5*s, "retry 2 exceeds maxRetryCount 1 (retryAndKill), but the activator changed since the ejection: restored once, never punished by an edit: back in traffic after 10s, due in 5s")},
		{"ejected under periodic, now retryAndKill: restored once", stamped(ejected(5, 45*s), resolved(periodic, 10*s, 3, 1)), kill3,
			restoreAt(now.Add(-15*s), "retry 5 exceeds maxRetryCount 3 (retryAndKill), but the activator changed since the ejection: restored once, never punished by an edit: back in traffic after 30s")},
		{"no fingerprint (ejected by an older version): judged as before", ejected(2, 5*s), kill1,
			kill("retry 2 exceeds maxRetryCount 1 (retryAndKill): killing the pod")},
		{"manual hold without --for: never restored by the activator, never killed", manual(time.Time{}), kill1,
			none("ejected by hand by alice: out until restored by hand")},
		{"manual hold with --for: back when it passes, the mode does not apply", manual(now.Add(10 * s)), kill1,
			wait(10*s, "ejected by hand by alice: back in traffic after 40s, due in 10s")},
		{"manual hold past its --for: restored", manual(now.Add(-s)), kill1,
			restoreAt(now.Add(-s), "ejected by hand by alice: back in traffic after 29s")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if d := cmp.Diff(tc.want, activator.Next(tc.state, tc.a, 0, now)); d != "" {
				t.Errorf("Next mismatch (-want +got):\n%s", d)
			}
		})
	}
}

// TestJitterSpreadsPodsHeldAtTheCap: pods whose back-off is past maxPeriod do not all come back together:
// the jitter spreads them below the cap (the cap applies before it), and none waits longer than the cap.
func TestJitterSpreadsPodsHeldAtTheCap(t *testing.T) {
	a := v1alpha1.ResolvedActivator{Mode: v1alpha1.ActivatorModeRetryAndKill, Period: 10 * time.Second, Backoff: v1alpha1.BackoffExponential,
		MaxPeriod: 5 * time.Minute, JitterPercent: 20}
	waits := map[time.Duration]bool{}
	for i := range 100 {
		w := activator.Wait(a, 12, types.UID(fmt.Sprintf("pod-%d", i)))
		if w > a.MaxPeriod || w < 4*time.Minute {
			t.Fatalf("wait %s, want within [4m, 5m] (the cap, less 20%%)", w)
		}
		waits[w] = true
	}
	if len(waits) < 90 {
		t.Errorf("100 pods held at the cap come back at %d distinct times, want them spread", len(waits))
	}
}
