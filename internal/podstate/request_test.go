package podstate_test

import (
	"maps"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/podstate"
)

// requestPod is a pod carrying the annotations of a request by alice at nowText, with extra on top and
// without the keys in drop.
func requestPod(action string, extra map[string]string, drop ...string) *corev1.Pod {
	a := map[string]string{kvv1.AnnotationRequest: action, kvv1.AnnotationRequestBy: "alice", kvv1.AnnotationRequestAt: nowText,
		"example.com/owner": "team"}
	maps.Copy(a, extra)
	for _, k := range drop {
		delete(a, k)
	}
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Annotations: a}}
}

func TestRequestOf(t *testing.T) {
	cases := map[string]struct {
		pod     *corev1.Pod
		want    podstate.ManualRequest
		wantOK  bool
		wantErr string
	}{
		"no request": {
			pod: &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{kvv1.AnnotationBreakAt: nowText}}},
		},
		"no annotations at all": {pod: &corev1.Pod{}},
		"a request-at without its request: not a request, the keys read all the same": {
			pod:  requestPod("", map[string]string{kvv1.AnnotationRequestBy: "bob"}, kvv1.AnnotationRequest),
			want: podstate.ManualRequest{By: "bob", At: nowText},
		},
		"a plain eject": {
			pod:    requestPod(kvv1.RequestEject, nil),
			want:   podstate.ManualRequest{Action: kvv1.RequestEject, By: "alice", At: nowText},
			wantOK: true,
		},
		"an eject with every key": {
			pod: requestPod(kvv1.RequestEject, map[string]string{kvv1.AnnotationRequestReason: "bad node",
				kvv1.AnnotationRequestFor: "1h30m", kvv1.AnnotationRequestForce: "true"}),
			want: podstate.ManualRequest{Action: kvv1.RequestEject, By: "alice", At: nowText, Reason: "bad node",
				For: 90 * time.Minute, Force: true},
			wantOK: true,
		},
		"force is only the word true": {
			pod:    requestPod(kvv1.RequestEject, map[string]string{kvv1.AnnotationRequestForce: "yes"}),
			want:   podstate.ManualRequest{Action: kvv1.RequestEject, By: "alice", At: nowText},
			wantOK: true,
		},
		"a restore ignores request-for, even a bad one": {
			pod:    requestPod(kvv1.RequestRestore, map[string]string{kvv1.AnnotationRequestFor: "soon"}),
			want:   podstate.ManualRequest{Action: kvv1.RequestRestore, By: "alice", At: nowText},
			wantOK: true,
		},
		"request-at is kept as written, never parsed": {
			pod:    requestPod(kvv1.RequestRestore, map[string]string{kvv1.AnnotationRequestAt: "yesterday"}),
			want:   podstate.ManualRequest{Action: kvv1.RequestRestore, By: "alice", At: "yesterday"},
			wantOK: true,
		},
		"request-by missing": {
			pod:     requestPod(kvv1.RequestEject, nil, kvv1.AnnotationRequestBy),
			want:    podstate.ManualRequest{Action: kvv1.RequestEject, At: nowText},
			wantOK:  true,
			wantErr: "kubervisor/request-by is missing: a request names who asked",
		},
		"request-for not a duration": {
			pod:     requestPod(kvv1.RequestEject, map[string]string{kvv1.AnnotationRequestFor: "1d"}),
			want:    podstate.ManualRequest{Action: kvv1.RequestEject, By: "alice", At: nowText},
			wantOK:  true,
			wantErr: `kubervisor/request-for "1d" is not a duration more than zero`,
		},
		"request-for negative": {
			pod:     requestPod(kvv1.RequestEject, map[string]string{kvv1.AnnotationRequestFor: "-5m"}),
			want:    podstate.ManualRequest{Action: kvv1.RequestEject, By: "alice", At: nowText, For: -5 * time.Minute},
			wantOK:  true,
			wantErr: `kubervisor/request-for "-5m" is not a duration more than zero`,
		},
		"unknown action and no author: both said": {
			pod:    requestPod("kill", nil, kvv1.AnnotationRequestBy),
			want:   podstate.ManualRequest{Action: "kill", At: nowText},
			wantOK: true,
			wantErr: `kubervisor/request is "kill", not eject or restore; ` +
				"kubervisor/request-by is missing: a request names who asked",
		},
		"an empty action is unknown": {
			pod:     requestPod("", nil),
			want:    podstate.ManualRequest{By: "alice", At: nowText},
			wantOK:  true,
			wantErr: `kubervisor/request is "", not eject or restore`,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, ok, err := podstate.RequestOf(tc.pod)
			if ok != tc.wantOK {
				t.Errorf("ok = %t, want %t", ok, tc.wantOK)
			}
			if ok != podstate.HasRequest(tc.pod) {
				t.Errorf("HasRequest = %t, RequestOf ok = %t", podstate.HasRequest(tc.pod), ok)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("request mismatch (-want +got):\n%s", diff)
			}
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("err = %v, want none", err)
			case tc.wantErr != "" && (err == nil || err.Error() != tc.wantErr):
				t.Errorf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestRequest(t *testing.T) {
	cases := map[string]struct {
		rq   podstate.ManualRequest
		want podstate.Patch
	}{
		"a bare request clears the optional keys": {
			rq: podstate.ManualRequest{Action: kvv1.RequestRestore, By: "alice", At: nowText},
			want: podstate.Patch{
				Annotations: map[string]string{kvv1.AnnotationRequest: kvv1.RequestRestore, kvv1.AnnotationRequestBy: "alice",
					kvv1.AnnotationRequestAt: nowText},
				RemoveAnnotations: []string{kvv1.AnnotationRequestReason, kvv1.AnnotationRequestFor, kvv1.AnnotationRequestForce},
			},
		},
		"every key": {
			rq: podstate.ManualRequest{Action: kvv1.RequestEject, By: "alice", At: nowText, Reason: "bad node", For: 90 * time.Minute,
				Force: true},
			want: podstate.Patch{Annotations: map[string]string{kvv1.AnnotationRequest: kvv1.RequestEject, kvv1.AnnotationRequestBy: "alice",
				kvv1.AnnotationRequestAt: nowText, kvv1.AnnotationRequestReason: "bad node", kvv1.AnnotationRequestFor: "1h30m0s",
				kvv1.AnnotationRequestForce: "true"}},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := podstate.Request(tc.rq)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Fatalf("Request mismatch (-want +got):\n%s", diff)
			}
			// What Request writes, RequestOf reads back, over an older request with every key.
			pod := requestPod(kvv1.RequestEject, map[string]string{kvv1.AnnotationRequestBy: "bob", kvv1.AnnotationRequestReason: "slow",
				kvv1.AnnotationRequestFor: "1h", kvv1.AnnotationRequestForce: "true", kvv1.AnnotationRequestOutcome: "older Done: x"})
			got.ApplyTo(&pod.ObjectMeta)
			back, ok, err := podstate.RequestOf(pod)
			if !ok || err != nil {
				t.Fatalf("RequestOf = %t, %v", ok, err)
			}
			if diff := cmp.Diff(tc.rq, back); diff != "" {
				t.Errorf("round trip mismatch (-written +read):\n%s", diff)
			}
			if pod.Annotations[kvv1.AnnotationRequestOutcome] != "older Done: x" || pod.Annotations["example.com/owner"] != "team" {
				t.Errorf("a request changed other annotations: %v", pod.Annotations)
			}
		})
	}
}

