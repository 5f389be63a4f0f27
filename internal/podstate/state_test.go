package podstate_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/podstate"
)

const defaulted = "; treating the pod as just ejected with retry count 1"

// outLabels are the labels the breaker writes on a pod it ejects.
var outLabels = map[string]string{v1alpha1.LabelTraffic: v1alpha1.TrafficNo, v1alpha1.LabelStrategy: "errors"}

// annotations returns break-at and retry-count annotations; "-" leaves one out.
func annotations(breakAt, retryCount string) map[string]string {
	m := map[string]string{}
	if breakAt != "-" {
		m[v1alpha1.AnnotationBreakAt] = breakAt
	}
	if retryCount != "-" {
		m[v1alpha1.AnnotationRetryCount] = retryCount
	}
	return m
}

// repair is the Repair of a pod defaulted at now.
var repair = map[string]string{v1alpha1.AnnotationBreakAt: nowText, v1alpha1.AnnotationRetryCount: "1"}

// justEjected is the state of an ejected pod whose annotations were unusable, with the given problems.
func justEjected(strategy string, problems ...string) podstate.State {
	return podstate.State{
		Traffic: v1alpha1.TrafficNo, Strategy: strategy, BreakAt: now, RetryCount: 1,
		Problems: problems, Repair: repair,
	}
}

