package podstate

import (
	"maps"
	"slices"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubervisor/kubervisor/api/v1alpha1"
)

// Patch is the labels and annotations to set on a pod, and those to remove, for a merge patch. The
// constructors below are the only writers of the pod contract: every write Kubervisor makes on a pod's
// metadata is one of them (or a Merge of them).
type Patch struct {
	// Labels to set, nil when none.
	Labels map[string]string
	// Annotations to set, nil when none.
	Annotations map[string]string
	// RemoveLabels and RemoveAnnotations are keys to delete.
	RemoveLabels, RemoveAnnotations []string
}

// Adopt puts a pod under the named KubervisorService: kubervisor/name, and kubervisor/traffic=yes only
// when the pod has no traffic label (an existing no or pause is never overwritten, SPEC §3).
func Adopt(s State, owner string) Patch {
	p := Patch{Labels: map[string]string{v1alpha1.LabelName: owner}}
	if s.Traffic == "" {
		p.Labels[v1alpha1.LabelTraffic] = v1alpha1.TrafficYes
	}
	return p
}

// Eject takes a pod out of traffic for the named breaker (SPEC §5 step 4): traffic=no, strategy, break-at
// now, the deletion cost of a pod out of traffic (SPEC §5 step 12: a ReplicaSet removes it before serving
// pods), the retry count one more than s.RetryCount (an unusable count counts as none; the caller lowers it
// first for forgiveness) and the fingerprint of the activator now in force ("" writes none).
func Eject(s State, breaker string, now time.Time, activator string) Patch {
	p := Patch{
		Labels: map[string]string{v1alpha1.LabelTraffic: v1alpha1.TrafficNo, v1alpha1.LabelStrategy: breaker},
		Annotations: map[string]string{
			v1alpha1.AnnotationBreakAt:      FormatTime(now),
			v1alpha1.AnnotationRetryCount:   strconv.FormatInt(int64(max(s.RetryCount, 0))+1, 10),
			v1alpha1.AnnotationDeletionCost: v1alpha1.DeletionCostOutOfTraffic,
		},
	}
	if activator != "" {
		p.Annotations[v1alpha1.AnnotationActivator] = activator
	}
	return p
}

// Restore puts an ejected pod back in traffic: traffic=yes and restored-at now, its deletion cost removed. The retry count is kept (it
// drives the back-off of the next ejection), and so are break-at and strategy, for the record. Any repair
// the parse found is included.
func Restore(s State, now time.Time) Patch {
	p := Repair(s).Merge(Patch{
		Labels:            map[string]string{v1alpha1.LabelTraffic: v1alpha1.TrafficYes},
		Annotations:       map[string]string{v1alpha1.AnnotationRestoredAt: FormatTime(now)},
		RemoveAnnotations: []string{v1alpha1.AnnotationDeletionCost},
	})
	if s.Manual != nil {
		// The hold is over; the strategy label stays, for the record.
		p.RemoveAnnotations = append(p.RemoveAnnotations, v1alpha1.AnnotationManualBy, v1alpha1.AnnotationManualReason,
			v1alpha1.AnnotationManualUntil)
	}
	return p
}

// EjectByHand takes a pod out of traffic at a person's request (SPEC §10): traffic=no, the manual strategy,
// break-at now, who, why and until when (zero: until restored). The retry count is kept: a person's
// decision is no misbehaviour of the pod.
func EjectByHand(by, reason string, until, now time.Time) Patch {
	p := Patch{
		Labels: map[string]string{v1alpha1.LabelTraffic: v1alpha1.TrafficNo, v1alpha1.LabelStrategy: v1alpha1.ManualStrategy},
		Annotations: map[string]string{v1alpha1.AnnotationBreakAt: FormatTime(now), v1alpha1.AnnotationManualBy: by,
			v1alpha1.AnnotationManualReason: reason, v1alpha1.AnnotationDeletionCost: v1alpha1.DeletionCostOutOfTraffic},
	}
	if until.IsZero() {
		p.RemoveAnnotations = []string{v1alpha1.AnnotationManualUntil}
	} else {
		p.Annotations[v1alpha1.AnnotationManualUntil] = FormatTime(until)
	}
	return p
}

// Pause keeps an ejected pod out of traffic for good, for investigation: traffic=pause, with any repair.
// NOTE: a paused pod keeps the deletion cost of a pod out of traffic: it serves nothing, so a ReplicaSet
// that must remove a pod removes it before a serving one (to keep it through a rollout, take it out of its
// ReplicaSet by removing the label the ReplicaSet selects).
func Pause(s State) Patch {
	return Repair(s).Merge(Patch{Labels: map[string]string{v1alpha1.LabelTraffic: v1alpha1.TrafficPause},
		Annotations: map[string]string{v1alpha1.AnnotationDeletionCost: v1alpha1.DeletionCostOutOfTraffic}})
}

