package podstate

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kubervisor/kubervisor/api/v1alpha1"
)

// ClockSkew is how far in the future a break-at annotation may lie and still be trusted. Break-at is
// written by whichever replica held the lease, so a little disagreement between clocks is expected; a time
// further ahead was not written by Kubervisor and would keep the pod out of traffic for as long.
const ClockSkew = 5 * time.Second

// defaultedSuffix ends the problem reported when the break-at or retry-count annotation is unusable.
const defaultedSuffix = "; treating the pod as just ejected with retry count 1"

// State is Kubervisor's state of one pod, read from its labels and annotations.
type State struct {
	// Owner is the kubervisor/name label (the supervising KubervisorService), "" when missing.
	Owner string
	// Traffic is the kubervisor/traffic label, "" when missing.
	Traffic string
	// Strategy is the kubervisor/strategy label (the breaker that ejected the pod), "" when missing. Pass it
	// to KubervisorServiceSpec.ActivatorFor, which falls back to defaultActivator for "" or an unknown name.
	Strategy string
	// BreakAt is the time of the last ejection (kubervisor/break-at).
	BreakAt time.Time
	// RetryCount is the number of ejections so far (kubervisor/retry-count).
	RetryCount int32
	// RestoredAt is when the activator last put the pod back in traffic (kubervisor/restored-at); zero when
	// missing or malformed.
	RestoredAt time.Time
	// UID is the pod's UID (Of only): it seeds the activator's jitter.
	UID types.UID
	// Activator is the fingerprint of the activator in force at the last ejection (kubervisor/activator),
	// "" when missing (a pod ejected by an older version, until the next pass records it: RecordActivator).
	Activator string
	// Manual is set when the pod was ejected by hand (kubervisor/strategy is v1alpha1.ManualStrategy).
	Manual *ManualHold
	// Problems are human-readable descriptions of missing or malformed labels and annotations on a pod out
	// of traffic, each saying what the activator does instead; one event each. Empty when all is well.
	Problems []string
	// BreakAtField and RetryCountField say whether each annotation is missing, usable or unusable, whatever
	// the traffic label (a display shows "invalid" for an unusable one).
	BreakAtField, RetryCountField Field
	// Repair holds the annotations to merge-patch onto the pod so that the next Parse reads the
	// defaulted state back instead of defaulting again (with a later now) on every reconcile. Nil when
	// nothing needs repairing. Every constructor of a write on an ejected pod includes it.
	Repair map[string]string
}

// ManualHold is what a pod ejected by hand says about it.
type ManualHold struct {
	// By and Reason are who ejected the pod and why.
	By, Reason string
	// Until is when it comes back by itself; zero: when restored by hand (also when the annotation is
	// unusable, which Parse reports in Problems).
	Until time.Time
}

// Field says what became of one annotation when it was parsed.
type Field int8

const (
	// FieldMissing is an annotation the pod does not carry.
	FieldMissing Field = iota
	// FieldValid is an annotation whose value was used.
	FieldValid
	// FieldInvalid is an annotation whose value could not be used.
	FieldInvalid
)

func fieldOf(annotations map[string]string, key, issue string) Field {
	switch _, ok := annotations[key]; {
	case !ok:
		return FieldMissing
	case issue != "":
		return FieldInvalid
	default:
		return FieldValid
	}
}

// Parse reads a pod's Kubervisor state from its labels and annotations. Either map may be nil. It is the
// only reader of the pod contract's annotations.
//
// For a pod out of traffic (kubervisor/traffic=no) it never fails: when break-at is missing, is not an
// RFC 3339 time or lies more than ClockSkew after now, or when retry-count is missing, is not an int32 or
// is less than 1, the pod is treated as just ejected (BreakAt = now) with retry count 1, the problem is
// described in Problems, and Repair holds both annotations. A missing strategy label is reported too;
// defaultActivator then applies and nothing is repaired (there is no breaker name to write).
//
// For any other pod the annotations are read on a best-effort basis (zero values when missing or
// malformed) and no problem is reported: the activator does not act on such pods, and a pod back in
// traffic legitimately keeps the annotations of its last ejection, or has none at all.
func Parse(labels, annotations map[string]string, now time.Time) State {
	s := State{
		Owner: labels[v1alpha1.LabelName], Traffic: labels[v1alpha1.LabelTraffic], Strategy: labels[v1alpha1.LabelStrategy],
		RestoredAt: parseRestoredAt(annotations), Activator: annotations[v1alpha1.AnnotationActivator],
	}
	if s.Strategy == v1alpha1.ManualStrategy {
		s.Manual = &ManualHold{By: annotations[v1alpha1.AnnotationManualBy], Reason: annotations[v1alpha1.AnnotationManualReason]}
		if v, ok := annotations[v1alpha1.AnnotationManualUntil]; ok {
			if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
				s.Manual.Until = t
			}
		}
	}
	breakAt, breakAtIssue := parseBreakAt(annotations, now)
	count, countIssue := parseRetryCount(annotations)
	s.BreakAtField = fieldOf(annotations, v1alpha1.AnnotationBreakAt, breakAtIssue)
	s.RetryCountField = fieldOf(annotations, v1alpha1.AnnotationRetryCount, countIssue)
	if breakAtIssue == "" {
		s.BreakAt = breakAt
	}
	if countIssue == "" {
		s.RetryCount = count
	}
	if s.Traffic != v1alpha1.TrafficNo {
		return s
	}
	if s.Strategy == "" {
		s.Problems = append(s.Problems, fmt.Sprintf("label %s is missing; using defaultActivator", v1alpha1.LabelStrategy))
	}
	var issues []string
	for _, issue := range []string{breakAtIssue, countIssue} {
		if issue != "" {
			issues = append(issues, issue)
		}
	}
	if len(issues) == 0 {
		return s
	}
	// NOTE: the breaker writes both annotations together (SPEC §5 step 4). When either is unusable the pair
	// cannot be trusted (a pod set to "no" by hand may keep a retry count from an ejection long ago), so
	// both are reset to a clean first ejection: the pod comes back after one period instead of being
	// killed, paused or kept out on the strength of a value nobody can vouch for.
	s.BreakAt = now.UTC()
	s.RetryCount = 1
	s.Problems = append(s.Problems, strings.Join(issues, " and ")+defaultedSuffix)
	s.Repair = map[string]string{
		v1alpha1.AnnotationBreakAt:    FormatTime(s.BreakAt),
		v1alpha1.AnnotationRetryCount: "1",
	}
	return s
}

