package plugin_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/plugin"
)

// now is the fixed instant every unit test runs at.
var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// recorded is a write the plugin sent to the API server.
type recorded struct {
	verb, kind, name string
	patchType        string
	patch            string
}

// env is a plugin on a fake client, with the writes it made.
type env struct {
	plugin *plugin.Plugin
	client client.Client
	// server is the fake API server behind client: what the tests write there themselves (say, the
	// controller's answer to a request) is not recorded.
	server client.WithWatch
	out    *bytes.Buffer
	writes []recorded
}

// newEnv builds a fake API server holding objs. Every write is recorded; patchErrs are returned, in order,
// by the first patches instead of applying them.
func newEnv(t *testing.T, objs []client.Object, patchErrs ...error) *env {
	t.Helper()
	scheme, err := plugin.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	e := &env{out: &bytes.Buffer{}}
	base := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).
		WithStatusSubresource(&kvv1.KubervisorService{}).Build()
	record := func(verb string, obj client.Object) {
		e.writes = append(e.writes, recorded{verb: verb, kind: kindOf(obj), name: obj.GetName()})
	}
	e.server = base
	e.client = interceptor.NewClient(base, interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			record("create", obj)
			return c.Create(ctx, obj, opts...)
		},
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			record("update", obj)
			return c.Update(ctx, obj, opts...)
		},
		Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			record("delete", obj)
			return c.Delete(ctx, obj, opts...)
		},
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			data, err := patch.Data(obj)
			if err != nil {
				return err
			}
			e.writes = append(e.writes, recorded{verb: "patch", kind: kindOf(obj), name: obj.GetName(),
				patchType: string(patch.Type()), patch: string(data)})
			if len(patchErrs) > 0 {
				err, patchErrs = patchErrs[0], patchErrs[1:]
				return err
			}
			return c.Patch(ctx, obj, patch, opts...)
		},
	})
	e.plugin = &plugin.Plugin{Client: e.client, Out: e.out, Clock: clocktesting.NewFakeClock(now)}
	return e
}

func kindOf(obj client.Object) string {
	switch obj.(type) {
	case *corev1.Service:
		return "Service"
	case *corev1.Pod:
		return "Pod"
	case *kvv1.KubervisorService:
		return "KubervisorService"
	}
	return "?"
}

// checkOutput compares whole outputs, so that any formatting change fails.
func checkOutput(t *testing.T, got, want string) {
	t.Helper()
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("output mismatch (-want +got):\n%s\ngot:\n%s", diff, got)
	}
}

func kvs(ns, name, service string, created time.Time, mutate ...func(*kvv1.KubervisorService)) *kvv1.KubervisorService {
	k := &kvv1.KubervisorService{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, CreationTimestamp: metav1.NewTime(created)},
		Spec: kvv1.KubervisorServiceSpec{
			Service: service,
			Breakers: []kvv1.BreakerStrategy{{
				Name:          "http-errors",
				CustomService: &kvv1.CustomService{URL: "detector:8080/anomalies"},
			}},
		},
	}
	for _, m := range mutate {
		m(k)
	}
	return k
}

func service(ns, name string, selector map[string]string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ServiceSpec{Selector: selector},
	}
}

// pod returns a pod with the given labels and annotations; ready nil leaves the Ready condition unset.
func pod(ns, name string, ready *bool, labels, annotations map[string]string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels, Annotations: annotations}}
	if ready != nil {
		status := corev1.ConditionFalse
		if *ready {
			status = corev1.ConditionTrue
		}
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}
	}
	return p
}

func condition(t, status, reason, msg string) metav1.Condition {
	return metav1.Condition{Type: t, Status: metav1.ConditionStatus(status), Reason: reason, Message: msg,
		LastTransitionTime: metav1.NewTime(now.Add(-time.Hour))}
}

func activatorOf(mode kvv1.ActivatorMode, period int, maxRetry, maxPause *int32) *kvv1.ActivatorStrategy {
	a := &kvv1.ActivatorStrategy{Mode: mode, MaxRetryCount: maxRetry, MaxPauseCount: maxPause}
	if period > 0 {
		a.Period = new(intstr.FromInt32(int32(period)))
	}
	return a
}

// ago formats the instant d before now the way the breaker writes break-at.
func ago(d time.Duration) string {
	return now.Add(-d).Format(time.RFC3339Nano)
}

var (
	yes = new(true)
	no  = new(false)
)
