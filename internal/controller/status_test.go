package controller

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/podstate"
)

// t0 has a sub-second part, so that a time not truncated as the API server stores it shows. It is on the
// wake grid (wakeGrid), so that a breaker evaluated at t0 is due again exactly one period later.
var t0 = time.Date(2026, 3, 14, 15, 9, 26, 540000000, time.UTC)

func TestMemoryWait(t *testing.T) {
	e := &kvsMemory{next: map[string]time.Time{}}
	if got := e.wait(t0, nil); got != 0 {
		t.Errorf("empty memory waits %s, want 0 (no requeue)", got)
	}
	e.next["slow"] = t0.Add(time.Minute)
	e.next["fast"] = t0.Add(1500 * time.Millisecond)
	got := e.wait(t0, nil)
	if got < 1500*time.Millisecond || got >= 1500*time.Millisecond+wakeGrid {
		t.Errorf("wait = %s, want 1.5s (the next due breaker) rounded up to the %s grid", got, wakeGrid)
	}
	if wake := t0.Add(got); !wake.Equal(wake.Truncate(wakeGrid)) {
		t.Errorf("wake-up at %s is not on the %s grid", wake.Format(time.RFC3339Nano), wakeGrid)
	}
	e.next["fast"] = t0.Add(1500 * time.Millisecond).Truncate(wakeGrid)
	if got := e.wait(t0, nil); got != e.next["fast"].Sub(t0) {
		t.Errorf("wait = %s, want %s: a due time on the grid is kept", got, e.next["fast"].Sub(t0))
	}
	e.next["late"] = t0.Add(-time.Second)
	if got := e.wait(t0, nil); got != time.Millisecond {
		t.Errorf("overdue breaker waits %s, want the 1ms minimum", got)
	}
	// The overdue breaker's query is in flight: the pass runs again at the query's timeout, not at once.
	if got := e.wait(t0, map[string]time.Time{"late": t0.Add(10 * time.Second)}); got != e.next["fast"].Sub(t0) {
		t.Errorf("with the overdue breaker's query in flight, wait = %s, want %s (the next due breaker)", got, e.next["fast"].Sub(t0))
	}
	delete(e.next, "fast")
	delete(e.next, "slow")
	if got := e.wait(t0, map[string]time.Time{"late": t0.Add(10 * time.Second)}); got != 10*time.Second {
		t.Errorf("with only a query in flight, wait = %s, want its 10s timeout", got)
	}
}

// TestNextDue: a breaker evaluated on time keeps its schedule (no drift from the wake grid); a late one, or
// a first one, starts a new one on the grid.
func TestNextDue(t *testing.T) {
	offGrid := t0.Add(7 * time.Millisecond)
	for _, c := range []struct {
		name     string
		due, now time.Time
		want     time.Time
	}{
		{"first evaluation, off the grid", time.Time{}, offGrid, t0.Add(5*time.Second + wakeGrid)},
		{"first evaluation, on the grid", time.Time{}, t0, t0.Add(5 * time.Second)},
		{"on time, woken on the grid", t0, t0.Add(3 * time.Millisecond), t0.Add(5 * time.Second)},
		{"on time, a due time off the grid keeps its schedule", offGrid, offGrid.Add(time.Millisecond), offGrid.Add(5 * time.Second)},
		{"one grain late: a new schedule", t0, t0.Add(wakeGrid + time.Millisecond), t0.Add(5*time.Second + 2*wakeGrid)},
		{"early (a pod event): a new schedule", t0, t0.Add(-time.Second), t0.Add(4 * time.Second)},
	} {
		if got := nextDue(c.due, c.now, 5*time.Second); !got.Equal(c.want) {
			t.Errorf("%s: nextDue = %s, want %s", c.name, got.Format(time.StampMilli), c.want.Format(time.StampMilli))
		}
	}
	// Evaluated a few ms after each wake-up, for a minute: the mean interval is the period.
	e := &kvsMemory{next: map[string]time.Time{}}
	now := offGrid
	first := time.Time{}
	for i := range 12 {
		e.next["b"] = nextDue(e.next["b"], now, 5*time.Second)
		if i == 0 {
			first = e.next["b"]
		}
		now = now.Add(e.wait(now, nil) + 3*time.Millisecond)
	}
	if got := e.next["b"].Sub(first); got != 11*5*time.Second {
		t.Errorf("12 evaluations a period apart span %s of schedule, want 55s (no drift)", got)
	}
}

