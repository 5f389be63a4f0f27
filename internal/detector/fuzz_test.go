package detector

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"math"
	"math/big"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/kubervisor/kubervisor/api/v1alpha1"
)

// The fuzz targets feed each detector an answer the fuzzer writes, decoded the way the detector decodes it
// (client_golang for Prometheus, parseNames for a custom service) through an in-memory transport, and
// check the property SPEC §8 asks of bad input: an error, or a result that names only managed pods, is
// bounded by the input and is ranked worst first; never a panic. Their seed corpus, in
// testdata/fuzz/<target>, holds the answers of the other tests (test-*), answers recorded from Prometheus
// 2.42 (prometheus-*), a few hostile ones (adversarial-*: deep nesting, a YAML alias bomb) and the inputs
// fuzzing found (hash names). `make fuzz` runs each target for a fixed time; `go test` runs the corpus.

// maxReason bounds an anomaly's reason: it holds numbers and ranks, never a label value from the answer.
const maxReason = 200

// answerTransport answers every request with body, in memory.
type answerTransport struct {
	contentType string
	body        []byte
}

func (a answerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		_ = r.Body.Close()
	}
	return &http.Response{
		Status:        "200 OK",
		StatusCode:    http.StatusOK,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        http.Header{"Content-Type": {a.contentType}},
		Body:          io.NopCloser(bytes.NewReader(a.body)),
		ContentLength: int64(len(a.body)),
		Request:       r,
	}, nil
}

// fuzzRequest reads the managed pods from a comma-separated list: a name starting with "!" is managed but
// out of traffic (without any, Request.InTraffic is nil: every managed pod is in traffic).
func fuzzRequest(pods string) Request {
	req := Request{Namespace: "shop", KubervisorService: "pricer", Breaker: "b", Pods: map[string]struct{}{}}
	for p := range strings.SplitSeq(pods, ",") {
		name, out := strings.CutPrefix(p, "!")
		if name == "" {
			continue
		}
		req.Pods[name] = struct{}{}
		if out && req.InTraffic == nil {
			req.InTraffic = map[string]struct{}{}
		}
	}
	if req.InTraffic != nil {
		for p := range strings.SplitSeq(pods, ",") {
			if p != "" && !strings.HasPrefix(p, "!") {
				req.InTraffic[p] = struct{}{}
			}
		}
	}
	return req
}

// detectAnswer asks a detector built from b, whose every request is answered with body.
func detectAnswer(t *testing.T, b *v1alpha1.BreakerStrategy, contentType string, body []byte, req Request) (Result, error) {
	t.Helper()
	client := &http.Client{Transport: answerTransport{contentType: contentType, body: body}}
	det, err := New(b, Options{HTTPClient: client, Timeout: 10 * time.Second, Now: func() time.Time { return fixedNow }})
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	return det.Detect(context.Background(), req)
}

// checkAnswer checks the property every detector keeps, whatever it was answered: an error comes with an
// empty result; otherwise the anomalies are managed pods, each once, worst first, with a score and a short
// reason, and no more than the managed pods or the input's bytes can make.
func checkAnswer(t *testing.T, req *Request, res Result, err error, inputLen int) {
	t.Helper()
	if err != nil {
		if !reflect.DeepEqual(res, Result{}) {
			t.Fatalf("error %v with a result %+v", err, res)
		}
		return
	}
	if res.NoData && len(res.Anomalies) > 0 {
		t.Fatalf("NoData with %d anomalies", len(res.Anomalies))
	}
	if len(res.Anomalies) > len(req.Pods) {
		t.Fatalf("%d anomalies about %d managed pods", len(res.Anomalies), len(req.Pods))
	}
	seen := make(map[string]bool, len(res.Anomalies))
	for i, a := range res.Anomalies {
		if _, managed := req.Pods[a.Pod]; !managed {
			t.Fatalf("anomaly about %q, which is not a managed pod", a.Pod)
		}
		if seen[a.Pod] {
			t.Fatalf("pod %q flagged twice", a.Pod)
		}
		seen[a.Pod] = true
		if math.IsNaN(a.Score) || a.Score <= 0 {
			t.Fatalf("pod %q: score %v", a.Pod, a.Score)
		}
		if i > 0 && a.Score > res.Anomalies[i-1].Score {
			t.Fatalf("not worst first: %q scores %v after %q at %v", a.Pod, a.Score, res.Anomalies[i-1].Pod, res.Anomalies[i-1].Score)
		}
		if a.Reason == "" || len(a.Reason) > maxReason {
			t.Fatalf("pod %q: reason of %d bytes: %q", a.Pod, len(a.Reason), a.Reason)
		}
	}
	if res.IgnoredOtherNamespace < 0 || res.IgnoredOtherNamespace > res.Ignored || res.Ignored > inputLen {
		t.Fatalf("ignored %d, of another namespace %d, from %d bytes", res.Ignored, res.IgnoredOtherNamespace, inputLen)
	}
}