// MarkOut gives a pod out of traffic (no or pause) the deletion cost of one, when it lacks it: a pod taken
// out by an older version, or whose cost someone changed. Empty when the pod carries it already.
func MarkOut(annotations map[string]string) Patch {
	if annotations[v1alpha1.AnnotationDeletionCost] == v1alpha1.DeletionCostOutOfTraffic {
		return Patch{}
	}
	return Patch{Annotations: map[string]string{v1alpha1.AnnotationDeletionCost: v1alpha1.DeletionCostOutOfTraffic}}
}

// RecordActivator gives a pod a breaker took out of traffic (no, not by hand) the fingerprint of the
// activator in force now, when it carries none: a pod ejected by a version that did not record it. An edit
// of that activator afterwards then restores the pod once instead of pausing or killing it (SPEC §6, a spec
// change never punishes), as for a pod this version ejected. Empty for a pod in traffic or paused (the
// activator never acts on it), ejected by hand (the activator's mode does not apply to it), or carrying a
// fingerprint already, and for an empty fingerprint.
func RecordActivator(s State, fingerprint string) Patch {
	if s.Traffic != v1alpha1.TrafficNo || s.Manual != nil || s.Activator != "" || fingerprint == "" {
		return Patch{}
	}
	return Patch{Annotations: map[string]string{v1alpha1.AnnotationActivator: fingerprint}}
}

// Repair persists the defaults Parse chose for unusable annotations of an ejected pod, so that the
// schedule converges instead of restarting at every reconcile; empty when nothing needs repairing.
func Repair(s State) Patch {
	return Patch{Annotations: maps.Clone(s.Repair)}
}

// Release lets go of a pod: Kubervisor's ownership labels and annotations are removed and an ejected pod is
// back in traffic, so that nothing stays out of traffic because Kubervisor stopped supervising it. A
// paused pod stays paused, with its deletion cost: the user asked to keep it for investigation. An
// ejected pod loses its deletion cost with the rest.
func Release(s State) Patch {
	p := Patch{RemoveLabels: slices.Clone(v1alpha1.OwnedLabels), RemoveAnnotations: slices.Clone(v1alpha1.OwnedAnnotations)}
	if s.Traffic == v1alpha1.TrafficNo {
		p.Labels = map[string]string{v1alpha1.LabelTraffic: v1alpha1.TrafficYes}
		p.RemoveAnnotations = append(p.RemoveAnnotations, v1alpha1.AnnotationDeletionCost)
	}
	return p
}

// Merge returns p with q's changes on top (q wins on a key both set). Neither is modified.
func (p Patch) Merge(q Patch) Patch {
	out := Patch{
		Labels:            mergeMaps(p.Labels, q.Labels),
		Annotations:       mergeMaps(p.Annotations, q.Annotations),
		RemoveLabels:      slices.Concat(p.RemoveLabels, q.RemoveLabels),
		RemoveAnnotations: slices.Concat(p.RemoveAnnotations, q.RemoveAnnotations),
	}
	return out
}

func mergeMaps(a, b map[string]string) map[string]string {
	if len(a)+len(b) == 0 {
		return nil
	}
	out := make(map[string]string, len(a)+len(b))
	maps.Copy(out, a)
	maps.Copy(out, b)
	return out
}

// IsEmpty reports whether the patch changes nothing, in which case the caller writes nothing.
func (p Patch) IsEmpty() bool {
	return len(p.Labels) == 0 && len(p.Annotations) == 0 && len(p.RemoveLabels) == 0 && len(p.RemoveAnnotations) == 0
}

// ApplyTo makes the patch's changes on obj, in place, and reports whether anything changed. Take the
// merge-patch base (a deep copy) before calling it.
func (p Patch) ApplyTo(obj *metav1.ObjectMeta) bool {
	changed := false
	for _, k := range p.RemoveLabels {
		if _, ok := obj.Labels[k]; ok {
			delete(obj.Labels, k)
			changed = true
		}
	}
	for _, k := range p.RemoveAnnotations {
		if _, ok := obj.Annotations[k]; ok {
			delete(obj.Annotations, k)
			changed = true
		}
	}
	for k, v := range p.Labels {
		if cur, ok := obj.Labels[k]; !ok || cur != v {
			metav1.SetMetaDataLabel(obj, k, v)
			changed = true
		}
	}
	for k, v := range p.Annotations {
		if cur, ok := obj.Annotations[k]; !ok || cur != v {
			metav1.SetMetaDataAnnotation(obj, k, v)
			changed = true
		}
	}
	return changed
}
