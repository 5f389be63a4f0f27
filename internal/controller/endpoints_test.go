package controller

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/detector"
	"github.com/kubervisor/kubervisor/internal/endpoints"
)

// TestEndpointsInThePass: a breaker naming an endpoint (SPEC §2.3) fails with DetectorError and ejects
// nothing while the endpoint is unknown; once the file defines it, its detector talks to it and the
// endpoint's warnings reach the status and one event; a file that stops parsing keeps the detector and says
// so; a new configuration rebuilds the detector.
func TestEndpointsInThePass(t *testing.T) {
	fleet := []client.Object{testService(true)}
	for i := range 4 {
		fleet = append(fleet, testPod(fmt.Sprintf("p%d", i), "yes", nil))
	}
	h := newHarness(t, append(fleet, testKVS(func(k *kvv1.KubervisorService) {
		k.Spec.Breakers[0].CustomService = &kvv1.CustomService{Endpoint: "thanos", URL: "/v1/anomalies"}
	}, "b"))...)
	file := filepath.Join(t.TempDir(), "endpoints.yaml")
	reg := endpoints.NewRegistry(file, logr.Discard())
	if err := reg.Load(); err != nil {
		t.Fatal(err)
	}
	opts := h.opts()
	var built []string // the endpoint URL of each detector built
	factory := opts.NewDetector
	opts.NewDetector = func(b *kvv1.BreakerStrategy, o detector.Options) (detector.Detector, error) {
		if o.Endpoint == nil {
			t.Fatalf("breaker %s built without its endpoint", b.Name)
		}
		built = append(built, o.Endpoint.URL.String())
		return factory(b, o)
	}
	opts.Endpoints = reg
	r := NewKubervisorServiceReconciler(h.client, liveReader{Reader: h.client, h: h}, h.events, opts)
	h.answer("b", nil, "p1")
	write := func(content string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	pass := func(name string) (events []string) {
		t.Helper()
		if _, err := h.pass(r); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return h.events.take()
	}
	ready := func() string {
		for _, c := range h.kvs().Status.Conditions {
			if c.Type == kvv1.ConditionReady {
				return fmt.Sprintf("%s/%s: %s", c.Status, c.Reason, c.Message)
			}
		}
		return ""
	}
	period := func() { h.clock.Step(5*time.Second + wakeGrid) }

	events := pass("no endpoints file")
	if got := ready(); !strings.HasPrefix(got, "False/DetectorError") || !strings.Contains(got, `unknown endpoint "thanos"`) {
		t.Errorf("Ready = %q, want DetectorError naming the unknown endpoint", got)
	}
	if len(h.patches) != 0 || len(built) != 0 || h.calls("b") != 0 {
		t.Errorf("unknown endpoint: %d patches, %d detectors built, %d queries; want none", len(h.patches), len(built), h.calls("b"))
	}
	if !slices.ContainsFunc(events, func(e string) bool { return strings.Contains(e, "DetectorFailed") }) {
		t.Errorf("events %v, want DetectorFailed", events)
	}

	write("endpoints:\n- name: thanos\n  url: https://thanos.example:9091/prefix\n  tls: {insecureSkipVerify: true}\n")
	if err := reg.Load(); err != nil {
		t.Fatal(err)
	}
	period()
	events = pass("the file defines the endpoint")
	if got := h.traffic("p1")[0]; got != "no" || !slices.Equal(built, []string{"https://thanos.example:9091/prefix"}) {
		t.Errorf("p1 %s, detectors built with %v; want p1 ejected through the endpoint", got, built)
	}
	warnings := h.kvs().Status.Breakers[0].Warnings
	if len(warnings) != 1 || !strings.Contains(warnings[0], "insecureSkipVerify") {
		t.Errorf("status warnings %v, want the endpoint's insecureSkipVerify", warnings)
	}
	endpointEvents := func(events []string) int {
		return len(slices.DeleteFunc(slices.Clone(events), func(e string) bool { return !strings.Contains(e, kvv1.EventEndpointWarning) }))
	}
	if n := endpointEvents(events); n != 1 {
		t.Errorf("%d EndpointWarning events in %v, want 1", n, events)
	}
	period()
	if events := pass("the same warning"); endpointEvents(events) != 0 || len(built) != 1 {
		t.Errorf("unchanged: events %v, %d detectors built; want no event and the detector kept", events, len(built))
	}

	write("endpoints:\n- name: thanos\n  url: [broken\n")
	if err := reg.Load(); err == nil {
		t.Fatal("a broken file loaded")
	}
	period()
	events = pass("the file stops parsing")
	warnings = h.kvs().Status.Breakers[0].Warnings
	if !slices.ContainsFunc(warnings, func(w string) bool { return strings.Contains(w, "using the configuration loaded at") }) ||
		endpointEvents(events) != 1 || len(built) != 1 {
		t.Errorf("broken file: warnings %v, events %v, %d detectors built; want the problem said once, the detector kept",
			warnings, events, len(built))
	}

	write("endpoints:\n- name: thanos\n  url: https://thanos-2.example:9091\n")
	if err := reg.Load(); err != nil {
		t.Fatal(err)
	}
	period()
	pass("a new configuration")
	if !slices.Equal(built, []string{"https://thanos.example:9091/prefix", "https://thanos-2.example:9091"}) {
		t.Errorf("detectors built with %v, want one more with the new URL", built)
	}
	if w := h.kvs().Status.Breakers[0].Warnings; len(w) != 0 {
		t.Errorf("warnings %v after a clean configuration, want none", w)
	}
}

// TestQueryTimeoutOfTheEndpoint: a query has maxQueryTimeout unless its detector endpoint sets a timeout,
// which may lengthen it (a slow Thanos) as well as shorten it; never past the breaker's period. A
// customService url that is only a path goes to the default endpoint (SPEC §2.3).
func TestQueryTimeoutOfTheEndpoint(t *testing.T) {
	tests := map[string]struct {
		period       int32 // seconds
		endpoint     string
		custom       *kvv1.CustomService // nil: the breaker names the endpoint on a Prometheus detector
		wantTimeout  time.Duration
		wantEndpoint string
	}{
		"an endpoint without a timeout: the default":      {period: 60, endpoint: "  url: https://a.example\n", wantTimeout: maxQueryTimeout, wantEndpoint: "thanos"},
		"an endpoint's timeout longer than the default":   {period: 60, endpoint: "  url: https://a.example\n  timeout: 30s\n", wantTimeout: 30 * time.Second, wantEndpoint: "thanos"},
		"an endpoint's timeout longer than the period":    {period: 20, endpoint: "  url: https://a.example\n  timeout: 1m\n", wantTimeout: 20 * time.Second, wantEndpoint: "thanos"},
		"an endpoint's timeout shorter than the default":  {period: 60, endpoint: "  url: https://a.example\n  timeout: 2s\n", wantTimeout: 2 * time.Second, wantEndpoint: "thanos"},
		"a path alone, under the default endpoint":        {period: 60, endpoint: "  url: https://a.example\n  timeout: 30s\n", custom: &kvv1.CustomService{URL: "/v1/anomalies"}, wantTimeout: 30 * time.Second, wantEndpoint: "thanos"},
		"an address of its own: no endpoint, the default": {period: 60, endpoint: "  url: https://a.example\n  timeout: 30s\n", custom: &kvv1.CustomService{URL: "detector:8080/v1"}, wantTimeout: maxQueryTimeout},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			fleet := []client.Object{testService(true), testPod("p0", "yes", nil), testPod("p1", "yes", nil)}
			h := newHarness(t, append(fleet, testKVS(func(k *kvv1.KubervisorService) {
				b := &k.Spec.Breakers[0]
				b.EvaluationPeriod = new(intstr.FromInt32(tc.period))
				if tc.custom != nil {
					b.CustomService = tc.custom
				} else {
					b.CustomService = &kvv1.CustomService{Endpoint: "thanos"}
				}
			}, "b"))...)
			file := filepath.Join(t.TempDir(), "endpoints.yaml")
			if err := os.WriteFile(file, []byte("default: thanos\nendpoints:\n- name: thanos\n"+tc.endpoint), 0o600); err != nil {
				t.Fatal(err)
			}
			reg := endpoints.NewRegistry(file, logr.Discard())
			if err := reg.Load(); err != nil {
				t.Fatal(err)
			}
			opts := h.opts()
			var got []detector.Options
			factory := opts.NewDetector
			opts.NewDetector = func(b *kvv1.BreakerStrategy, o detector.Options) (detector.Detector, error) {
				got = append(got, o)
				return factory(b, o)
			}
			opts.Endpoints = reg
			r := NewKubervisorServiceReconciler(h.client, liveReader{Reader: h.client, h: h}, h.events, opts)
			if _, err := h.pass(r); err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 {
				t.Fatalf("%d detectors built, want 1", len(got))
			}
			endpoint := ""
			if got[0].Endpoint != nil {
				endpoint = got[0].Endpoint.Name
			}
			if got[0].Timeout != tc.wantTimeout || endpoint != tc.wantEndpoint {
				t.Errorf("detector built with timeout %s and endpoint %q, want %s and %q", got[0].Timeout, endpoint, tc.wantTimeout, tc.wantEndpoint)
			}
		})
	}
}