func TestDatedMovesTimeOnlyOnChange(t *testing.T) {
	ok := breakerOutcome{kind: outcomeOK, anomalous: []string{"p1"}}
	first := dated(ok, breakerOutcome{}, false, t0)
	if again := dated(ok, first, true, t0.Add(time.Minute)); !again.changedAt.Equal(t0) {
		t.Errorf("unchanged outcome moved its time to %s", again.changedAt)
	}
	if changed := dated(breakerOutcome{kind: outcomeNoData}, first, true, t0.Add(2*time.Minute)); !changed.changedAt.Equal(t0.Add(2 * time.Minute)) {
		t.Errorf("changed outcome kept the time %s", changed.changedAt)
	}
}

func TestConflictOf(t *testing.T) {
	mk := func(name string, created time.Time, service string) claim {
		sel, _ := podstate.ManagedSelector(map[string]string{"app": "a"})
		return claim{kvs: kvsAt(name, created, service), selector: sel}
	}
	old, young, other := mk("old", t0, "svc"), mk("young", t0.Add(time.Hour), "svc"), mk("other", t0, "svc2")
	pod := func(owner string, terminating bool) corev1.Pod {
		p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "a"}}}
		if owner != "" {
			p.Labels[kvv1.LabelName] = owner
		}
		if terminating {
			now := metav1.NewTime(t0)
			p.DeletionTimestamp = &now
		}
		return p
	}
	named := func(p corev1.Pod, name string) corev1.Pod { p.Name = name; return p }
	cases := map[string]struct {
		kvs      claim
		claims   []claim
		selected []corev1.Pod
		want     conflict
	}{
		"alone, every pod adopted": {
			kvs: old, claims: []claim{old}, selected: []corev1.Pod{pod("old", false), pod("old", false)},
			want: conflict{owner: true},
		},
		"alone, adoption under way; a terminating pod is not waited for": {
			kvs: old, claims: []claim{old}, selected: []corev1.Pod{pod("old", false), named(pod("", false), "c"), named(pod("", false), "b"), pod("", true)},
			want: conflict{owner: true, unadopted: []string{"b", "c"}},
		},
		"two name one Service: the oldest owns the pods": {
			kvs: old, claims: []claim{old, young}, selected: []corev1.Pod{pod("old", false)},
			want: conflict{owner: true, reason: kvv1.ReasonServiceClaimed,
				message: "Service svc is also named by KubervisorService young; its pods are supervised by the oldest, old"},
		},
		"two name one Service: the younger leaves them alone": {
			kvs: young, claims: []claim{old, young}, selected: []corev1.Pod{pod("old", false)},
			want: conflict{owner: false, reason: kvv1.ReasonServiceClaimed,
				message: "Service svc is also named by KubervisorService old; its pods are supervised by the oldest, old"},
		},
		"selected pods supervised by others, counted by owner in name order": {
			kvs: old, claims: []claim{old, other},
			selected: []corev1.Pod{pod("old", false), pod("zeta", false), pod("other", false), pod("other", false)},
			want: conflict{owner: true, reason: kvv1.ReasonPodsClaimed,
				message: "pods selected by Service svc are supervised by another KubervisorService: 2 supervised by other, 1 supervised by zeta"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := conflictOf(tc.kvs.kvs, tc.claims, pointersTo(tc.selected))
			if d := cmp.Diff(tc.want, got, cmp.AllowUnexported(conflict{})); d != "" {
				t.Errorf("conflictOf mismatch (-want +got):\n%s", d)
			}
		})
	}
}

