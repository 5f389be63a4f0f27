package plugin_test

import (
	"context"
	"errors"
	"maps"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/plugin"
	"github.com/kubervisor/kubervisor/internal/podstate"
)

// requestAt is the instant every request is made at, with nanoseconds to show they are kept.
var requestAt = now.Add(123456789 * time.Nanosecond)

const (
	// at is requestAt as the plugin writes it in kubervisor/request-at.
	at = "2026-03-01T12:00:00.123456789Z"
	// olderAt is the request-at of a request made before.
	olderAt = "2026-03-01T11:50:00.5Z"
)

// controller plays the controller's part after the plugin's request: it changes the pod's annotations on the
// server the way the controller would.
type controller func(annotations map[string]string)

// answers is a controller that carries out the request with the given outcome ("Done: …", "Refused: …"):
// the outcome carries the request's request-at, and the request's keys are removed.
func answers(outcome string) controller {
	return func(a map[string]string) {
		a[kvv1.AnnotationRequestOutcome] = a[kvv1.AnnotationRequestAt] + " " + outcome
		for _, k := range kvv1.RequestAnnotations {
			delete(a, k)
		}
	}
}

// supersedes is someone else writing a newer request before the controller answered.
func supersedes(a map[string]string) {
	a[kvv1.AnnotationRequestBy] = "bob"
	a[kvv1.AnnotationRequestAt] = "2026-03-01T12:00:00.4Z"
}

// manualEnv is a plugin whose clock stands at requestAt, whose SelfSubjectReview answers with user (or
// with reviewErr), and whose API server runs ctrl on the pod after the plugin has read it polls times
// since writing its request.
type manualEnv struct {
	*env
	clock *clocktesting.FakeClock
	auth  *fake.Clientset
	// reads counts the plugin's reads of the pod after its request.
	reads int
}

func newManualEnv(t *testing.T, objs []client.Object, user string, reviewErr error, ctrl controller, polls int) *manualEnv {
	t.Helper()
	m := &manualEnv{env: newEnv(t, objs), clock: clocktesting.NewFakeClock(requestAt), auth: fake.NewClientset()}
	m.auth.PrependReactor("create", "selfsubjectreviews", func(k8stesting.Action) (bool, runtime.Object, error) {
		if reviewErr != nil {
			return true, nil, reviewErr
		}
		return true, &authnv1.SelfSubjectReview{Status: authnv1.SelfSubjectReviewStatus{
			UserInfo: authnv1.UserInfo{Username: user, Groups: []string{"system:authenticated"}}}}, nil
	})
	recorded := m.client.(client.WithWatch)
	m.plugin.Client = interceptor.NewClient(recorded, interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if _, isPod := obj.(*corev1.Pod); isPod && len(m.writes) > 0 {
				m.reads++
				if ctrl != nil && m.reads == polls {
					p := &corev1.Pod{}
					if err := m.server.Get(ctx, key, p); err != nil {
						return err
					}
					ctrl(p.Annotations)
					if err := m.server.Update(ctx, p); err != nil {
						return err
					}
				}
			}
			return c.Get(ctx, key, obj, opts...)
		},
	})
	m.plugin.Auth = m.auth.AuthenticationV1()
	m.plugin.Clock = m.clock
	return m
}

// reviews counts the SelfSubjectReviews the plugin created.
func (m *manualEnv) reviews() int {
	n := 0
	for _, a := range m.auth.Actions() {
		if a.Matches("create", "selfsubjectreviews") {
			n++
		}
	}
	return n
}

// supervised is a pod of KubervisorService pricer, in traffic, that came back from an ejection an hour ago,
// with extra annotations.
func supervised(extra map[string]string) *corev1.Pod {
	a := ejection(ago(time.Hour), "1")
	a["example.com/owner"] = "team-pricing"
	maps.Copy(a, extra)
	return pod("shop", "pricer-b", yes, owned(kvv1.TrafficYes, "http-errors"), a)
}

