package activator_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/activator"
)

func TestPatchFor(t *testing.T) {
	// The write happens 30s after the state was defaulted, so that restored-at and the repaired break-at
	// cannot be confused.
	later := now.Add(30 * time.Second)
	const laterText = "2026-03-14T15:09:56.535897932Z"
	clean := ejected(2, 20*time.Second)
	broken := justEjected("errors", "annotation kubervisor/break-at is missing"+defaulted)

	cases := map[string]struct {
		state activator.PodState
		d     activator.Decision
		now   time.Time
		want  activator.Patch
	}{
		"restore: traffic yes and restored-at, retry count kept": {
			state: clean, d: activator.Decision{Action: activator.ActionRestore}, now: later,
			want: activator.Patch{
				Labels:      map[string]string{v1alpha1.LabelTraffic: v1alpha1.TrafficYes},
				Annotations: map[string]string{v1alpha1.AnnotationRestoredAt: laterText},
			},
		},
		"restore: restored-at written in UTC": {
			state: clean, d: activator.Decision{Action: activator.ActionRestore}, now: later.In(time.FixedZone("CEST", 2*3600)),
			want: activator.Patch{
				Labels:      map[string]string{v1alpha1.LabelTraffic: v1alpha1.TrafficYes},
				Annotations: map[string]string{v1alpha1.AnnotationRestoredAt: laterText},
			},
		},
		"restore with repair": {
			state: broken, d: activator.Decision{Action: activator.ActionRestore}, now: later,
			want: activator.Patch{
				Labels: map[string]string{v1alpha1.LabelTraffic: v1alpha1.TrafficYes},
				Annotations: map[string]string{
					v1alpha1.AnnotationRestoredAt: laterText,
					v1alpha1.AnnotationBreakAt:    nowText,
					v1alpha1.AnnotationRetryCount: "1",
				},
			},
		},
		"pause: traffic pause": {
			state: clean, d: activator.Decision{Action: activator.ActionPause}, now: later,
			want: activator.Patch{Labels: map[string]string{v1alpha1.LabelTraffic: v1alpha1.TrafficPause}},
		},
		"pause with repair": {
			state: broken, d: activator.Decision{Action: activator.ActionPause}, now: later,
			want: activator.Patch{
				Labels:      map[string]string{v1alpha1.LabelTraffic: v1alpha1.TrafficPause},
				Annotations: repair,
			},
		},
		"kill: nothing, the caller evicts": {
			state: clean, d: activator.Decision{Action: activator.ActionKill}, now: later,
			want: activator.Patch{},
		},
		"kill with repair: the repair only": {
			state: broken, d: activator.Decision{Action: activator.ActionKill}, now: later,
			want: activator.Patch{Annotations: repair},
		},
		"wait: nothing": {
			state: clean, d: activator.Decision{Action: activator.ActionWait}, now: later,
			want: activator.Patch{},
		},
		"wait with repair: the repair only": {
			state: broken, d: activator.Decision{Action: activator.ActionWait}, now: later,
			want: activator.Patch{Annotations: repair},
		},
		"none: nothing": {
			state: withTraffic(clean, v1alpha1.TrafficYes), d: activator.Decision{Action: activator.ActionNone}, now: later,
			want: activator.Patch{},
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

// TestPatchForDoesNotAliasRepair guards the PodState against the caller editing the patch.
func TestPatchForDoesNotAliasRepair(t *testing.T) {
	state := justEjected("errors", "x")
	p := activator.PatchFor(state, activator.Decision{Action: activator.ActionRestore}, now)
	p.Annotations[v1alpha1.AnnotationRetryCount] = "7"
	if diff := cmp.Diff(repair, state.Repair); diff != "" {
		t.Errorf("PodState.Repair changed through the patch (-want +got):\n%s", diff)
	}
}

func TestPatchApplyTo(t *testing.T) {
	ejectedMeta := func() *metav1.ObjectMeta {
		return &metav1.ObjectMeta{
			Name:        "pricer-1",
			Labels:      map[string]string{"app": "pricer", v1alpha1.LabelTraffic: v1alpha1.TrafficNo, v1alpha1.LabelStrategy: "errors"},
			Annotations: map[string]string{v1alpha1.AnnotationBreakAt: nowText, v1alpha1.AnnotationRetryCount: "2", "note": "x"},
		}
	}
	restore := activator.PatchFor(ejected(2, 0), activator.Decision{Action: activator.ActionRestore}, now)
	restored := &metav1.ObjectMeta{
		Name:   "pricer-1",
		Labels: map[string]string{"app": "pricer", v1alpha1.LabelTraffic: v1alpha1.TrafficYes, v1alpha1.LabelStrategy: "errors"},
		Annotations: map[string]string{
			v1alpha1.AnnotationBreakAt: nowText, v1alpha1.AnnotationRetryCount: "2", "note": "x",
			v1alpha1.AnnotationRestoredAt: nowText,
		},
	}

	cases := map[string]struct {
		obj         *metav1.ObjectMeta
		patch       activator.Patch
		want        *metav1.ObjectMeta
		wantChanged bool
	}{
		"restore keeps every other label and annotation, retry count included": {
			obj: ejectedMeta(), patch: restore, want: restored, wantChanged: true,
		},
		"restore applied twice changes nothing the second time": {
			obj: restored.DeepCopy(), patch: restore, want: restored, wantChanged: false,
		},
		"pause on an object without labels allocates them, annotations stay nil": {
			obj:         &metav1.ObjectMeta{Name: "p"},
			patch:       activator.Patch{Labels: map[string]string{v1alpha1.LabelTraffic: v1alpha1.TrafficPause}},
			want:        &metav1.ObjectMeta{Name: "p", Labels: map[string]string{v1alpha1.LabelTraffic: v1alpha1.TrafficPause}},
			wantChanged: true,
		},
		"empty patch changes nothing": {
			obj: ejectedMeta(), patch: activator.Patch{}, want: ejectedMeta(), wantChanged: false,
		},
		"repair overwrites malformed annotations": {
			obj: &metav1.ObjectMeta{
				Name:        "p",
				Labels:      map[string]string{v1alpha1.LabelTraffic: v1alpha1.TrafficNo},
				Annotations: map[string]string{v1alpha1.AnnotationRetryCount: "abc"},
			},
			patch: activator.Patch{Annotations: repair},
			want: &metav1.ObjectMeta{
				Name:        "p",
				Labels:      map[string]string{v1alpha1.LabelTraffic: v1alpha1.TrafficNo},
				Annotations: repair,
			},
			wantChanged: true,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			changed := tc.patch.ApplyTo(tc.obj)
			if changed != tc.wantChanged {
				t.Errorf("ApplyTo() = %t, want %t", changed, tc.wantChanged)
			}
			if diff := cmp.Diff(tc.want, tc.obj); diff != "" {
				t.Errorf("object after ApplyTo() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
