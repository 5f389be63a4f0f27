package detector

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kubervisor/kubervisor/api/v1alpha1"
)

// A PodList as the API server (and the 2018 custom services) print it: only the names matter.
const podListJSON = `{
  "kind": "PodList",
  "apiVersion": "v1",
  "metadata": {"resourceVersion": "4242"},
  "items": [
    {"metadata": {"name": "pricer-7c9d-c", "namespace": "shop", "labels": {"app": "pricer"}},
     "spec": {"containers": [{"name": "pricer", "image": "pricer:1.2"}]},
     "status": {"phase": "Running", "podIP": "10.0.0.3"}},
    {"metadata": {"name": "pricer-7c9d-a", "namespace": "shop"}, "spec": {}, "status": {"phase": "Running"}},
    {"metadata": {"name": "pricer-7c9d-b", "namespace": "shop"}, "spec": {}, "status": {"phase": "Running"}}
  ]
}`

const podListYAML = `apiVersion: v1
kind: PodList
metadata:
  resourceVersion: "4242"
items:
- metadata:
    name: pricer-7c9d-b
    namespace: shop
  spec:
    containers:
    - name: pricer
      image: pricer:1.2
  status:
    phase: Running
- metadata:
    name: pricer-7c9d-a
    namespace: shop
`

// kubectl get pods -o yaml prints a List of Pods rather than a PodList.
const kubectlListYAML = `apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata:
    name: pricer-7c9d-a
- apiVersion: v1
  kind: Pod
  metadata:
    name: pricer-7c9d-c
`

