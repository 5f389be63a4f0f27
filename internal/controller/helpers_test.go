package controller

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/podstate"
)

func kvsAt(name string, created time.Time, service string) *kvv1.KubervisorService {
	return &kvv1.KubervisorService{
		ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(created)},
		Spec:       kvv1.KubervisorServiceSpec{Service: service},
	}
}

func podWith(l map[string]string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Labels: l}}
}

func TestDesiredOwner(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	claimOf := func(k *kvv1.KubervisorService, selector map[string]string) claim {
		sel, _ := podstate.ManagedSelector(selector)
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
	got := countPods(pointersTo([]corev1.Pod{
		pod("yes", true), pod("yes", true), pod("yes", false), pod("no", true), pod("no", false),
		pod("pause", true), pod("", true), pod("maybe", false),
	}), false)
	want := kvv1.PodCounts{Managed: 8, Ready: 5, InTraffic: 2, Ejected: 2, Paused: 1, Unknown: 2}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("countPods mismatch (-want +got):\n%s", d)
	}

	// readinessGate mode: readiness is ContainersReady; an ejected pod is not Ready (the gate), yet counts.
	gated := func(traffic string, containersReady bool) corev1.Pod {
		p := pod(traffic, false)
		s := corev1.ConditionFalse
		if containersReady {
			s = corev1.ConditionTrue
		}
		p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: corev1.ContainersReady, Status: s})
		return p
	}
	got = countPods(pointersTo([]corev1.Pod{gated("yes", true), gated("no", true), gated("yes", false)}), true)
	want = kvv1.PodCounts{Managed: 3, Ready: 2, InTraffic: 1, Ejected: 1}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("countPods in readinessGate mode mismatch (-want +got):\n%s", d)
	}
}

func TestWithoutConflicts(t *testing.T) {
	conflict := apierrors.NewConflict(schema.GroupResource{Resource: "pods"}, "p", errors.New("the object has been modified"))
	forbidden := apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "q", errors.New("denied"))
	cases := map[string]struct {
		err            error
		wantOthers     []error
		wantConflicted bool
	}{
		"nil":                                  {},
		"a conflict":                           {err: conflict, wantConflicted: true},
		"a wrapped conflict":                   {err: fmt.Errorf("patching pod p: %w", conflict), wantConflicted: true},
		"a Forbidden":                          {err: forbidden, wantOthers: []error{forbidden}},
		"a conflict joined before a Forbidden": {err: errors.Join(conflict, forbidden), wantOthers: []error{forbidden}, wantConflicted: true},
		"nested joins": {err: errors.Join(errors.Join(conflict), fmt.Errorf("x: %w", forbidden)),
			wantOthers: []error{forbidden}, wantConflicted: true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			others, conflicted := withoutConflicts(tc.err)
			if conflicted != tc.wantConflicted {
				t.Errorf("conflicted = %t, want %t", conflicted, tc.wantConflicted)
			}
			if (others == nil) != (len(tc.wantOthers) == 0) {
				t.Fatalf("others = %v, want %v", others, tc.wantOthers)
			}
			for _, w := range tc.wantOthers {
				if !errors.Is(others, w) {
					t.Errorf("others = %v, lost %v", others, w)
				}
			}
			if apierrors.IsConflict(others) {
				t.Errorf("others %v still holds a conflict", others)
			}
		})
	}
	// requeueOnConflict returns the Forbidden, not a quiet requeue.
	if _, err := requeueOnConflict(context.Background(), errors.Join(conflict, forbidden)); !apierrors.IsForbidden(err) {
		t.Errorf("requeueOnConflict(conflict + Forbidden) = %v, want the Forbidden", err)
	}
}