// roundTrip returns the status as a client reads it back: through JSON, as the API server stores it.
func roundTrip(t *testing.T, st kvv1.KubervisorServiceStatus) kvv1.KubervisorServiceStatus {
	t.Helper()
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var out kvv1.KubervisorServiceStatus
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestDesiredStatus(t *testing.T) {
	stored := metav1.NewTime(t0.Truncate(time.Second))
	later := t0.Add(10 * time.Minute)
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "svc"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "a", kvv1.LabelTraffic: kvv1.TrafficYes}}}
	readyPod := func(name, traffic string) corev1.Pod {
		return corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{kvv1.LabelTraffic: traffic}},
			Status: corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}}
	}
	ejected := readyPod("p1", "no")
	ejected.Labels[kvv1.LabelStrategy] = "a"
	obs := &observation{svc: svc, pods: pointersTo([]corev1.Pod{readyPod("p0", "yes"), ejected, readyPod("p2", "yes")}),
		conflict: conflict{owner: true}}
	kvsWith := func(status kvv1.KubervisorServiceStatus) *kvv1.KubervisorService {
		k := kvsAt("kvs", t0, "svc")
		k.Generation = 3
		k.Spec.Breakers = []kvv1.BreakerStrategy{{Name: "a"}, {Name: "b"}}
		k.Status = status
		return k
	}
	outcomes := map[string]breakerOutcome{
		"a": {kind: outcomeOK, anomalous: []string{"p1", "p0"}, ejected: []string{"p1"}, withheld: []string{"p0"}, changedAt: t0},
		"b": {kind: outcomeNoData, changedAt: t0},
	}
	cond := func(typ string, ok bool, reason, msg string) metav1.Condition {
		c := metav1.Condition{Type: typ, Status: metav1.ConditionFalse, Reason: reason, Message: msg, ObservedGeneration: 3, LastTransitionTime: stored}
		if ok {
			c.Status = metav1.ConditionTrue
		}
		return c
	}

	t.Run("from scratch: every time as the API server stores it", func(t *testing.T) {
		got := desiredStatus(kvsWith(kvv1.KubervisorServiceStatus{}), obs, recalled{outcomes: outcomes}, t0)
		want := kvv1.KubervisorServiceStatus{
			ObservedGeneration: 3,
			Pods:               kvv1.PodCounts{Managed: 3, Ready: 3, InTraffic: 2, Ejected: 1},
			Breakers: []kvv1.BreakerStatus{
				{Name: "a", LastEvaluationTime: &stored, LastResult: "OK", AnomalousPods: []string{"p1", "p0"},
					EjectedPods: []string{"p1"}, WithheldPods: []string{"p0"}},
				{Name: "b", LastEvaluationTime: &stored, LastResult: "NoData"},
			},
			Conditions: []metav1.Condition{
				cond(kvv1.ConditionServiceFound, true, kvv1.ReasonServiceFound, "Service svc found"),
				cond(kvv1.ConditionTrafficControlled, true, kvv1.ReasonSelectorHasTraffic, "Service svc selects kubervisor/traffic=yes: ejections take effect"),
				cond(kvv1.ConditionConflict, false, kvv1.ReasonNoConflict, "No other KubervisorService supervises these pods"),
				cond(kvv1.ConditionReadinessGateMissing, false, kvv1.ReasonSelectorMode, "Selector mode: pods need no readiness gate"),
				cond(kvv1.ConditionEjectionAllowed, false, kvv1.ReasonFloorReached, "The floor keeps anomalous pods in traffic: a withheld p0"),
				cond(kvv1.ConditionReady, true, kvv1.ReasonAllBreakersOK, "Service found and every breaker's last evaluation succeeded"),
			},
		}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("desiredStatus mismatch (-want +got):\n%s", d)
		}
	})

	t.Run("steady state: the status read back is the desired status of a later pass", func(t *testing.T) {
		first := roundTrip(t, desiredStatus(kvsWith(kvv1.KubervisorServiceStatus{}), obs, recalled{outcomes: outcomes}, t0))
		again := desiredStatus(kvsWith(first), obs, recalled{outcomes: outcomes}, later)
		if !equality.Semantic.DeepEqual(first, again) {
			t.Errorf("a pass that changed nothing wants a write:\n%s", cmp.Diff(first, again))
		}
	})

	t.Run("after a restart an unchanged outcome keeps its stored time", func(t *testing.T) {
		first := roundTrip(t, desiredStatus(kvsWith(kvv1.KubervisorServiceStatus{}), obs, recalled{outcomes: outcomes}, t0))
		fresh := map[string]breakerOutcome{}
		for k, o := range outcomes {
			o.changedAt = later // the new process evaluated for the first time at later
			fresh[k] = o
		}
		again := desiredStatus(kvsWith(first), obs, recalled{outcomes: fresh}, later)
		if !equality.Semantic.DeepEqual(first, again) {
			t.Errorf("a restart wants a write:\n%s", cmp.Diff(first, again))
		}
	})

	t.Run("a changed outcome gets its own time; a condition that flips gets now", func(t *testing.T) {
		first := roundTrip(t, desiredStatus(kvsWith(kvv1.KubervisorServiceStatus{}), obs, recalled{outcomes: outcomes}, t0))
		failing := map[string]breakerOutcome{"a": outcomes["a"], "b": {kind: outcomeError, err: "querying: refused", changedAt: later}}
		got := desiredStatus(kvsWith(first), obs, recalled{outcomes: failing}, later)
		laterStored := metav1.NewTime(later.Truncate(time.Second))
		if b := got.Breakers[1]; b.LastResult != "Error: querying: refused" || !b.LastEvaluationTime.Equal(&laterStored) {
			t.Errorf("breaker b = %+v, want the error at %s", b, laterStored)
		}
		if a := got.Breakers[0]; !a.LastEvaluationTime.Equal(&stored) {
			t.Errorf("unchanged breaker a moved to %s", a.LastEvaluationTime)
		}
		r := meta.FindStatusCondition(got.Conditions, kvv1.ConditionReady)
		want := metav1.Condition{Type: kvv1.ConditionReady, Status: metav1.ConditionFalse, Reason: kvv1.ReasonDetectorError,
			Message: "breaker b: Error: querying: refused", ObservedGeneration: 3, LastTransitionTime: laterStored}
		if d := cmp.Diff(want, *r, cmp.Comparer(func(a, b metav1.Time) bool { return a.Equal(&b) })); d != "" {
			t.Errorf("Ready mismatch (-want +got):\n%s", d)
		}
		sf := meta.FindStatusCondition(got.Conditions, kvv1.ConditionServiceFound)
		if !sf.LastTransitionTime.Equal(&stored) {
			t.Errorf("ServiceFound did not change but moved its transition time to %s", sf.LastTransitionTime)
		}
	})

	t.Run("a breaker not evaluated since start keeps its stored entry and is pending; a removed one is dropped", func(t *testing.T) {
		prev := kvv1.KubervisorServiceStatus{Breakers: []kvv1.BreakerStatus{
			{Name: "gone", LastResult: "OK", LastEvaluationTime: &stored},
			{Name: "b", LastResult: "Error: old", LastEvaluationTime: &stored},
		}}
		got := desiredStatus(kvsWith(prev), obs, recalled{outcomes: map[string]breakerOutcome{"a": outcomes["a"]}}, t0)
		if len(got.Breakers) != 2 || got.Breakers[0].Name != "a" || got.Breakers[1].Name != "b" || got.Breakers[1].LastResult != "Error: old" {
			t.Errorf("breakers = %+v, want a (evaluated) then b (carried over)", got.Breakers)
		}
		r := meta.FindStatusCondition(got.Conditions, kvv1.ConditionReady)
		if r.Reason != kvv1.ReasonPending || r.Message != "Waiting for the first evaluation of breakers b" {
			t.Errorf("Ready = %s %q, want Pending: conditions come from outcomes, not from a stored lastResult", r.Reason, r.Message)
		}
	})
}
