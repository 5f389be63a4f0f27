package detector

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/kubervisor/kubervisor/api/v1alpha1"
)

// headerTransport stands for an endpoint's client: it marks every request, as TLS or credentials would.
type headerTransport struct{ value string }

func (h headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("X-Endpoint", h.value)
	return http.DefaultTransport.RoundTrip(r)
}

// endpointAt is a named endpoint whose base URL is base and whose client marks its requests with mark.
func endpointAt(t *testing.T, base, mark string, timeout time.Duration) *Endpoint {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	return &Endpoint{Name: "thanos", URL: u, Client: &http.Client{Transport: headerTransport{mark}}, Timeout: timeout}
}

// TestEndpointReplacesTheAddress: a Prometheus detector with an endpoint queries the endpoint's URL (its path
// prefix included) through the endpoint's client, and its messages name the endpoint; a custom detector
// asks the endpoint's URL joined with its url path.
func TestEndpointReplacesTheAddress(t *testing.T) {
	var marks []string
	prom := newFakeServer(t, "/prefix/api/v1/query", http.StatusOK, "application/json", promVector(promSample("9", "pod", "a")), 0)
	prom.Config.Handler = markedBy(&marks, prom.Config.Handler)
	det, err := New(&v1alpha1.BreakerStrategy{Name: "latency", PeerOutlier: &v1alpha1.PeerOutlier{
		Endpoint: "thanos", PromQL: "q", PodNameKey: "pod"}}, Options{Timeout: time.Minute, Now: func() time.Time { return fixedNow },
		Endpoint: endpointAt(t, prom.URL+"/prefix", "thanos-client", 0)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := det.Detect(context.Background(), Request{Namespace: "shop", Pods: podSet("a")}); err != nil {
		t.Fatal(err)
	}
	if len(prom.recorded()) != 1 || len(marks) != 1 || marks[0] != "thanos-client" {
		t.Errorf("the endpoint's Prometheus saw %d requests marked %v, want 1 through the endpoint's client", len(prom.recorded()), marks)
	}

	custom := newFakeServer(t, "/base/v1/anomalies", http.StatusOK, "application/json", `{"pods": ["b"]}`, 0)
	det, err = New(&v1alpha1.BreakerStrategy{Name: "c", CustomService: &v1alpha1.CustomService{Endpoint: "thanos", URL: "/v1/anomalies?team=x"}},
		Options{Timeout: time.Minute, Endpoint: endpointAt(t, custom.URL+"/base", "thanos-client", 0)})
	if err != nil {
		t.Fatal(err)
	}
	got, err := det.Detect(context.Background(), Request{Namespace: "shop", KubervisorService: "pricer", Breaker: "c", Pods: podSet("b")})
	if err != nil || len(got.Anomalies) != 1 {
		t.Fatalf("custom detector through the endpoint: %+v, %v", got, err)
	}
	if r := custom.recorded(); len(r) != 1 || r[0].Params.Get("team") != "x" || r[0].Params.Get("namespace") != "shop" {
		t.Errorf("custom service saw %+v, want one GET of /base/v1/anomalies with team=x and namespace=shop", r)
	}

	// Messages name the endpoint, not an address the user never wrote.
	down := endpointAt(t, "http://127.0.0.1:1", "x", 0)
	det, err = New(&v1alpha1.BreakerStrategy{Name: "c", CustomService: &v1alpha1.CustomService{Endpoint: "thanos"}},
		Options{Timeout: time.Second, Endpoint: down})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := det.Detect(context.Background(), Request{Namespace: "shop"}); err == nil || !strings.Contains(err.Error(), "endpoint thanos") {
		t.Errorf("error %v does not name the endpoint", err)
	}
}

// TestEndpointTimeoutWhenShorter: the endpoint's timeout bounds a query when it is shorter than the breaker's.
func TestEndpointTimeoutWhenShorter(t *testing.T) {
	slow := newFakeServer(t, "/", http.StatusOK, "application/json", `{"pods": []}`, 5*time.Second)
	det, err := New(&v1alpha1.BreakerStrategy{Name: "c", CustomService: &v1alpha1.CustomService{Endpoint: "slow"}},
		Options{Timeout: time.Minute, Endpoint: endpointAt(t, slow.URL, "x", 50*time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	if got := det.(*customDetector).timeout; got != 50*time.Millisecond {
		t.Errorf("timeout = %s, want the endpoint's 50ms", got)
	}
}

func markedBy(marks *[]string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		*marks = append(*marks, r.Header.Get("X-Endpoint"))
		next.ServeHTTP(w, r)
	})
}
