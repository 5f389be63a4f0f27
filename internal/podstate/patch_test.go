package podstate_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/podstate"
)

func TestConstructors(t *testing.T) {
	later := now.Add(30 * time.Second)
	const laterText = "2026-03-14T15:09:56.535897932Z"
	ejected := podstate.State{Owner: "kvs", Traffic: v1alpha1.TrafficNo, Strategy: "errors", BreakAt: now, RetryCount: 2}
	broken := ejected
	broken.Repair = repair
	cases := map[string]struct {
		got, want podstate.Patch
	}{
		"adopt a pod without traffic label: name and traffic yes": {
			got:  podstate.Adopt(podstate.State{}, "kvs"),
			want: podstate.Patch{Labels: map[string]string{v1alpha1.LabelName: "kvs", v1alpha1.LabelTraffic: v1alpha1.TrafficYes}},
		},
		"adopt never overwrites an existing traffic label": {
			got:  podstate.Adopt(podstate.State{Traffic: v1alpha1.TrafficPause}, "kvs"),
			want: podstate.Patch{Labels: map[string]string{v1alpha1.LabelName: "kvs"}},
		},
		"eject: traffic no, strategy, break-at in UTC with nanoseconds, retry count + 1": {
			got: podstate.Eject(podstate.State{Traffic: v1alpha1.TrafficYes, RetryCount: 2}, "latency", later.In(time.FixedZone("CEST", 7200)), ""),
			want: podstate.Patch{
				Labels: map[string]string{v1alpha1.LabelTraffic: v1alpha1.TrafficNo, v1alpha1.LabelStrategy: "latency"},
				Annotations: map[string]string{v1alpha1.AnnotationBreakAt: laterText, v1alpha1.AnnotationRetryCount: "3",
					v1alpha1.AnnotationDeletionCost: v1alpha1.DeletionCostOutOfTraffic},
			},
		},
		"eject a pod never ejected: retry count 1": {
			got: podstate.Eject(podstate.State{Traffic: v1alpha1.TrafficYes}, "latency", now, ""),
			want: podstate.Patch{
				Labels: map[string]string{v1alpha1.LabelTraffic: v1alpha1.TrafficNo, v1alpha1.LabelStrategy: "latency"},
				Annotations: map[string]string{v1alpha1.AnnotationBreakAt: nowText, v1alpha1.AnnotationRetryCount: "1",
					v1alpha1.AnnotationDeletionCost: v1alpha1.DeletionCostOutOfTraffic},
			},
		},
		"restore: traffic yes and restored-at, retry count kept, deletion cost removed": {
			got: podstate.Restore(ejected, later),
			want: podstate.Patch{
				Labels:            map[string]string{v1alpha1.LabelTraffic: v1alpha1.TrafficYes},
				Annotations:       map[string]string{v1alpha1.AnnotationRestoredAt: laterText},
				RemoveAnnotations: []string{v1alpha1.AnnotationDeletionCost},
			},
		},
		"restore with repair": {
			got: podstate.Restore(broken, later),
			want: podstate.Patch{
				Labels: map[string]string{v1alpha1.LabelTraffic: v1alpha1.TrafficYes},
				Annotations: map[string]string{
					v1alpha1.AnnotationRestoredAt: laterText, v1alpha1.AnnotationBreakAt: nowText, v1alpha1.AnnotationRetryCount: "1",
				},
				RemoveAnnotations: []string{v1alpha1.AnnotationDeletionCost},
			},
		},
		"pause with repair, and the deletion cost of a pod out of traffic": {
			got: podstate.Pause(broken),
			want: podstate.Patch{Labels: map[string]string{v1alpha1.LabelTraffic: v1alpha1.TrafficPause},
				Annotations: map[string]string{v1alpha1.AnnotationBreakAt: repair[v1alpha1.AnnotationBreakAt],
					v1alpha1.AnnotationRetryCount: repair[v1alpha1.AnnotationRetryCount], v1alpha1.AnnotationDeletionCost: v1alpha1.DeletionCostOutOfTraffic}},
		},
		"repair of a clean pod is empty": {got: podstate.Repair(ejected), want: podstate.Patch{}},
		"record the activator of a pod ejected without it (an older version)": {
			got:  podstate.RecordActivator(ejected, "0badcafe"),
			want: podstate.Patch{Annotations: map[string]string{v1alpha1.AnnotationActivator: "0badcafe"}},
		},
		"record the activator: never over a recorded one": {
			got:  podstate.RecordActivator(withActivator(ejected, "12345678"), "0badcafe"),
			want: podstate.Patch{},
		},
		"record the activator: never on a pod ejected by hand": {
			got:  podstate.RecordActivator(byHand(ejected), "0badcafe"),
			want: podstate.Patch{},
		},
		"record the activator: never on a pod in traffic": {
			got:  podstate.RecordActivator(podstate.State{Traffic: v1alpha1.TrafficYes, Strategy: "errors", RetryCount: 2}, "0badcafe"),
			want: podstate.Patch{},
		},
		"record the activator: never on a paused pod": {
			got:  podstate.RecordActivator(podstate.State{Traffic: v1alpha1.TrafficPause, Strategy: "errors", RetryCount: 2}, "0badcafe"),
			want: podstate.Patch{},
		},
		"record the activator: never an empty fingerprint": {got: podstate.RecordActivator(ejected, ""), want: podstate.Patch{}},
		"release an ejected pod: back in traffic, ownership and deletion cost removed": {
			got: podstate.Release(ejected),
			want: podstate.Patch{
				Labels:       map[string]string{v1alpha1.LabelTraffic: v1alpha1.TrafficYes},
				RemoveLabels: []string{v1alpha1.LabelName, v1alpha1.LabelStrategy},
				RemoveAnnotations: []string{v1alpha1.AnnotationBreakAt, v1alpha1.AnnotationRetryCount, v1alpha1.AnnotationRestoredAt,
					v1alpha1.AnnotationActivator, v1alpha1.AnnotationManualBy, v1alpha1.AnnotationManualReason, v1alpha1.AnnotationManualUntil,
					v1alpha1.AnnotationDeletionCost},
			},
		},
		"release a paused pod: it stays paused, with its deletion cost": {
			got: podstate.Release(podstate.State{Traffic: v1alpha1.TrafficPause}),
			want: podstate.Patch{
				RemoveLabels: []string{v1alpha1.LabelName, v1alpha1.LabelStrategy},
				RemoveAnnotations: []string{v1alpha1.AnnotationBreakAt, v1alpha1.AnnotationRetryCount, v1alpha1.AnnotationRestoredAt,
					v1alpha1.AnnotationActivator, v1alpha1.AnnotationManualBy, v1alpha1.AnnotationManualReason, v1alpha1.AnnotationManualUntil},
			},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, tc.got); diff != "" {
				t.Errorf("patch mismatch (-want +got):\n%s", diff)
			}
			if tc.got.IsEmpty() != (len(tc.want.Labels)+len(tc.want.Annotations)+len(tc.want.RemoveLabels) == 0) {
				t.Errorf("IsEmpty() = %t for %+v", tc.got.IsEmpty(), tc.got)
			}
		})
	}
}