func TestCustomService(t *testing.T) {
	managed := []string{"pricer-7c9d-a", "pricer-7c9d-b", "pricer-7c9d-c", "web-0"}
	// flagged builds the expected anomaly at 1-based rank of n names.
	flagged := func(pod string, rank, n int) Anomaly {
		return Anomaly{Pod: pod, Score: float64(n - rank + 1), Reason: "flagged by custom service (rank " + strconv.Itoa(rank) + " of " + strconv.Itoa(n) + ")"}
	}

	tests := map[string]struct {
		status      int // 0 is 200
		contentType string
		body        string
		delay       time.Duration
		timeout     time.Duration // 0 is 2s
		scheme      bool          // address with http:// rather than host:port/path
		want        Result
		wantErr     []string
	}{
		"PodList JSON: the order is the ranking": {
			body: podListJSON,
			want: Result{Anomalies: []Anomaly{
				flagged("pricer-7c9d-c", 1, 3), flagged("pricer-7c9d-a", 2, 3), flagged("pricer-7c9d-b", 3, 3),
			}},
		},
		"PodList YAML": {
			contentType: "application/yaml",
			body:        podListYAML,
			scheme:      true,
			want:        Result{Anomalies: []Anomaly{flagged("pricer-7c9d-b", 1, 2), flagged("pricer-7c9d-a", 2, 2)}},
		},
		"a List of Pods (kubectl get pods -o yaml)": {
			body: kubectlListYAML,
			want: Result{Anomalies: []Anomaly{flagged("pricer-7c9d-a", 1, 2), flagged("pricer-7c9d-c", 2, 2)}},
		},
		"items without kind": {
			body: `{"items": [{"metadata": {"name": "pricer-7c9d-b"}}]}`,
			want: Result{Anomalies: []Anomaly{flagged("pricer-7c9d-b", 1, 1)}},
		},
		"pods JSON: unmanaged names dropped, duplicates keep their first place": {
			body: `{"pods": ["other-1", "pricer-7c9d-b", "pricer-7c9d-a", "pricer-7c9d-b", "other-2"]}`,
			want: Result{Ignored: 2, Anomalies: []Anomaly{flagged("pricer-7c9d-b", 2, 4), flagged("pricer-7c9d-a", 3, 4)}},
		},
		"pods YAML": {
			contentType: "text/plain",
			body:        "pods:\n- pricer-7c9d-a\n- pricer-7c9d-c\n",
			want:        Result{Anomalies: []Anomaly{flagged("pricer-7c9d-a", 1, 2), flagged("pricer-7c9d-c", 2, 2)}},
		},
		"an empty pods list is NoData": {
			body: `{"pods": []}`,
			want: Result{NoData: true},
		},
		"pods null (a Go service's nil slice) is NoData": {
			body: `{"pods": null}`,
			want: Result{NoData: true},
		},
		"an empty PodList is NoData": {
			body: `{"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": []}`,
			want: Result{NoData: true},
		},
		"PodList items of another namespace are ignored and counted; items without one are the request's": {
			body: `{"kind": "PodList", "items": [
				{"metadata": {"name": "web-0", "namespace": "staging"}},
				{"metadata": {"name": "pricer-7c9d-a", "namespace": "staging"}},
				{"metadata": {"name": "web-0", "namespace": "shop"}},
				{"metadata": {"name": "other-1", "namespace": "shop"}},
				{"metadata": {"name": "pricer-7c9d-b"}},
				{"metadata": {"name": "pricer-7c9d-b", "namespace": "shop"}}]}`,
			want: Result{Ignored: 3, IgnoredOtherNamespace: 2, Anomalies: []Anomaly{flagged("web-0", 3, 5), flagged("pricer-7c9d-b", 5, 5)}},
		},
		"a PodList only about another namespace is NoData": {
			contentType: "application/yaml",
			body:        "kind: PodList\nitems:\n- metadata: {name: web-0, namespace: staging}\n- metadata: {name: pricer-7c9d-a, namespace: staging}\n",
			want:        Result{NoData: true, Ignored: 2, IgnoredOtherNamespace: 2},
		},
		"only unmanaged names is NoData": {
			body: `{"pods": ["other-1", "other-2"]}`,
			want: Result{NoData: true, Ignored: 2},
		},
		"500 is an error showing the body": {
			status:  http.StatusInternalServerError,
			body:    "detector crashed",
			wantErr: []string{`for breaker "custom": answered 500 Internal Server Error, expected 200 OK; body "detector crashed"`},
		},
		"204 is an error": {
			status:  http.StatusNoContent,
			wantErr: []string{`answered 204 No Content, expected 200 OK`},
		},
		"an object of another shape is an error": {
			body:    `{"foo": 1}`,
			wantErr: []string{`answer has neither pods nor items (keys: "foo"), expected a v1 PodList or {"pods": ["name", ...]}, in JSON or YAML; body "{\"foo\": 1}"`},
		},
		"HTML is an error": {
			contentType: "text/html",
			body:        "<html><body><h1>502 Bad Gateway</h1></body></html>",
			wantErr:     []string{`answer is not an object, expected a v1 PodList`, `body "<html><body><h1>502 Bad Gateway</h1></body></html>"`},
		},
		"an empty body is an error": {
			body:    "",
			wantErr: []string{`empty answer, expected a v1 PodList or {"pods": ["name", ...]}`},
		},
		"a JSON list is an error": {
			body:    `["pricer-7c9d-a"]`,
			wantErr: []string{`answer is not an object`},
		},
		"a PodList item without a name is an error": {
			body:    `{"kind": "PodList", "items": [{"metadata": {"name": "pricer-7c9d-a"}}, {"metadata": {"generateName": "pricer-"}}]}`,
			wantErr: []string{`items[1] has no metadata.name`},
		},
		"a List of something else is an error": {
			body:    `{"kind": "List", "items": [{"kind": "Service", "metadata": {"name": "pricer"}}]}`,
			wantErr: []string{`items[0] is a Service, expected a Pod`},
		},
		"another kind is an error": {
			body:    "kind: ServiceList\nitems: []\n",
			wantErr: []string{`answer is a ServiceList, expected a v1 PodList`},
		},
		"pods that are not names is an error": {
			body:    `{"pods": [{"name": "pricer-7c9d-a"}]}`,
			wantErr: []string{`pods is not a list of names`},
		},
		"an empty name is an error": {
			body:    `{"pods": ["pricer-7c9d-a", ""]}`,
			wantErr: []string{`pods[1] is an empty name`},
		},
		"both shapes at once is an error": {
			body:    `{"pods": ["pricer-7c9d-a"], "items": []}`,
			wantErr: []string{`answer mixes the two shapes`},
		},
		"broken YAML is an error": {
			body:    "pods: [pricer-7c9d-a\n",
			wantErr: []string{`answer is neither JSON nor YAML`},
		},
		"an answer over 16 MiB is an error": {
			body:    `{"pods": []}` + strings.Repeat(" ", maxBodyBytes),
			wantErr: []string{`answer larger than 16 MiB`},
		},
		"an answer slower than the timeout is an error": {
			body:    `{"pods": ["pricer-7c9d-a"]}`,
			delay:   5 * time.Second,
			timeout: 100 * time.Millisecond,
			wantErr: []string{`asking the custom service at 127.0.0.1:`, `for breaker "custom": no answer within the timeout (100ms`, "context deadline exceeded"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			status := tc.status
			if status == 0 {
				status = http.StatusOK
			}
			contentType := tc.contentType
			if contentType == "" {
				contentType = "application/json"
			}
			srv := newFakeServer(t, "/v1/anomalies", status, contentType, tc.body, tc.delay)
			// The configured URL carries a parameter of its own, which must survive.
			address := srv.hostPort() + "/v1/anomalies?token=s3cret"
			if tc.scheme {
				address = srv.URL + "/v1/anomalies?token=s3cret"
			}
			timeout := tc.timeout
			if timeout == 0 {
				timeout = 2 * time.Second
			}
			det, err := New(&v1alpha1.BreakerStrategy{Name: "custom", CustomService: &v1alpha1.CustomService{URL: address}},
				Options{Timeout: timeout})
			if err != nil {
				t.Fatalf("New() error = %v", err)
			}

			got, err := det.Detect(context.Background(), Request{Namespace: "shop", KubervisorService: "pricer", Breaker: "custom", Pods: podSet(managed...)})
			checkErr(t, err, tc.wantErr)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Detect() result mismatch (-want +got):\n%s", diff)
			}

			wantReq := []recordedRequest{{
				Method: http.MethodGet,
				Path:   "/v1/anomalies",
				Params: url.Values{
					"namespace":         {"shop"},
					"kubervisorservice": {"pricer"},
					"breaker":           {"custom"},
					"token":             {"s3cret"},
				},
			}}
			if diff := cmp.Diff(wantReq, srv.recorded()); diff != "" {
				t.Errorf("requests received (-want +got):\n%s", diff)
			}
		})
	}
}

// TestCustomServiceParametersOverride checks that the breaker's own parameters win over same-named ones
// already in the configured URL: the service must never be told about another KubervisorService.
func TestCustomServiceParametersOverride(t *testing.T) {
	srv := newFakeServer(t, "/", http.StatusOK, "application/json", `{"pods": []}`, 0)
	det, err := New(&v1alpha1.BreakerStrategy{Name: "custom", CustomService: &v1alpha1.CustomService{
		URL: srv.URL + "/?namespace=elsewhere&breaker=other&x=1",
	}}, Options{Timeout: time.Second})
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	if _, err := det.Detect(context.Background(), Request{Namespace: "shop", KubervisorService: "pricer", Breaker: "custom"}); err != nil {
		t.Fatalf("Detect() error = %v", err)
	}
	want := url.Values{"namespace": {"shop"}, "kubervisorservice": {"pricer"}, "breaker": {"custom"}, "x": {"1"}}
	reqs := srv.recorded()
	if len(reqs) != 1 {
		t.Fatalf("service received %d requests, want 1", len(reqs))
	}
	if diff := cmp.Diff(want, reqs[0].Params); diff != "" {
		t.Errorf("query parameters (-want +got):\n%s", diff)
	}
}
