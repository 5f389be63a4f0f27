package detector

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kubervisor/kubervisor/api/v1alpha1"
)

// paddedVector is a valid instant vector of exactly size bytes: one sample about a pod that is not managed,
// padded by a label value.
func paddedVector(size int) string {
	const (
		head = `{"status":"success","data":{"resultType":"vector","result":[{"metric":{"pod":"other","pad":"`
		tail = `"},"value":[1700000000.5,"1"]}]}}`
	)
	return head + strings.Repeat("x", size-len(head)-len(tail)) + tail
}

// TestPrometheusAnswerSizeCap: a Prometheus answer is capped like a custom service's (maxBodyBytes), with an
// error that says so, whether the server declares its length or streams it; client_golang alone reads any
// answer whole into memory.
func TestPrometheusAnswerSizeCap(t *testing.T) {
	tests := map[string]struct {
		size          int
		status        int
		contentLength bool // declare the length; otherwise the answer is streamed (chunked)
		endpoint      bool // through a named endpoint's client rather than the shared one
		want          Result
		wantErr       []string
	}{
		"an answer of exactly 16 MiB is read": {
			size: maxBodyBytes,
			want: Result{NoData: true, Ignored: 1},
		},
		"one byte more is refused": {
			size:    maxBodyBytes + 1,
			wantErr: []string{`querying Prometheus at`, `the Prometheus answer is larger than 16 MiB`},
		},
		"a declared length over the cap is refused": {
			size:          maxBodyBytes + 1,
			contentLength: true,
			wantErr:       []string{`the Prometheus answer is larger than 16 MiB`},
		},
		"an error page over the cap is refused": {
			size:    maxBodyBytes + 1,
			status:  http.StatusBadGateway,
			wantErr: []string{`the Prometheus answer is larger than 16 MiB`},
		},
		"an endpoint's client is capped too": {
			size:     maxBodyBytes + 1,
			endpoint: true,
			wantErr:  []string{`querying Prometheus at endpoint thanos`, `the Prometheus answer is larger than 16 MiB`},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			body := paddedVector(tc.size)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				if tc.contentLength {
					w.Header().Set("Content-Length", strconv.Itoa(len(body)))
				}
				status := tc.status
				if status == 0 {
					status = http.StatusOK
				}
				w.WriteHeader(status)
				_, _ = w.Write([]byte(body))
			}))
			t.Cleanup(srv.Close)

			shared := &http.Client{Transport: &http.Transport{}}
			opts := Options{HTTPClient: shared, Timeout: 10 * time.Second}
			c := &v1alpha1.ContinuousValueDeviation{PrometheusService: srv.URL, PromQL: "x", PodNameKey: "pod"}
			if tc.endpoint {
				c.PrometheusService = ""
				opts.Endpoint = endpointAt(t, srv.URL, "mark", 0)
			}
			det, err := New(&v1alpha1.BreakerStrategy{Name: "b", ContinuousValueDeviation: c}, opts)
			if err != nil {
				t.Fatalf("New() error = %v", err)
			}
			got, err := det.Detect(context.Background(), Request{Namespace: "shop", Pods: podSet("a")})
			checkErr(t, err, tc.wantErr)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Detect() result mismatch (-want +got):\n%s", diff)
			}
			if _, wrapped := shared.Transport.(*http.Transport); !wrapped {
				t.Errorf("the shared client's transport was replaced: %T", shared.Transport)
			}
		})
	}
}

// TestPrometheusAnswerNotJSON: an answer that is not JSON (a proxy's HTML page, an answer cut short) is
// described by what it was, not by the JSON decoder's words; the other errors keep theirs.
func TestPrometheusAnswerNotJSON(t *testing.T) {
	const (
		page      = "<html><body><h1>502 Bad Gateway</h1></body></html>"
		truncated = `{"status":"success","data":{"resultType":"vector","result":[{"metric":{"pod":"a"},"val`
	)
	tests := map[string]struct {
		status      int
		body        string
		redirect    string // the body of a redirect to the answer
		wantErr     []string
		wantMissing string // the decoder's wording that must not reach the message
	}{
		"an HTML page": {
			status:      http.StatusOK,
			body:        page,
			wantErr:     []string{`decoding the answer to continuousValueDeviation promQL "x"`, `the answer (HTTP 200) is not JSON: 50 bytes beginning "<html><body>`},
			wantMissing: "readObjectStart",
		},
		"an HTML page after whitespace, on a status whose body Prometheus's API writes (400)": {
			status:      http.StatusBadRequest,
			body:        "\n  " + page,
			wantErr:     []string{`the answer (HTTP 400) is not JSON: 53 bytes beginning "<html>`},
			wantMissing: "readObjectStart",
		},
		"an answer cut short": {
			status:      http.StatusOK,
			body:        truncated,
			wantErr:     []string{`the answer (HTTP 200) is not complete JSON: 86 bytes, "{\"status\":\"success\"`},
			wantMissing: "ReadMapCB",
		},
		"an answer cut short behind a redirect with an HTML body": {
			status:   http.StatusOK,
			body:     truncated,
			redirect: page,
			wantErr:  []string{`is not complete JSON: 86 bytes`},
		},
		"an error page keeps its status and body": {
			status:  http.StatusBadGateway,
			body:    page,
			wantErr: []string{`server error: 502 (body "<html>`},
		},
		"JSON of the wrong shape keeps the decoder's words": {
			status:      http.StatusOK,
			body:        `{"status":"success","data":{"resultType":"vector","result":"x"}}`,
			wantErr:     []string{`decoding the answer to continuousValueDeviation promQL "x"`},
			wantMissing: "is not JSON",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.redirect != "" && r.URL.Path != "/moved/api/v1/query" {
					w.Header().Set("Location", "/moved/api/v1/query")
					w.WriteHeader(http.StatusTemporaryRedirect)
					_, _ = w.Write([]byte(tc.redirect))
					return
				}
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			}))
			t.Cleanup(srv.Close)
			c := &v1alpha1.ContinuousValueDeviation{PrometheusService: srv.URL, PromQL: "x", PodNameKey: "pod"}
			det, err := New(&v1alpha1.BreakerStrategy{Name: "b", ContinuousValueDeviation: c}, Options{Timeout: 10 * time.Second})
			if err != nil {
				t.Fatalf("New() error = %v", err)
			}
			_, err = det.Detect(context.Background(), Request{Namespace: "shop", Pods: podSet("a")})
			checkErr(t, err, tc.wantErr)
			if tc.wantMissing != "" && strings.Contains(err.Error(), tc.wantMissing) {
				t.Errorf("Detect() error = %q, want it without %q", err, tc.wantMissing)
			}
		})
	}
}