func TestParse(t *testing.T) {
	breakAt := time.Date(2026, 3, 14, 15, 9, 21, 500000000, time.UTC)
	cases := map[string]struct {
		labels      map[string]string
		annotations map[string]string
		want        podstate.State
	}{
		"ejected, break-at in RFC3339Nano": {
			labels:      outLabels,
			annotations: annotations("2026-03-14T15:09:21.5Z", "2"),
			want:        podstate.State{Traffic: "no", Strategy: "errors", BreakAt: breakAt, RetryCount: 2},
		},
		"ejected, break-at in RFC3339 without fraction": {
			labels:      outLabels,
			annotations: annotations("2026-03-14T15:09:21Z", "2"),
			want:        podstate.State{Traffic: "no", Strategy: "errors", BreakAt: breakAt.Truncate(time.Second), RetryCount: 2},
		},
		"ejected, break-at with a zone offset": {
			labels:      outLabels,
			annotations: annotations("2026-03-14T17:09:21.5+02:00", "3"),
			want:        podstate.State{Traffic: "no", Strategy: "errors", BreakAt: breakAt, RetryCount: 3},
		},
		"ejected, break-at exactly ClockSkew ahead is trusted": {
			labels:      outLabels,
			annotations: annotations("2026-03-14T15:09:31.535897932Z", "1"),
			want:        podstate.State{Traffic: "no", Strategy: "errors", BreakAt: now.Add(podstate.ClockSkew), RetryCount: 1},
		},
		"ejected, largest int32 retry count is kept": {
			labels:      outLabels,
			annotations: annotations(nowText, "2147483647"),
			want:        podstate.State{Traffic: "no", Strategy: "errors", BreakAt: now, RetryCount: 2147483647},
		},
		"ejected, break-at 1ns beyond ClockSkew": {
			labels:      outLabels,
			annotations: annotations("2026-03-14T15:09:31.535897933Z", "2"),
			want: justEjected("errors",
				`annotation kubervisor/break-at "2026-03-14T15:09:31.535897933Z" is 5.000000001s in the future`+defaulted),
		},
		"ejected, break-at a year ahead": {
			labels:      outLabels,
			annotations: annotations("2027-03-14T15:09:26.535897932Z", "2"),
			want: justEjected("errors",
				`annotation kubervisor/break-at "2027-03-14T15:09:26.535897932Z" is 8760h0m0s in the future`+defaulted),
		},
		"ejected, break-at missing": {
			labels:      outLabels,
			annotations: annotations("-", "2"),
			want:        justEjected("errors", "annotation kubervisor/break-at is missing"+defaulted),
		},
		"ejected, break-at garbage": {
			labels:      outLabels,
			annotations: annotations("yesterday", "2"),
			want:        justEjected("errors", `annotation kubervisor/break-at "yesterday" is not an RFC 3339 time`+defaulted),
		},
		"ejected, break-at empty": {
			labels:      outLabels,
			annotations: annotations("", "2"),
			want:        justEjected("errors", `annotation kubervisor/break-at "" is not an RFC 3339 time`+defaulted),
		},
		"ejected, break-at a date without time": {
			labels:      outLabels,
			annotations: annotations("2026-03-14", "2"),
			want:        justEjected("errors", `annotation kubervisor/break-at "2026-03-14" is not an RFC 3339 time`+defaulted),
		},
		"ejected, break-at a Unix timestamp": {
			labels:      outLabels,
			annotations: annotations("1773500966", "2"),
			want:        justEjected("errors", `annotation kubervisor/break-at "1773500966" is not an RFC 3339 time`+defaulted),
		},
		"ejected, retry-count missing": {
			labels:      outLabels,
			annotations: annotations("2026-03-14T15:09:21.5Z", "-"),
			want:        justEjected("errors", "annotation kubervisor/retry-count is missing"+defaulted),
		},
		"ejected, retry-count abc": {
			labels:      outLabels,
			annotations: annotations("2026-03-14T15:09:21.5Z", "abc"),
			want:        justEjected("errors", `annotation kubervisor/retry-count "abc" is not a number`+defaulted),
		},
		"ejected, retry-count empty": {
			labels:      outLabels,
			annotations: annotations("2026-03-14T15:09:21.5Z", ""),
			want:        justEjected("errors", `annotation kubervisor/retry-count "" is not a number`+defaulted),
		},
		"ejected, retry-count 2.5": {
			labels:      outLabels,
			annotations: annotations("2026-03-14T15:09:21.5Z", "2.5"),
			want:        justEjected("errors", `annotation kubervisor/retry-count "2.5" is not a number`+defaulted),
		},
		"ejected, retry-count 0": {
			labels:      outLabels,
			annotations: annotations("2026-03-14T15:09:21.5Z", "0"),
			want:        justEjected("errors", `annotation kubervisor/retry-count "0" is less than 1`+defaulted),
		},
		"ejected, retry-count -3": {
			labels:      outLabels,
			annotations: annotations("2026-03-14T15:09:21.5Z", "-3"),
			want:        justEjected("errors", `annotation kubervisor/retry-count "-3" is less than 1`+defaulted),
		},
		"ejected, retry-count one past int32": {
			labels:      outLabels,
			annotations: annotations("2026-03-14T15:09:21.5Z", "2147483648"),
			want:        justEjected("errors", `annotation kubervisor/retry-count "2147483648" is out of range`+defaulted),
		},
		"ejected, retry-count huge": {
			labels:      outLabels,
			annotations: annotations("2026-03-14T15:09:21.5Z", "99999999999999999999999"),
			want: justEjected("errors",
				`annotation kubervisor/retry-count "99999999999999999999999" is out of range`+defaulted),
		},
		"ejected, both annotations malformed": {
			labels:      outLabels,
			annotations: annotations("garbage", "abc"),
			want: justEjected("errors",
				`annotation kubervisor/break-at "garbage" is not an RFC 3339 time and annotation kubervisor/retry-count "abc" is not a number`+defaulted),
		},
		"ejected, strategy label missing, annotations fine": {
			labels:      map[string]string{v1alpha1.LabelTraffic: v1alpha1.TrafficNo},
			annotations: annotations("2026-03-14T15:09:21.5Z", "2"),
			want: podstate.State{
				Traffic: "no", BreakAt: breakAt, RetryCount: 2,
				Problems: []string{"label kubervisor/strategy is missing; using defaultActivator"},
			},
		},
		"set to no by hand, no strategy and no annotations": {
			labels: map[string]string{v1alpha1.LabelTraffic: v1alpha1.TrafficNo},
			want: justEjected("",
				"label kubervisor/strategy is missing; using defaultActivator",
				"annotation kubervisor/break-at is missing and annotation kubervisor/retry-count is missing"+defaulted),
		},
		"in traffic, keeps the annotations of its last ejection": {
			labels:      map[string]string{v1alpha1.LabelTraffic: v1alpha1.TrafficYes, v1alpha1.LabelStrategy: "errors"},
			annotations: annotations("2026-03-14T15:09:21.5Z", "2"),
			want:        podstate.State{Traffic: "yes", Strategy: "errors", BreakAt: breakAt, RetryCount: 2},
		},
		"in traffic, garbage annotations are neither defaulted nor reported": {
			labels:      map[string]string{v1alpha1.LabelTraffic: v1alpha1.TrafficYes},
			annotations: annotations("garbage", "abc"),
			want:        podstate.State{Traffic: "yes"},
		},
		"in traffic, never ejected": {
			labels: map[string]string{v1alpha1.LabelTraffic: v1alpha1.TrafficYes},
			want:   podstate.State{Traffic: "yes"},
		},
		"paused without annotations is not reported": {
			labels: map[string]string{v1alpha1.LabelTraffic: v1alpha1.TrafficPause},
			want:   podstate.State{Traffic: "pause"},
		},
		"traffic label missing": {
			labels:      map[string]string{v1alpha1.LabelStrategy: "errors"},
			annotations: annotations("2026-03-14T15:09:21.5Z", "2"),
			want:        podstate.State{Strategy: "errors", BreakAt: breakAt, RetryCount: 2},
		},
		"nil maps": {
			want: podstate.State{},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := podstate.Parse(tc.labels, tc.annotations, now)
			if diff := cmp.Diff(tc.want, got, ignoreFields); diff != "" {
				t.Errorf("Parse() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFormatTime(t *testing.T) {
	cases := map[string]struct {
		in   time.Time
		want string
	}{
		"nanoseconds kept":             {in: now, want: nowText},
		"zone converted to UTC":        {in: time.Date(2026, 3, 14, 17, 9, 26, 500000000, time.FixedZone("CEST", 2*3600)), want: "2026-03-14T15:09:26.5Z"},
		"whole second has no fraction": {in: now.Truncate(time.Second), want: "2026-03-14T15:09:26Z"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := podstate.FormatTime(tc.in)
			if got != tc.want {
				t.Errorf("FormatTime() = %q, want %q", got, tc.want)
			}
			back := podstate.Parse(outLabels, annotations(got, "1"), now)
			if !back.BreakAt.Equal(tc.in) || back.Problems != nil {
				t.Errorf("ParsePodState(FormatTime()) = %v, problems %q; want %v without problems", back.BreakAt, back.Problems, tc.in)
			}
		})
	}
}

// ignoreFields leaves the Field of each annotation to TestParseFields, so that the table above states what
// the schedule depends on.
var ignoreFields = cmpopts.IgnoreFields(podstate.State{}, "BreakAtField", "RetryCountField")

func TestParseFields(t *testing.T) {
	cases := map[string]struct {
		labels      map[string]string
		annotations map[string]string
		breakAt     podstate.Field
		retryCount  podstate.Field
		owner       string
		restoredAt  time.Time
	}{
		"both missing": {annotations: annotations("-", "-"), breakAt: podstate.FieldMissing, retryCount: podstate.FieldMissing},
		"both valid":   {annotations: annotations(nowText, "2"), breakAt: podstate.FieldValid, retryCount: podstate.FieldValid},
		"both invalid": {annotations: annotations("yesterday", "0"), breakAt: podstate.FieldInvalid, retryCount: podstate.FieldInvalid},
		"invalid on an ejected pod too": {
			labels: outLabels, annotations: annotations(nowText, "x"), breakAt: podstate.FieldValid, retryCount: podstate.FieldInvalid,
		},
		"owner and restored-at": {
			labels:      map[string]string{v1alpha1.LabelName: "kvs", v1alpha1.LabelTraffic: v1alpha1.TrafficYes},
			annotations: map[string]string{v1alpha1.AnnotationRestoredAt: "2026-03-14T15:09:21.5Z"},
			breakAt:     podstate.FieldMissing, retryCount: podstate.FieldMissing,
			owner: "kvs", restoredAt: time.Date(2026, 3, 14, 15, 9, 21, 500000000, time.UTC),
		},
		"malformed restored-at reads as zero": {
			annotations: map[string]string{v1alpha1.AnnotationRestoredAt: "soon"},
			breakAt:     podstate.FieldMissing, retryCount: podstate.FieldMissing,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := podstate.Parse(tc.labels, tc.annotations, now)
			if got.BreakAtField != tc.breakAt || got.RetryCountField != tc.retryCount {
				t.Errorf("fields = (%d, %d), want (%d, %d)", got.BreakAtField, got.RetryCountField, tc.breakAt, tc.retryCount)
			}
			if got.Owner != tc.owner || !got.RestoredAt.Equal(tc.restoredAt) {
				t.Errorf("owner %q restored-at %v, want %q %v", got.Owner, got.RestoredAt, tc.owner, tc.restoredAt)
			}
		})
	}
}
