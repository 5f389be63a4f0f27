package podstate

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/kubervisor/kubervisor/api/v1alpha1"
)

// ManualRequest is a manual request on a pod (SPEC §10): written by `kubectl kubervisor eject|restore`
// (Request), read and answered by the controller (RequestOf, Answer).
type ManualRequest struct {
	// Action is v1alpha1.RequestEject or v1alpha1.RequestRestore (kubervisor/request).
	Action string
	// By is who asked (kubervisor/request-by), as a SelfSubjectReview names them.
	By string
	// At is when the request was made (kubervisor/request-at), as written: it identifies the request in
	// the outcome (Answer, OutcomeOf), and is never parsed.
	At string
	// Reason is why (kubervisor/request-reason), "" for none.
	Reason string
	// For is how long an eject holds the pod out (kubervisor/request-for, a Go duration); 0: until restored.
	For time.Duration
	// Force lets an eject break the floor (kubervisor/request-force "true").
	Force bool
}

// HasRequest reports whether the pod carries a manual request (the kubervisor/request annotation).
func HasRequest(pod *corev1.Pod) bool {
	_, ok := pod.Annotations[v1alpha1.AnnotationRequest]
	return ok
}

// RequestOf reads the pod's manual request; ok is false when it carries none (no kubervisor/request). The
// other keys are read all the same, so that a request-at left without its request still shows. err says
// what makes the request unusable (an action neither eject nor restore, no request-by, a request-for of an
// eject that is not a duration more than zero), every problem at once; rq then holds what could be read.
func RequestOf(pod *corev1.Pod) (ManualRequest, bool, error) {
	a := pod.Annotations
	action, ok := a[v1alpha1.AnnotationRequest]
	rq := ManualRequest{Action: action, By: a[v1alpha1.AnnotationRequestBy], At: a[v1alpha1.AnnotationRequestAt],
		Reason: a[v1alpha1.AnnotationRequestReason], Force: a[v1alpha1.AnnotationRequestForce] == "true"}
	if !ok {
		return rq, false, nil
	}
	var errs []string
	if action != v1alpha1.RequestEject && action != v1alpha1.RequestRestore {
		errs = append(errs, fmt.Sprintf("%s is %q, not %s or %s", v1alpha1.AnnotationRequest, action, v1alpha1.RequestEject,
			v1alpha1.RequestRestore))
	}
	if rq.By == "" {
		errs = append(errs, v1alpha1.AnnotationRequestBy+" is missing: a request names who asked")
	}
	if v, ok := a[v1alpha1.AnnotationRequestFor]; ok && action == v1alpha1.RequestEject {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			errs = append(errs, fmt.Sprintf("%s %q is not a duration more than zero", v1alpha1.AnnotationRequestFor, v))
		}
		rq.For = d
	}
	if len(errs) > 0 {
		return rq, true, errors.New(strings.Join(errs, "; "))
	}
	return rq, true, nil
}

// Request writes rq on a pod: every key of v1alpha1.RequestAnnotations, set or removed, so that no key of an
// older request survives (the --for of an earlier eject under a restore, say). Reason, For and Force are
// written only when set; request-for as time.Duration.String. The outcome of an older request is kept.
func Request(rq ManualRequest) Patch {
	set := map[string]string{v1alpha1.AnnotationRequest: rq.Action, v1alpha1.AnnotationRequestBy: rq.By,
		v1alpha1.AnnotationRequestAt: rq.At}
	if rq.Reason != "" {
		set[v1alpha1.AnnotationRequestReason] = rq.Reason
	}
	if rq.For > 0 {
		set[v1alpha1.AnnotationRequestFor] = rq.For.String()
	}
	if rq.Force {
		set[v1alpha1.AnnotationRequestForce] = "true"
	}
	p := Patch{Annotations: set}
	for _, k := range v1alpha1.RequestAnnotations {
		if _, ok := set[k]; !ok {
			p.RemoveAnnotations = append(p.RemoveAnnotations, k)
		}
	}
	return p
}

// Answer closes a manual request: its keys are removed and the outcome recorded as "<request-at> <outcome>".
func Answer(requestAt, outcome string) Patch {
	return Patch{Annotations: map[string]string{v1alpha1.AnnotationRequestOutcome: requestAt + " " + outcome},
		RemoveAnnotations: slices.Clone(v1alpha1.RequestAnnotations)}
}

// Done answers the request made at requestAt as carried out: what was done.
func Done(requestAt, what string) Patch { return Answer(requestAt, v1alpha1.OutcomeDonePrefix+what) }

// Refused answers the request made at requestAt as refused, and why.
func Refused(requestAt, why string) Patch {
	return Answer(requestAt, v1alpha1.OutcomeRefusedPrefix+why)
}

// OutcomeOf returns the controller's answer to the request made at requestAt ("Done: …", "Refused: …",
// as Answer wrote it, without its request-at); ok is false while the pod carries no answer to that request.
func OutcomeOf(pod *corev1.Pod, requestAt string) (outcome string, ok bool) {
	return strings.CutPrefix(pod.Annotations[v1alpha1.AnnotationRequestOutcome], requestAt+" ")
}

// MergePatch is p as a JSON merge patch that does not depend on what the pod holds: every key p removes is
// null, every key it sets has its value (a key both removed and set is set). Sent without a
// resourceVersion, it applies whatever else changed on the pod meanwhile, and a key p removes is gone
// even when the pod gained it after it was read. Patch.ApplyTo instead computes a patch from a read pod.
func (p Patch) MergePatch() ([]byte, error) {
	meta := map[string]any{}
	if m := nulled(p.Labels, p.RemoveLabels); m != nil {
		meta["labels"] = m
	}
	if m := nulled(p.Annotations, p.RemoveAnnotations); m != nil {
		meta["annotations"] = m
	}
	return json.Marshal(map[string]any{"metadata": meta})
}

// nulled is set with every key of remove it does not set as nil (JSON null); nil when both are empty.
func nulled(set map[string]string, remove []string) map[string]any {
	if len(set)+len(remove) == 0 {
		return nil
	}
	out := make(map[string]any, len(set)+len(remove))
	for _, k := range remove {
		out[k] = nil
	}
	for k, v := range set {
		out[k] = v
	}
	return out
}