func withActivator(s podstate.State, fingerprint string) podstate.State {
	s.Activator = fingerprint
	return s
}

func byHand(s podstate.State) podstate.State {
	s.Strategy, s.Manual = v1alpha1.ManualStrategy, &podstate.ManualHold{By: "alice"}
	return s
}

// TestRestoreDoesNotAliasRepair guards the State against the caller editing the patch.
func TestRestoreDoesNotAliasRepair(t *testing.T) {
	state := podstate.State{Traffic: v1alpha1.TrafficNo, Repair: map[string]string{v1alpha1.AnnotationRetryCount: "1"}}
	p := podstate.Restore(state, now)
	p.Annotations[v1alpha1.AnnotationRetryCount] = "7"
	if got := state.Repair[v1alpha1.AnnotationRetryCount]; got != "1" {
		t.Errorf("State.Repair changed through the patch: %q", got)
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
	restore := podstate.Restore(podstate.State{Traffic: v1alpha1.TrafficNo, RetryCount: 2}, now)
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
		patch       podstate.Patch
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
			patch:       podstate.Patch{Labels: map[string]string{v1alpha1.LabelTraffic: v1alpha1.TrafficPause}},
			want:        &metav1.ObjectMeta{Name: "p", Labels: map[string]string{v1alpha1.LabelTraffic: v1alpha1.TrafficPause}},
			wantChanged: true,
		},
		"empty patch changes nothing": {
			obj: ejectedMeta(), patch: podstate.Patch{}, want: ejectedMeta(), wantChanged: false,
		},
		"release removes keys and sets traffic in one application": {
			obj:   ejectedMeta(),
			patch: podstate.Release(podstate.State{Traffic: v1alpha1.TrafficNo}),
			want: &metav1.ObjectMeta{
				Name: "pricer-1", Labels: map[string]string{"app": "pricer", v1alpha1.LabelTraffic: v1alpha1.TrafficYes},
				Annotations: map[string]string{"note": "x"},
			},
			wantChanged: true,
		},
		"removing keys that are not there changes nothing": {
			obj:         &metav1.ObjectMeta{Name: "p", Labels: map[string]string{"app": "a"}},
			patch:       podstate.Patch{RemoveLabels: []string{v1alpha1.LabelName}, RemoveAnnotations: []string{v1alpha1.AnnotationBreakAt}},
			want:        &metav1.ObjectMeta{Name: "p", Labels: map[string]string{"app": "a"}},
			wantChanged: false,
		},
		"repair overwrites malformed annotations": {
			obj: &metav1.ObjectMeta{
				Name:        "p",
				Labels:      map[string]string{v1alpha1.LabelTraffic: v1alpha1.TrafficNo},
				Annotations: map[string]string{v1alpha1.AnnotationRetryCount: "abc"},
			},
			patch: podstate.Patch{Annotations: repair},
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