// Of reads the state of a pod; see Parse.
func Of(pod *corev1.Pod, now time.Time) State {
	s := Parse(pod.Labels, pod.Annotations, now)
	s.UID = pod.UID
	return s
}

// TrafficOf is Of(pod, now).Traffic without parsing the annotations, for the hot paths that read only the
// traffic label (every pod of every pass).
func TrafficOf(pod *corev1.Pod) string { return pod.Labels[v1alpha1.LabelTraffic] }

// IsPaused reports whether the pod is paused (kubervisor/traffic=pause): out of traffic for good, for
// investigation.
func IsPaused(pod *corev1.Pod) bool { return TrafficOf(pod) == v1alpha1.TrafficPause }

// CountPaused counts the paused pods (IsPaused) in scope, what the activator weighs against maxPauseCount:
// those a breaker paused (kubervisor/strategy) when scope names it, every one when scope is ""
// (ResolvedActivator.PauseScope).
func CountPaused(pods []corev1.Pod, scope string) int32 {
	var n int32
	for i := range pods {
		if IsPaused(&pods[i]) && (scope == "" || StrategyOf(&pods[i]) == scope) {
			n++
		}
	}
	return n
}

// BreakAtOf is the pod's kubervisor/break-at as written (zero when missing or malformed), without the
// checks and defaults of Parse: an order among pods out of traffic, not a schedule.
func BreakAtOf(pod *corev1.Pod) time.Time {
	t, err := time.Parse(time.RFC3339Nano, pod.Annotations[v1alpha1.AnnotationBreakAt])
	if err != nil {
		return time.Time{}
	}
	return t.UTC()
}

// OwnerOf is Of(pod, now).Owner without parsing the annotations: the KubervisorService named by the
// kubervisor/name label, "" for none.
func OwnerOf(pod *corev1.Pod) string { return pod.Labels[v1alpha1.LabelName] }

// OwnerLabel is the kubervisor/name label of a pod's labels, and whether the pod carries it at all: a pod
// labelled with an empty name counts as labelled (the pod index and the conflict check), while OwnerOf
// and Parse read it as no owner.
func OwnerLabel(labels map[string]string) (name string, ok bool) {
	name, ok = labels[v1alpha1.LabelName]
	return name, ok
}

// StrategyOf is Of(pod, now).Strategy without parsing the annotations: the kubervisor/strategy label (the
// breaker that last ejected the pod, v1alpha1.ManualStrategy for a person), "" when missing.
func StrategyOf(pod *corev1.Pod) string { return pod.Labels[v1alpha1.LabelStrategy] }

// FormatTime formats t the way Kubervisor writes times on pods: RFC 3339 in UTC with sub-second
// precision (time.RFC3339Nano, which drops trailing zeros).
func FormatTime(t time.Time) string {
	return t.UTC().Format(time.RFC3339Nano)
}

// parseBreakAt returns the break-at annotation, or a description of what is wrong with it.
func parseBreakAt(annotations map[string]string, now time.Time) (time.Time, string) {
	v, ok := annotations[v1alpha1.AnnotationBreakAt]
	if !ok {
		return time.Time{}, fmt.Sprintf("annotation %s is missing", v1alpha1.AnnotationBreakAt)
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		// RFC3339Nano already accepts a time without fractional seconds; RFC3339 is tried for completeness.
		if t, err = time.Parse(time.RFC3339, v); err != nil {
			return time.Time{}, fmt.Sprintf("annotation %s %q is not an RFC 3339 time", v1alpha1.AnnotationBreakAt, v)
		}
	}
	if ahead := t.Sub(now); ahead > ClockSkew {
		return time.Time{}, fmt.Sprintf("annotation %s %q is %s in the future", v1alpha1.AnnotationBreakAt, v, ahead)
	}
	return t.UTC(), ""
}

// parseRestoredAt returns the restored-at annotation, zero when missing or malformed: it only informs.
func parseRestoredAt(annotations map[string]string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, annotations[v1alpha1.AnnotationRestoredAt])
	if err != nil {
		return time.Time{}
	}
	return t.UTC()
}

// parseRetryCount returns the retry-count annotation, or a description of what is wrong with it.
func parseRetryCount(annotations map[string]string) (int32, string) {
	v, ok := annotations[v1alpha1.AnnotationRetryCount]
	if !ok {
		return 0, fmt.Sprintf("annotation %s is missing", v1alpha1.AnnotationRetryCount)
	}
	n, err := strconv.ParseInt(v, 10, 32)
	switch {
	case errors.Is(err, strconv.ErrRange):
		return 0, fmt.Sprintf("annotation %s %q is out of range", v1alpha1.AnnotationRetryCount, v)
	case err != nil:
		return 0, fmt.Sprintf("annotation %s %q is not a number", v1alpha1.AnnotationRetryCount, v)
	case n < 1:
		return 0, fmt.Sprintf("annotation %s %q is less than 1", v1alpha1.AnnotationRetryCount, v)
	}
	return int32(n), ""
}
