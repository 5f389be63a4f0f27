package detector

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fixedNow is the evaluation time every test injects; Prometheus receives it as the time parameter.
var fixedNow = time.Unix(1700000000, 500_000_000)

// fixedNowParam is fixedNow as client_golang encodes it.
const fixedNowParam = "1700000000.5"

// recordedRequest is what a fake server saw of one request.
type recordedRequest struct {
	Method string
	Path   string
	// Params merges the URL query and, for a form POST, the body (client_golang POSTs its queries).
	Params url.Values
}

// fakeServer answers every request on path with a canned status and body, after an optional delay, and
// records what it received.
type fakeServer struct {
	*httptest.Server
	mu       sync.Mutex
	requests []recordedRequest
}

func newFakeServer(t testing.TB, path string, status int, contentType, body string, delay time.Duration) *fakeServer {
	t.Helper()
	f := &fakeServer{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		f.mu.Lock()
		f.requests = append(f.requests, recordedRequest{Method: r.Method, Path: r.URL.Path, Params: r.Form})
		f.mu.Unlock()
		if r.URL.Path != path {
			http.NotFound(w, r)
			return
		}
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(f.Close)
	return f
}

// hostPort is the server's address without a scheme, the host:port form users write.
func (f *fakeServer) hostPort() string {
	return strings.TrimPrefix(f.URL, "http://")
}

func (f *fakeServer) recorded() []recordedRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.requests)
}

// promSample renders one instant-vector element as Prometheus's /api/v1/query does.
func promSample(value string, labels ...string) string {
	if len(labels)%2 != 0 {
		panic("labels must be name/value pairs")
	}
	pairs := make([]string, 0, len(labels)/2)
	for i := 0; i < len(labels); i += 2 {
		pairs = append(pairs, fmt.Sprintf("%q:%q", labels[i], labels[i+1]))
	}
	return fmt.Sprintf(`{"metric":{%s},"value":[1700000000.5,%q]}`, strings.Join(pairs, ","), value)
}

// promVector renders a successful instant-vector answer.
func promVector(samples ...string) string {
	return `{"status":"success","data":{"resultType":"vector","result":[` + strings.Join(samples, ",") + `]}}`
}

// Answers recorded from Prometheus for the shapes a wrong PromQL produces, and for its errors.
const (
	promScalar   = `{"status":"success","data":{"resultType":"scalar","result":[1700000000.5,"0.75"]}}`
	promString   = `{"status":"success","data":{"resultType":"string","result":[1700000000.5,"pod-a"]}}`
	promMatrix   = `{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"code":"200","pod":"a"},"values":[[1699999940.5,"1"],[1700000000.5,"3"]]}]}}`
	promBadData  = `{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": 1:32: parse error: unclosed left parenthesis"}`
	promExecErr  = `{"status":"error","errorType":"execution","error":"query processing would load too many samples into memory in query execution"}`
	promWarnings = `{"status":"success","data":{"resultType":"vector","result":[]},"warnings":["PromQL info: metric might not be a counter"]}`
)

// podSet builds a Request.Pods set.
func podSet(names ...string) map[string]struct{} {
	s := make(map[string]struct{}, len(names))
	for _, n := range names {
		s[n] = struct{}{}
	}
	return s
}

// checkErr fails unless err is nil when want is empty, or contains every string of want.
func checkErr(t *testing.T, err error, want []string) {
	t.Helper()
	if err != nil {
		t.Logf("Detect() error: %v", err)
	}
	if len(want) == 0 {
		if err != nil {
			t.Fatalf("Detect() error = %v, want none", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("Detect() error = nil, want one containing %q", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("Detect() error = %q, want it to contain %q", err, w)
		}
	}
}