// FuzzDiscreteAnswer: discreteValueOutOfList on any Prometheus answer. A flagged pod's score is its bad
// ratio, above the tolerance (default 0.5) and at most 1.
func FuzzDiscreteAnswer(f *testing.F) {
	b := &v1alpha1.BreakerStrategy{Name: "b", DiscreteValueOutOfList: &v1alpha1.DiscreteValueOutOfList{
		PrometheusService: "prometheus:9090", PromQL: "x", Key: "code", PodNameKey: "pod", GoodValues: []string{"200"},
	}}
	f.Fuzz(func(t *testing.T, body []byte, pods string) {
		req := fuzzRequest(pods)
		res, err := detectAnswer(t, b, "application/json", body, req)
		checkAnswer(t, &req, res, err, len(body))
		for _, a := range res.Anomalies {
			if !(a.Score > 0.5 && a.Score <= 1) {
				t.Fatalf("pod %q: bad ratio %v", a.Pod, a.Score)
			}
		}
	})
}

// FuzzContinuousAnswer: continuousValueDeviation on any Prometheus answer. A flagged pod's score is its
// deviation |1 − value|, above maxDeviationPercent (default 75%).
func FuzzContinuousAnswer(f *testing.F) {
	b := &v1alpha1.BreakerStrategy{Name: "b", ContinuousValueDeviation: &v1alpha1.ContinuousValueDeviation{
		PrometheusService: "prometheus:9090", PromQL: "x", PodNameKey: "pod",
	}}
	f.Fuzz(func(t *testing.T, body []byte, pods string) {
		req := fuzzRequest(pods)
		res, err := detectAnswer(t, b, "application/json", body, req)
		checkAnswer(t, &req, res, err, len(body))
		for _, a := range res.Anomalies {
			if !(a.Score > 0.75) {
				t.Fatalf("pod %q: deviation %v", a.Pod, a.Score)
			}
		}
	})
}

// FuzzPeerAnswer: peerOutlier on any Prometheus answer, direction both. A flagged pod's score is above the
// threshold (default 3).
func FuzzPeerAnswer(f *testing.F) {
	b := &v1alpha1.BreakerStrategy{Name: "b", PeerOutlier: &v1alpha1.PeerOutlier{
		PrometheusService: "prometheus:9090", PromQL: "x", PodNameKey: "pod", Direction: v1alpha1.PeerDirectionBoth,
	}}
	f.Fuzz(func(t *testing.T, body []byte, pods string) {
		req := fuzzRequest(pods)
		res, err := detectAnswer(t, b, "application/json", body, req)
		checkAnswer(t, &req, res, err, len(body))
		for _, a := range res.Anomalies {
			if !(a.Score > 3) {
				t.Fatalf("pod %q: score %v", a.Pod, a.Score)
			}
		}
	})
}

// FuzzCustomAnswer: customService on any answer, JSON or YAML, PodList or {"pods": [...]}. A flagged pod's
// score is its rank from the end of the answer: whole, decreasing.
func FuzzCustomAnswer(f *testing.F) {
	b := &v1alpha1.BreakerStrategy{Name: "b", CustomService: &v1alpha1.CustomService{URL: "anomalies:8080/v1"}}
	f.Fuzz(func(t *testing.T, body []byte, pods string) {
		req := fuzzRequest(pods)
		res, err := detectAnswer(t, b, "application/json", body, req)
		checkAnswer(t, &req, res, err, len(body))
		for i, a := range res.Anomalies {
			if a.Score != math.Trunc(a.Score) || (i > 0 && a.Score >= res.Anomalies[i-1].Score) {
				t.Fatalf("pod %q: rank score %v after %v", a.Pod, a.Score, res.Anomalies[max(i-1, 0)].Score)
			}
		}
	})
}

