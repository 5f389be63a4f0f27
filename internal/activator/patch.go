package activator

import (
	"maps"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubervisor/kubervisor/api/v1alpha1"
)

// Patch is the labels and annotations to set on a pod, for a merge patch. It never removes a key.
type Patch struct {
	// Labels to set, nil when none.
	Labels map[string]string
	// Annotations to set, nil when none.
	Annotations map[string]string
}

// PatchFor returns the changes that carry out d on the pod whose state is given, now being the time of
// the write:
//
//   - Restore: kubervisor/traffic=yes and kubervisor/restored-at=now. The retry count is kept: it drives
//     the back-off of the next ejection. Break-at and strategy are kept too, for the record.
//   - Pause: kubervisor/traffic=pause.
//   - Kill, Wait and None: no label; the caller evicts for Kill and requeues for Wait.
//
// Every action also carries state.Repair, so that defaulted annotations are persisted whatever happens
// next (for Kill, patch before evicting: an eviction refused by a PodDisruptionBudget is retried later).
func PatchFor(state PodState, d Decision, now time.Time) Patch {
	var p Patch
	if len(state.Repair) > 0 {
		p.Annotations = maps.Clone(state.Repair)
	}
	switch d.Action {
	case ActionRestore:
		p.Labels = map[string]string{v1alpha1.LabelTraffic: v1alpha1.TrafficYes}
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		p.Annotations[v1alpha1.AnnotationRestoredAt] = FormatTime(now)
	case ActionPause:
		p.Labels = map[string]string{v1alpha1.LabelTraffic: v1alpha1.TrafficPause}
	}
	return p
}

// IsEmpty reports whether the patch changes nothing, in which case the caller writes nothing.
func (p Patch) IsEmpty() bool {
	return len(p.Labels) == 0 && len(p.Annotations) == 0
}

// ApplyTo sets the patch's labels and annotations on obj, in place, and reports whether anything changed.
// Take the merge-patch base (a deep copy) before calling it.
func (p Patch) ApplyTo(obj metav1.Object) bool {
	labels, labelsChanged := merge(obj.GetLabels(), p.Labels)
	if labelsChanged {
		obj.SetLabels(labels)
	}
	annotations, annotationsChanged := merge(obj.GetAnnotations(), p.Annotations)
	if annotationsChanged {
		obj.SetAnnotations(annotations)
	}
	return labelsChanged || annotationsChanged
}

// merge sets src's entries in dst, allocating dst if needed, and reports whether any value changed.
func merge(dst, src map[string]string) (map[string]string, bool) {
	changed := false
	for k, v := range src {
		if cur, ok := dst[k]; ok && cur == v {
			continue
		}
		if dst == nil {
			dst = make(map[string]string, len(src))
		}
		dst[k] = v
		changed = true
	}
	return dst, changed
}
