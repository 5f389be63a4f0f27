package controller

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
)

func kvsAt(name string, created time.Time, service string) *kvv1.KubervisorService {
	return &kvv1.KubervisorService{
		ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(created)},
		Spec:       kvv1.KubervisorServiceSpec{Service: service},
	}
}

func svcWith(selector map[string]string) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "svc"}, Spec: corev1.ServiceSpec{Selector: selector}}
}

func podWith(l map[string]string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Labels: l}}
}

func TestManagedSelector(t *testing.T) {
	cases := map[string]struct {
		selector map[string]string
		ok       bool
		matches  map[string]string
		misses   map[string]string
	}{
		"traffic key is ignored": {
			selector: map[string]string{"app": "a", kvv1.LabelTraffic: kvv1.TrafficYes}, ok: true,
			matches: map[string]string{"app": "a", kvv1.LabelTraffic: kvv1.TrafficNo},
			misses:  map[string]string{"app": "b"},
		},
		"plain selector": {
			selector: map[string]string{"app": "a"}, ok: true,
			matches: map[string]string{"app": "a"}, misses: map[string]string{},
		},
		"only the traffic key selects nothing": {
			selector: map[string]string{kvv1.LabelTraffic: kvv1.TrafficYes},
			misses:   map[string]string{kvv1.LabelTraffic: kvv1.TrafficYes},
		},
		"no selector selects nothing": {misses: map[string]string{"app": "a"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			sel, ok := managedSelector(svcWith(tc.selector))
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v", ok, tc.ok)
			}
			if tc.matches != nil && !sel.Matches(labelsSet(tc.matches)) {
				t.Errorf("selector %v does not match %v", sel, tc.matches)
			}
			if sel.Matches(labelsSet(tc.misses)) {
				t.Errorf("selector %v matches %v", sel, tc.misses)
			}
		})
	}
	if _, ok := managedSelector(nil); ok {
		t.Error("a missing Service selects pods")
	}
}

func TestDesiredOwner(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	claimOf := func(k *kvv1.KubervisorService, selector map[string]string) claim {
		sel, _ := managedSelector(svcWith(selector))
		return claim{kvs: k, selector: sel}
	}
	old := claimOf(kvsAt("old", t0, "svc"), map[string]string{"app": "a"})
	young := claimOf(kvsAt("young", t0.Add(time.Hour), "svc"), map[string]string{"app": "a"})
	sameAge := claimOf(kvsAt("b-same", t0, "svc2"), map[string]string{"app": "a"})
	other := claimOf(kvsAt("other", t0, "svc3"), map[string]string{"app": "b"})

	cases := map[string]struct {
		pod    map[string]string
		claims []claim
		want   string
	}{
		"oldest claim wins":                     {pod: map[string]string{"app": "a"}, claims: []claim{old, young}, want: "old"},
		"same age: name decides":                {pod: map[string]string{"app": "a"}, claims: []claim{old, sameAge}, want: "b-same"},
		"current owner keeps a pod it selects":  {pod: map[string]string{"app": "a", kvv1.LabelName: "young"}, claims: []claim{old, young}, want: "young"},
		"owner that no longer selects loses it": {pod: map[string]string{"app": "a", kvv1.LabelName: "other"}, claims: []claim{old, other}, want: "old"},
		"unknown owner loses it":                {pod: map[string]string{"app": "a", kvv1.LabelName: "gone"}, claims: []claim{young}, want: "young"},
		"nobody selects":                        {pod: map[string]string{"app": "z", kvv1.LabelName: "old"}, claims: []claim{old, other}, want: ""},
		"no claims":                             {pod: map[string]string{"app": "a"}, want: ""},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			cs := append([]claim(nil), tc.claims...)
			sortClaims(cs)
			if got := desiredOwner(podWith(tc.pod), cs); got != tc.want {
				t.Errorf("desiredOwner = %q, want %q", got, tc.want)
			}
		})
	}

	terminating := podWith(map[string]string{"app": "a", kvv1.LabelName: "other"})
	now := metav1.NewTime(t0)
	terminating.DeletionTimestamp = &now
	if got := desiredOwner(terminating, []claim{old}); got != "other" {
		t.Errorf("a terminating pod changed hands to %q", got)
	}
}