func TestRequest(t *testing.T) {
	const mergePatch = "application/merge-patch+json"
	write := func(body string) []recorded {
		return []recorded{{verb: "patch", kind: "Pod", name: "pricer-b", patchType: mergePatch, patch: body}}
	}
	// bare is the patch of a request by alice without --reason, --for or --force: those keys are null.
	bare := func(action string) []recorded {
		return write(`{"metadata":{"annotations":{"kubervisor/request":"` + action + `","kubervisor/request-at":"` + at + `",` +
			`"kubervisor/request-by":"alice","kubervisor/request-for":null,"kubervisor/request-force":null,` +
			`"kubervisor/request-reason":null}}}`)
	}
	// The annotations of supervised(nil), which a request leaves alone.
	kept := map[string]string{kvv1.AnnotationBreakAt: ago(time.Hour), kvv1.AnnotationRetryCount: "1", "example.com/owner": "team-pricing"}
	with := func(a map[string]string) map[string]string {
		out := maps.Clone(kept)
		maps.Copy(out, a)
		return out
	}
	forbidden := apierrors.NewForbidden(schema.GroupResource{Group: "authentication.k8s.io", Resource: "selfsubjectreviews"}, "",
		errors.New(`User "dave" cannot create resource "selfsubjectreviews" in API group "authentication.k8s.io" at the cluster scope`))
	eject := plugin.ManualRequest{Action: kvv1.RequestEject, Wait: plugin.DefaultWait}
	restore := plugin.ManualRequest{Action: kvv1.RequestRestore, Wait: plugin.DefaultWait}
	type test struct {
		objs      []client.Object
		user      string
		reviewErr error
		ctrl      controller
		polls     int
		req       plugin.ManualRequest
		wantErr   string
		wantOut   string
		// wantWrites are the plugin's writes, wantReviews its SelfSubjectReviews.
		wantWrites  []recorded
		wantReviews int
		// wantAnnotations are pricer-b's annotations on the server afterwards.
		wantAnnotations map[string]string
		// wantWaited is how long the plugin waited (its fake clock's advance).
		wantWaited time.Duration
	}
	tests := map[string]test{
		"eject with every flag: one merge patch of the request's annotations, then Done": {
			objs: []client.Object{supervised(nil)},
			user: "alice", ctrl: answers("Done: ejected by alice for 1h30m0s: bad node"), polls: 3,
			req: plugin.ManualRequest{Action: kvv1.RequestEject, Reason: "bad node", For: "90m", Force: true, Wait: plugin.DefaultWait},
			wantOut: "pod/pricer-b: eject requested by alice (request-at " + at + "); waiting up to 10s for the controller\n" +
				"pod/pricer-b: Done: ejected by alice for 1h30m0s: bad node\n",
			wantWrites: write(`{"metadata":{"annotations":{"kubervisor/request":"eject","kubervisor/request-at":"` + at + `",` +
				`"kubervisor/request-by":"alice","kubervisor/request-for":"1h30m0s","kubervisor/request-force":"true",` +
				`"kubervisor/request-reason":"bad node"}}}`),
			wantReviews:     1,
			wantAnnotations: with(map[string]string{kvv1.AnnotationRequestOutcome: at + " Done: ejected by alice for 1h30m0s: bad node"}),
			wantWaited:      3 * plugin.PollInterval,
		},
		"eject without flags: unset keys are null, nothing else in the patch": {
			objs: []client.Object{supervised(nil)},
			user: "alice", ctrl: answers("Done: ejected by alice until restored"), polls: 1,
			req: eject,
			wantOut: "pod/pricer-b: eject requested by alice (request-at " + at + "); waiting up to 10s for the controller\n" +
				"pod/pricer-b: Done: ejected by alice until restored\n",
			wantWrites:      bare(kvv1.RequestEject),
			wantReviews:     1,
			wantAnnotations: with(map[string]string{kvv1.AnnotationRequestOutcome: at + " Done: ejected by alice until restored"}),
			wantWaited:      plugin.PollInterval,
		},
		"restore clears the keys of a pending eject, and an older outcome is not its answer": {
			objs: []client.Object{supervised(map[string]string{
				kvv1.AnnotationRequest: kvv1.RequestEject, kvv1.AnnotationRequestBy: "bob", kvv1.AnnotationRequestAt: olderAt,
				kvv1.AnnotationRequestReason: "slow", kvv1.AnnotationRequestFor: "1h0m0s", kvv1.AnnotationRequestForce: "true",
				kvv1.AnnotationRequestOutcome: olderAt + " Done: ejected by bob for 1h0m0s: slow",
			})},
			user: "alice", req: plugin.ManualRequest{Action: kvv1.RequestRestore, Reason: "fixed", Wait: time.Second},
			wantErr: "pod/pricer-b: no answer from the controller within 1s (is it running?); the restore request (request-at " + at +
				`) is written and pending: check with "kubectl kubervisor get pricer -n shop" or the pod's kubervisor/request-outcome annotation`,
			wantOut: "pod/pricer-b: replacing the pending eject request of bob (request-at " + olderAt + ")\n" +
				"pod/pricer-b: restore requested by alice (request-at " + at + "); waiting up to 1s for the controller\n",
			wantWrites: write(`{"metadata":{"annotations":{"kubervisor/request":"restore","kubervisor/request-at":"` + at + `",` +
				`"kubervisor/request-by":"alice","kubervisor/request-for":null,"kubervisor/request-force":null,` +
				`"kubervisor/request-reason":"fixed"}}}`),
			wantReviews: 1,
			wantAnnotations: with(map[string]string{
				kvv1.AnnotationRequest: kvv1.RequestRestore, kvv1.AnnotationRequestBy: "alice", kvv1.AnnotationRequestAt: at,
				kvv1.AnnotationRequestReason: "fixed", kvv1.AnnotationRequestOutcome: olderAt + " Done: ejected by bob for 1h0m0s: slow",
			}),
			wantWaited: time.Second,
		},
		"refused: an error with the controller's reason": {
			objs: []client.Object{supervised(nil)},
			user: "alice", ctrl: answers("Refused: the floor keeps 2 of 3 pods in traffic (use --force to eject anyway)"), polls: 2,
			req:         eject,
			wantErr:     "pod/pricer-b: Refused: the floor keeps 2 of 3 pods in traffic (use --force to eject anyway)",
			wantOut:     "pod/pricer-b: eject requested by alice (request-at " + at + "); waiting up to 10s for the controller\n",
			wantWrites:  bare(kvv1.RequestEject),
			wantReviews: 1,
			wantAnnotations: with(map[string]string{
				kvv1.AnnotationRequestOutcome: at + " Refused: the floor keeps 2 of 3 pods in traffic (use --force to eject anyway)"}),
			wantWaited: 2 * plugin.PollInterval,
		},
		"timeout: the request stays written and pending, said how to check": {
			objs: []client.Object{supervised(nil)},
			user: "alice", req: eject,
			wantErr: "pod/pricer-b: no answer from the controller within 10s (is it running?); the eject request (request-at " + at +
				`) is written and pending: check with "kubectl kubervisor get pricer -n shop" or the pod's kubervisor/request-outcome annotation`,
			wantOut:     "pod/pricer-b: eject requested by alice (request-at " + at + "); waiting up to 10s for the controller\n",
			wantWrites:  bare(kvv1.RequestEject),
			wantReviews: 1,
			wantAnnotations: with(map[string]string{kvv1.AnnotationRequest: kvv1.RequestEject, kvv1.AnnotationRequestBy: "alice",
				kvv1.AnnotationRequestAt: at}),
			wantWaited: plugin.DefaultWait,
		},
		"a newer request replaces this one: no longer waited for": {
			objs: []client.Object{supervised(nil)},
			user: "alice", ctrl: supersedes, polls: 2, req: restore,
			wantErr: "pod/pricer-b: waiting for the outcome of the restore request (request-at " + at +
				"): a newer request by bob (request-at 2026-03-01T12:00:00.4Z) replaced this one",
			wantOut:     "pod/pricer-b: restore requested by alice (request-at " + at + "); waiting up to 10s for the controller\n",
			wantWrites:  bare(kvv1.RequestRestore),
			wantReviews: 1,
			wantAnnotations: with(map[string]string{kvv1.AnnotationRequest: kvv1.RequestRestore, kvv1.AnnotationRequestBy: "bob",
				kvv1.AnnotationRequestAt: "2026-03-01T12:00:00.4Z"}),
			wantWaited: 2 * plugin.PollInterval,
		},
		"--wait 0 writes the request and does not wait": {
			objs: []client.Object{supervised(nil)},
			user: "alice", ctrl: answers("Done: restored"), polls: 1,
			req: plugin.ManualRequest{Action: kvv1.RequestRestore},
			wantOut: "pod/pricer-b: restore requested by alice (request-at " + at +
				`); not waiting: check with "kubectl kubervisor get pricer -n shop"` + "\n",
			wantWrites:  bare(kvv1.RequestRestore),
			wantReviews: 1,
			wantAnnotations: with(map[string]string{kvv1.AnnotationRequest: kvv1.RequestRestore, kvv1.AnnotationRequestBy: "alice",
				kvv1.AnnotationRequestAt: at}),
		},
		"a pod no KubervisorService supervises is refused, nothing written": {
			objs:            []client.Object{pod("shop", "pricer-b", yes, map[string]string{"app": "pricer"}, nil)},
			user:            "alice",
			req:             eject,
			wantErr:         `refusing to eject pod shop/pricer-b: no KubervisorService supervises it (it has no kubervisor/name label)`,
			wantAnnotations: nil,
		},
		"a missing pod is refused": {
			user: "alice", req: restore,
			wantErr: `pod "pricer-b" not found in namespace "shop"`,
		},
		"a SelfSubjectReview refused: no anonymous request": {
			objs: []client.Object{supervised(nil)}, reviewErr: forbidden, req: eject,
			wantErr: `finding out who you are with a SelfSubjectReview: selfsubjectreviews.authentication.k8s.io is forbidden: ` +
				`User "dave" cannot create resource "selfsubjectreviews" in API group "authentication.k8s.io" at the cluster scope; ` +
				`refusing to write a request that does not name its author`,
			wantReviews: 1, wantAnnotations: kept,
		},
		"a SelfSubjectReview the API server does not serve: said why": {
			objs:      []client.Object{supervised(nil)},
			reviewErr: apierrors.NewNotFound(schema.GroupResource{Group: "authentication.k8s.io", Resource: "selfsubjectreviews"}, ""),
			req:       eject,
			wantErr: `finding out who you are with a SelfSubjectReview: selfsubjectreviews.authentication.k8s.io "" not found ` +
				`(SelfSubjectReview is served in authentication.k8s.io/v1 from Kubernetes 1.28); ` +
				`refusing to write a request that does not name its author`,
			wantReviews: 1, wantAnnotations: kept,
		},
		"a SelfSubjectReview without a username": {
			objs: []client.Object{supervised(nil)}, req: eject,
			wantErr:     `finding out who you are: the SelfSubjectReview gave no username; refusing to write a request that does not name its author`,
			wantReviews: 1, wantAnnotations: kept,
		},
		"an anonymous user": {
			objs: []client.Object{supervised(nil)}, user: "system:anonymous", req: restore,
			wantErr: `finding out who you are: the API server sees you as system:anonymous; ` +
				`refusing to write a request that does not name its author`,
			wantReviews: 1, wantAnnotations: kept,
		},
	}
	// Bad flags: refused before anything is read or written.
	for name, c := range map[string]struct {
		req     plugin.ManualRequest
		wantErr string
	}{
		"--for 0": {plugin.ManualRequest{Action: kvv1.RequestEject, For: "0"},
			`--for "0": must be more than zero (leave it out to eject until restored)`},
		"--for negative": {plugin.ManualRequest{Action: kvv1.RequestEject, For: "-5m"},
			`--for "-5m": must be more than zero (leave it out to eject until restored)`},
		"--for in days": {plugin.ManualRequest{Action: kvv1.RequestEject, For: "1d"},
			`--for "1d": not a duration such as 30m or 2h: time: unknown unit "d" in duration "1d"`},
		"--for without a unit": {plugin.ManualRequest{Action: kvv1.RequestEject, For: "30"},
			`--for "30": not a duration such as 30m or 2h: time: missing unit in duration "30"`},
		"--for on a restore":   {plugin.ManualRequest{Action: kvv1.RequestRestore, For: "1h"}, "--for and --force apply to eject only"},
		"--force on a restore": {plugin.ManualRequest{Action: kvv1.RequestRestore, Force: true}, "--for and --force apply to eject only"},
		"--wait negative": {plugin.ManualRequest{Action: kvv1.RequestEject, Wait: -time.Second},
			"--wait -1s: must not be negative (0 does not wait)"},
		"unknown request": {plugin.ManualRequest{Action: "pause"}, `unknown request "pause": want eject or restore`},
	} {
		tests["bad flags: "+name] = test{objs: []client.Object{supervised(nil)}, user: "alice", req: c.req, wantErr: c.wantErr,
			wantAnnotations: kept}
	}

	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			m := newManualEnv(t, tc.objs, tc.user, tc.reviewErr, tc.ctrl, tc.polls)
			err := m.plugin.Request(context.Background(), "shop", "pricer-b", tc.req)
			if got := errString(err); got != tc.wantErr {
				t.Errorf("error:\n got %s\nwant %s", got, tc.wantErr)
			}
			checkOutput(t, m.out.String(), tc.wantOut)
			if diff := cmp.Diff(tc.wantWrites, m.writes, cmp.AllowUnexported(recorded{})); diff != "" {
				t.Errorf("writes (-want +got):\n%s", diff)
			}
			if got := m.reviews(); got != tc.wantReviews {
				t.Errorf("SelfSubjectReviews: got %d, want %d", got, tc.wantReviews)
			}
			var p corev1.Pod
			if err := m.server.Get(context.Background(), client.ObjectKey{Namespace: "shop", Name: "pricer-b"}, &p); err == nil {
				if diff := cmp.Diff(tc.wantAnnotations, p.Annotations); diff != "" {
					t.Errorf("annotations on the server (-want +got):\n%s", diff)
				}
				if want := tc.objs[0].GetLabels(); !maps.Equal(p.Labels, want) {
					t.Errorf("labels changed: got %v, want %v", p.Labels, want)
				}
			} else if !apierrors.IsNotFound(err) || len(tc.objs) > 0 {
				t.Fatal(err)
			}
			if got := m.clock.Since(requestAt); got != tc.wantWaited {
				t.Errorf("waited %s, want %s", got, tc.wantWaited)
			}
		})
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestRequestReadsBack checks that what the plugin writes is what the controller reads: the request left on
// the server parses (podstate.RequestOf, the controller's reader) to the flags given, over an older
// request whose keys must not survive.
func TestRequestReadsBack(t *testing.T) {
	older := map[string]string{kvv1.AnnotationRequest: kvv1.RequestEject, kvv1.AnnotationRequestBy: "bob",
		kvv1.AnnotationRequestAt: olderAt, kvv1.AnnotationRequestReason: "slow", kvv1.AnnotationRequestFor: "1h0m0s",
		kvv1.AnnotationRequestForce: "true"}
	for name, tc := range map[string]struct {
		req  plugin.ManualRequest
		want podstate.ManualRequest
	}{
		"eject with every flag": {
			req:  plugin.ManualRequest{Action: kvv1.RequestEject, Reason: "bad node", For: "90m", Force: true},
			want: podstate.ManualRequest{Action: kvv1.RequestEject, By: "alice", At: at, Reason: "bad node", For: 90 * time.Minute, Force: true},
		},
		"eject without flags": {
			req:  plugin.ManualRequest{Action: kvv1.RequestEject},
			want: podstate.ManualRequest{Action: kvv1.RequestEject, By: "alice", At: at},
		},
		"restore": {
			req:  plugin.ManualRequest{Action: kvv1.RequestRestore, Reason: "fixed"},
			want: podstate.ManualRequest{Action: kvv1.RequestRestore, By: "alice", At: at, Reason: "fixed"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			m := newManualEnv(t, []client.Object{supervised(older)}, "alice", nil, nil, 0)
			if err := m.plugin.Request(context.Background(), "shop", "pricer-b", tc.req); err != nil {
				t.Fatal(err)
			}
			var p corev1.Pod
			if err := m.server.Get(context.Background(), client.ObjectKey{Namespace: "shop", Name: "pricer-b"}, &p); err != nil {
				t.Fatal(err)
			}
			got, ok, err := podstate.RequestOf(&p)
			if !ok || err != nil {
				t.Fatalf("RequestOf = %t, %v; want a well-formed request", ok, err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("request read back (-want +got):\n%s", diff)
			}
		})
	}
}