func TestAnswerAndOutcomeOf(t *testing.T) {
	pod := requestPod(kvv1.RequestEject, map[string]string{kvv1.AnnotationRequestReason: "slow", kvv1.AnnotationRequestFor: "1h"})
	if _, ok := podstate.OutcomeOf(pod, nowText); ok {
		t.Fatal("OutcomeOf found an answer on a pod without one")
	}
	podstate.Answer(nowText, "Done: out of traffic").ApplyTo(&pod.ObjectMeta)
	if podstate.HasRequest(pod) {
		t.Errorf("an answered request is still pending: %v", pod.Annotations)
	}
	if got, ok := podstate.OutcomeOf(pod, nowText); !ok || got != "Done: out of traffic" {
		t.Errorf("OutcomeOf = %q, %t; want the answer", got, ok)
	}
	if got, ok := podstate.OutcomeOf(pod, "2026-03-14T15:00:00Z"); ok {
		t.Errorf("OutcomeOf another request = %q, want none", got)
	}
	want := map[string]string{"example.com/owner": "team", kvv1.AnnotationRequestOutcome: nowText + " Done: out of traffic"}
	if diff := cmp.Diff(want, pod.Annotations); diff != "" {
		t.Errorf("annotations after Answer (-want +got):\n%s", diff)
	}
}

func TestMergePatch(t *testing.T) {
	cases := map[string]struct {
		patch podstate.Patch
		want  string
	}{
		"empty": {want: `{"metadata":{}}`},
		"removals are null, a key both removed and set is set": {
			patch: podstate.Patch{Labels: map[string]string{kvv1.LabelTraffic: kvv1.TrafficYes}, RemoveLabels: []string{kvv1.LabelName},
				Annotations: map[string]string{"a": "1"}, RemoveAnnotations: []string{"a", "b"}},
			want: `{"metadata":{"annotations":{"a":"1","b":null},"labels":{"kubervisor/name":null,"kubervisor/traffic":"yes"}}}`,
		},
		"annotations only": {
			patch: podstate.Request(podstate.ManualRequest{Action: kvv1.RequestEject, By: "alice", At: nowText}),
			want: `{"metadata":{"annotations":{"kubervisor/request":"eject","kubervisor/request-at":"` + nowText + `",` +
				`"kubervisor/request-by":"alice","kubervisor/request-for":null,"kubervisor/request-force":null,` +
				`"kubervisor/request-reason":null}}}`,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := tc.patch.MergePatch()
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("MergePatch = %s\nwant          %s", got, tc.want)
			}
		})
	}
}