func TestCountPods(t *testing.T) {
	pod := func(traffic string, ready bool) corev1.Pod {
		p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{}}}
		if traffic != "" {
			p.Labels[kvv1.LabelTraffic] = traffic
		}
		s := corev1.ConditionFalse
		if ready {
			s = corev1.ConditionTrue
		}
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: s}}
		return p
	}
	got := countPods([]corev1.Pod{
		pod("yes", true), pod("yes", true), pod("yes", false), pod("no", true), pod("no", false),
		pod("pause", true), pod("", true), pod("maybe", false),
	})
	want := kvv1.PodCounts{Managed: 8, Ready: 5, InTraffic: 2, Ejected: 2, Paused: 1, Unknown: 2}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("countPods mismatch (-want +got):\n%s", d)
	}
}

func TestScheduleWait(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	e := &scheduleEntry{next: map[string]time.Time{}}
	if got := e.wait(now); got != 0 {
		t.Errorf("empty schedule waits %s, want 0 (no requeue)", got)
	}
	e.next["slow"] = now.Add(time.Minute)
	e.next["fast"] = now.Add(1500 * time.Millisecond)
	if got := e.wait(now); got != 1500*time.Millisecond {
		t.Errorf("wait = %s, want 1.5s (the next due breaker)", got)
	}
	e.next["late"] = now.Add(-time.Second)
	if got := e.wait(now); got != time.Millisecond {
		t.Errorf("overdue breaker waits %s, want the 1ms minimum", got)
	}
	if !e.due("late", now) || e.due("slow", now) || !e.due("never-run", now) || !e.due("fast", now.Add(1500*time.Millisecond)) {
		t.Error("due() disagrees with the schedule")
	}
}

func TestSetBreakerStatusMovesTimeOnlyOnChange(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	st := &kvv1.KubervisorServiceStatus{}
	setBreakerStatus(st, kvv1.BreakerStatus{Name: "b", LastResult: "OK"}, t0)
	setBreakerStatus(st, kvv1.BreakerStatus{Name: "b", LastResult: "OK"}, t0.Add(time.Minute))
	if got := st.Breakers[0].LastEvaluationTime.Time; !got.Equal(t0) {
		t.Errorf("unchanged entry moved its time to %s", got)
	}
	setBreakerStatus(st, kvv1.BreakerStatus{Name: "b", LastResult: "NoData"}, t0.Add(2*time.Minute))
	if got := st.Breakers[0].LastEvaluationTime.Time; !got.Equal(t0.Add(2 * time.Minute)) {
		t.Errorf("changed entry kept the time %s", got)
	}
	if len(st.Breakers) != 1 {
		t.Errorf("entries = %d, want 1", len(st.Breakers))
	}
}

func labelsSet(m map[string]string) labels.Set { return labels.Set(m) }

func TestScheduleRemembersOutcomesAcrossALostStatusWrite(t *testing.T) {
	t0 := metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	e := &scheduleEntry{last: map[string]kvv1.BreakerStatus{}}
	fresh := &kvv1.KubervisorServiceStatus{Breakers: []kvv1.BreakerStatus{
		{Name: "a", LastResult: "OK", WouldEjectPods: []string{"p2"}, LastEvaluationTime: &t0},
		{Name: "b", LastResult: "NoData", LastEvaluationTime: &t0},
	}}
	e.remember(fresh, map[string]string{"a": "OK"})
	if _, ok := e.last["b"]; ok {
		t.Error("remembered a breaker that was not evaluated in the pass")
	}
	// The write was lost: the next pass starts from the object as it was before.
	stale := &kvv1.KubervisorServiceStatus{Breakers: []kvv1.BreakerStatus{{Name: "b", LastResult: "Error: x"}}}
	e.recall(stale)
	want := []kvv1.BreakerStatus{{Name: "b", LastResult: "Error: x"}, fresh.Breakers[0]}
	if d := cmp.Diff(want, stale.Breakers); d != "" {
		t.Errorf("recall mismatch (-want +got):\n%s", d)
	}
}