// FuzzPeerStatistics checks the median, the MAD and the judgement of peerOutlier on any values (8 bytes
// each, NaN and ±Inf included) and settings: the median and the MAD are medians (at least half of the values
// on each side), and a flagged pod lies beyond the threshold and both minimum deviations, on the side the
// direction names.
func FuzzPeerStatistics(f *testing.F) {
	f.Fuzz(func(t *testing.T, raw []byte, threshold, minDeviation, minAbsolute float64, direction uint8) {
		var values []float64
		for len(raw) >= 8 && len(values) < 1000 {
			values = append(values, math.Float64frombits(binary.LittleEndian.Uint64(raw)))
			raw = raw[8:]
		}
		a := &peerAnalyzer{
			podNameKey:   "pod",
			direction:    []v1alpha1.PeerDirection{v1alpha1.PeerDirectionHigh, v1alpha1.PeerDirectionLow, v1alpha1.PeerDirectionBoth}[direction%3],
			threshold:    threshold,
			minDeviation: minDeviation,
			minAbsolute:  minAbsolute,
		}
		// The settings newPeerAnalyzer lets through.
		if !(a.threshold > 0) || math.IsInf(a.threshold, 0) || !(a.minDeviation >= 0) || math.IsInf(a.minDeviation, 0) ||
			!(a.minAbsolute >= 0) || math.IsInf(a.minAbsolute, 0) {
			t.Skip()
		}

		// The reference, as analyze takes it: NaN left out.
		var peers []float64
		for _, x := range values {
			if !math.IsNaN(x) {
				peers = append(peers, x)
			}
		}
		median, mad, ok := medianAndMAD(append([]float64(nil), peers...))
		if ok {
			checkMedian(t, "median", peers, median)
			deviations := make([]float64, len(peers))
			for i, x := range peers {
				deviations[i] = math.Abs(x - median)
			}
			if !(mad >= 0) {
				t.Fatalf("MAD %v", mad)
			}
			checkMedian(t, "MAD", deviations, mad)
		}

		v := make(model.Vector, len(values))
		req := Request{Pods: make(map[string]struct{}, len(values))}
		for i, x := range values {
			pod := "p" + strconv.Itoa(i)
			v[i] = &model.Sample{Metric: model.Metric{"pod": model.LabelValue(pod)}, Value: model.SampleValue(x)}
			req.Pods[pod] = struct{}{}
		}
		res, err := a.analyze(v, &req)
		if err != nil {
			t.Fatalf("analyze() error = %v", err)
		}
		checkAnswer(t, &req, res, nil, len(values))
		if res.NoData != !ok {
			t.Fatalf("NoData %v with a reference %v (median %v, MAD %v)", res.NoData, ok, median, mad)
		}
		for _, an := range res.Anomalies {
			x := values[mustAtoi(t, an.Pod[1:])]
			deviation := math.Abs(x - median)
			switch {
			case a.direction == v1alpha1.PeerDirectionHigh && !(x > median), a.direction == v1alpha1.PeerDirectionLow && !(x < median):
				t.Fatalf("%v flagged in direction %s from the median %v", x, a.direction, median)
			case !(an.Score > a.threshold):
				t.Fatalf("%v flagged with score %v, threshold %v", x, an.Score, a.threshold)
			case !(deviation > a.minAbsolute) && a.minAbsolute > 0, !fartherThan(x, median, a.minDeviation):
				t.Fatalf("%v flagged %v from the median %v", x, deviation, median)
			}
		}
	})
}

// fartherThan reports whether |x − m| > share × |m|, exactly: in big floats, which do not overflow. m is
// finite.
func fartherThan(x, m, share float64) bool {
	if math.IsInf(x, 0) {
		return true
	}
	d := new(big.Float).Sub(big.NewFloat(x), big.NewFloat(m))
	limit := new(big.Float).Mul(big.NewFloat(share), big.NewFloat(math.Abs(m)))
	return d.Abs(d).Cmp(limit) > 0
}

// checkMedian fails unless m lies within xs and at least half of xs are on each side of it.
func checkMedian(t *testing.T, what string, xs []float64, m float64) {
	t.Helper()
	below, above := 0, 0
	for _, x := range xs {
		if x <= m {
			below++
		}
		if x >= m {
			above++
		}
	}
	if 2*below < len(xs) || 2*above < len(xs) {
		t.Fatalf("%s %v of %v: %d values at or below it, %d at or above", what, m, xs, below, above)
	}
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	i, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return i
}
