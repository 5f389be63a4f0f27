package activator_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/activator"
	"github.com/kubervisor/kubervisor/internal/podstate"
)

func TestPatchFor(t *testing.T) {
	// The write happens 30s after the state was defaulted, so that restored-at and the repaired break-at
	// cannot be confused.
	later := now.Add(30 * time.Second)
	const laterText = "2026-03-14T15:09:56.535897932Z"
	clean := ejected(2, 20*time.Second)
	broken := justEjected("errors", "annotation kubervisor/break-at is missing"+defaulted)

	cases := map[string]struct {
		state podstate.State
		d     activator.Decision
		now   time.Time
		want  podstate.Patch
	}{
		"restore: traffic yes and restored-at, retry count kept": {
			state: clean, d: activator.Decision{Action: activator.ActionRestore}, now: later,
			want: podstate.Patch{
				Labels:            map[string]string{v1alpha1.LabelTraffic: v1alpha1.TrafficYes},
				Annotations:       map[string]string{v1alpha1.AnnotationRestoredAt: laterText},
				RemoveAnnotations: []string{v1alpha1.AnnotationDeletionCost},
			},
		},
		"restore: restored-at written in UTC": {
			state: clean, d: activator.Decision{Action: activator.ActionRestore}, now: later.In(time.FixedZone("CEST", 2*3600)),
			want: podstate.Patch{
				Labels:            map[string]string{v1alpha1.LabelTraffic: v1alpha1.TrafficYes},
				Annotations:       map[string]string{v1alpha1.AnnotationRestoredAt: laterText},
				RemoveAnnotations: []string{v1alpha1.AnnotationDeletionCost},
			},
		},
		"restore with repair": {
			state: broken, d: activator.Decision{Action: activator.ActionRestore}, now: later,
			want: podstate.Patch{
				Labels: map[string]string{v1alpha1.LabelTraffic: v1alpha1.TrafficYes},
				Annotations: map[string]string{
					v1alpha1.AnnotationRestoredAt: laterText,
					v1alpha1.AnnotationBreakAt:    nowText,
					v1alpha1.AnnotationRetryCount: "1",
				},
				RemoveAnnotations: []string{v1alpha1.AnnotationDeletionCost},
			},
		},
		"pause: traffic pause, the deletion cost of a pod out of traffic": {
			state: clean, d: activator.Decision{Action: activator.ActionPause}, now: later,
			want: podstate.Patch{Labels: map[string]string{v1alpha1.LabelTraffic: v1alpha1.TrafficPause},
				Annotations: map[string]string{v1alpha1.AnnotationDeletionCost: v1alpha1.DeletionCostOutOfTraffic}},
		},
		"pause with repair": {
			state: broken, d: activator.Decision{Action: activator.ActionPause}, now: later,
			want: podstate.Patch{
				Labels: map[string]string{v1alpha1.LabelTraffic: v1alpha1.TrafficPause},
				Annotations: map[string]string{v1alpha1.AnnotationBreakAt: repair[v1alpha1.AnnotationBreakAt],
					v1alpha1.AnnotationRetryCount: repair[v1alpha1.AnnotationRetryCount], v1alpha1.AnnotationDeletionCost: v1alpha1.DeletionCostOutOfTraffic},
			},
		},
		"kill: nothing, the caller evicts": {
			state: clean, d: activator.Decision{Action: activator.ActionKill}, now: later,
			want: podstate.Patch{},
		},
		"kill with repair: the repair only": {
			state: broken, d: activator.Decision{Action: activator.ActionKill}, now: later,
			want: podstate.Patch{Annotations: repair},
		},
		"wait: nothing": {
			state: clean, d: activator.Decision{Action: activator.ActionWait}, now: later,
			want: podstate.Patch{},
		},
		"wait with repair: the repair only": {
			state: broken, d: activator.Decision{Action: activator.ActionWait}, now: later,
			want: podstate.Patch{Annotations: repair},
		},
		"none: nothing": {
			state: withTraffic(clean, v1alpha1.TrafficYes), d: activator.Decision{Action: activator.ActionNone}, now: later,
			want: podstate.Patch{},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := activator.PatchFor(tc.state, tc.d, tc.now)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("PatchFor() mismatch (-want +got):\n%s", diff)
			}
			if got.IsEmpty() != (len(tc.want.Labels)+len(tc.want.Annotations) == 0) {
				t.Errorf("IsEmpty() = %t for %+v", got.IsEmpty(), got)
			}
		})
	}
}

// TestPatchForDoesNotAliasRepair guards the State against the caller editing the patch.
func TestPatchForDoesNotAliasRepair(t *testing.T) {
	state := justEjected("errors", "x")
	p := activator.PatchFor(state, activator.Decision{Action: activator.ActionRestore}, now)
	p.Annotations[v1alpha1.AnnotationRetryCount] = "7"
	if diff := cmp.Diff(repair, state.Repair); diff != "" {
		t.Errorf("State.Repair changed through the patch (-want +got):\n%s", diff)
	}
}

// TestRepairConverges proves that a defaulted pod is not "just ejected" again on every reconcile:
// once the Repair is written, a later parse reads the first default back and the wait shrinks.
func TestRepairConverges(t *testing.T) {
	pod := &metav1.ObjectMeta{Name: "p", Labels: map[string]string{v1alpha1.LabelTraffic: v1alpha1.TrafficNo}}
	a := resolved(periodic, 10*time.Second, 3, 1)

	first := podstate.Parse(pod.Labels, pod.Annotations, now)
	d := activator.Next(first, a, 0, now)
	if diff := cmp.Diff(activator.Decision{
		Action: activator.ActionWait, At: now.Add(10 * time.Second), After: 10 * time.Second,
		Reason: "retry 1 (periodic): back in traffic after 10s, due in 10s",
	}, d); diff != "" {
		t.Fatalf("first Next() mismatch (-want +got):\n%s", diff)
	}
	if !activator.PatchFor(first, d, now).ApplyTo(pod) {
		t.Fatal("ApplyTo() reported no change, want the repaired annotations written")
	}

	later := now.Add(7 * time.Second)
	second := podstate.Parse(pod.Labels, pod.Annotations, later)
	want := podstate.State{
		Traffic: "no", BreakAt: now, RetryCount: 1,
		Problems: []string{"label kubervisor/strategy is missing; using defaultActivator"},
	}
	if diff := cmp.Diff(want, second, cmpopts.IgnoreFields(podstate.State{}, "BreakAtField", "RetryCountField")); diff != "" {
		t.Fatalf("second Parse() mismatch (-want +got):\n%s", diff)
	}
	if got := activator.Next(second, a, 0, later); got.Action != activator.ActionWait || got.After != 3*time.Second {
		t.Errorf("second Next() = %s after %s, want Wait after 3s", got.Action, got.After)
	}
	if got := activator.Next(second, a, 0, now.Add(10*time.Second)); got.Action != activator.ActionRestore {
		t.Errorf("Next() at break-at + period = %s, want Restore", got.Action)
	}
}
