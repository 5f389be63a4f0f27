package detector

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/kubervisor/kubervisor/api/v1alpha1"
)

// benchPodCounts are the fleet sizes benchmarked; growth from one to the next should be linear.
var benchPodCounts = []int{1_000, 10_000, 100_000}

func benchPodName(i int) string { return fmt.Sprintf("pricer-5d8f7b9c4-%06d", i) }

// benchSeries is one series of a benchmark vector before it is built.
type benchSeries struct {
	pod   int
	code  string // "" for continuous
	value float64
}

// buildVector allocates the samples in a random but fixed order, each with its own label strings, as
// client_golang's decoder does from Prometheus's answer: Prometheus does not group an aggregation's output
// by pod, and samples allocated in pod order would flatter the CPU caches.
func buildVector(series []benchSeries) model.Vector {
	r := rand.New(rand.NewPCG(1, 2))
	r.Shuffle(len(series), func(i, j int) { series[i], series[j] = series[j], series[i] })
	v := make(model.Vector, len(series))
	for i, s := range series {
		m := model.Metric{"pod": model.LabelValue(benchPodName(s.pod))}
		if s.code != "" {
			m["code"] = model.LabelValue(s.code)
		}
		v[i] = &model.Sample{Metric: m, Value: model.SampleValue(s.value)}
	}
	return v
}

func benchManaged(pods int) map[string]struct{} {
	managed := make(map[string]struct{}, pods)
	for i := range pods {
		managed[benchPodName(i)] = struct{}{}
	}
	return managed
}

// discreteBenchVector has two series per pod (codes 200 and 500); one pod in ten is anomalous.
func discreteBenchVector(pods int) (model.Vector, map[string]struct{}) {
	series := make([]benchSeries, 0, 2*pods)
	for i := range pods {
		good, bad := 60.5, 1.0
		if i%10 == 0 {
			good, bad = 10, 40
		}
		series = append(series, benchSeries{pod: i, code: "200", value: good}, benchSeries{pod: i, code: "500", value: bad})
	}
	return buildVector(series), benchManaged(pods)
}

// perPodBenchVector has one series per pod, within 6% above base; one pod in ten reads outlier.
func perPodBenchVector(pods int, base, outlier float64) model.Vector {
	series := make([]benchSeries, 0, pods)
	for i := range pods {
		value := base * (1 + float64(i%7)/100)
		if i%10 == 0 {
			value = outlier
		}
		series = append(series, benchSeries{pod: i, value: value})
	}
	return buildVector(series)
}

// continuousBenchVector has one value per pod, the fleet's average near 1; one pod in ten deviates.
func continuousBenchVector(pods int) (model.Vector, map[string]struct{}) {
	return perPodBenchVector(pods, 1, 2.5), benchManaged(pods)
}

// peerBenchVector has one raw latency per pod, about 100ms; one pod in ten answers in 500ms. Every pod is
// in traffic, given as its own set as the controller does.
func peerBenchVector(pods int) (model.Vector, *Request) {
	return perPodBenchVector(pods, 0.1, 0.5), &Request{Pods: benchManaged(pods), InTraffic: benchManaged(pods)}
}

// benchAnalyze runs a's analysis over the vector of each fleet size, which must flag one pod in ten.
func benchAnalyze(b *testing.B, a analyzer, vector func(pods int) (model.Vector, *Request)) {
	for _, pods := range benchPodCounts {
		v, req := vector(pods)
		b.Run(fmt.Sprintf("pods=%d/series=%d", pods, len(v)), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				res, err := a.analyze(v, req)
				if err != nil || len(res.Anomalies) != pods/10 {
					b.Fatalf("analyze() = %d anomalies, %v; want %d", len(res.Anomalies), err, pods/10)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(pods), "ns/pod")
		})
	}
}

// managedOnly makes a benchmark vector's managed pods a Request, as the discrete and continuous detectors
// are asked (they do not read InTraffic).
func managedOnly(vector func(pods int) (model.Vector, map[string]struct{})) func(pods int) (model.Vector, *Request) {
	return func(pods int) (model.Vector, *Request) {
		v, managed := vector(pods)
		return v, &Request{Pods: managed}
	}
}

func BenchmarkDiscreteAnalyze(b *testing.B) {
	a, err := newDiscreteAnalyzer(&v1alpha1.DiscreteValueOutOfList{Key: "code", PodNameKey: "pod", GoodValues: []string{"200", "204", "301", "302", "304"}})
	if err != nil {
		b.Fatal(err)
	}
	benchAnalyze(b, a, managedOnly(discreteBenchVector))
}

func BenchmarkContinuousAnalyze(b *testing.B) {
	a, err := newContinuousAnalyzer(&v1alpha1.ContinuousValueDeviation{PodNameKey: "pod"})
	if err != nil {
		b.Fatal(err)
	}
	benchAnalyze(b, a, managedOnly(continuousBenchVector))
}

func BenchmarkPeerOutlierAnalyze(b *testing.B) {
	a, err := newPeerAnalyzer(&v1alpha1.PeerOutlier{PodNameKey: "pod"})
	if err != nil {
		b.Fatal(err)
	}
	benchAnalyze(b, a, peerBenchVector)
}

// renderVector renders v as Prometheus's /api/v1/query answer.
func renderVector(v model.Vector) string {
	samples := make([]string, len(v))
	for i, s := range v {
		labels := make([]string, 0, 2*len(s.Metric))
		for k, val := range s.Metric {
			labels = append(labels, string(k), string(val))
		}
		samples[i] = promSample(strconv.FormatFloat(float64(s.Value), 'f', -1, 64), labels...)
	}
	return promVector(samples...)
}

// BenchmarkDetect measures one whole evaluation of 10k pods against a local Prometheus: HTTP round trip,
// client_golang's JSON decoding and the analysis.
func BenchmarkDetect(b *testing.B) {
	const pods = 10_000
	dv, managed := discreteBenchVector(pods)
	cv, _ := continuousBenchVector(pods)
	pv, _ := peerBenchVector(pods)
	cases := []struct {
		name    string
		body    string
		breaker func(address string) *v1alpha1.BreakerStrategy
	}{
		{
			name: fmt.Sprintf("discrete/pods=%d/series=%d", pods, len(dv)),
			body: renderVector(dv),
			breaker: func(address string) *v1alpha1.BreakerStrategy {
				return &v1alpha1.BreakerStrategy{Name: "b", DiscreteValueOutOfList: &v1alpha1.DiscreteValueOutOfList{
					PrometheusService: address, PromQL: discretePromQL, Key: "code", PodNameKey: "pod", GoodValues: []string{"200"},
				}}
			},
		},
		{
			name: fmt.Sprintf("continuous/pods=%d/series=%d", pods, len(cv)),
			body: renderVector(cv),
			breaker: func(address string) *v1alpha1.BreakerStrategy {
				return &v1alpha1.BreakerStrategy{Name: "b", ContinuousValueDeviation: &v1alpha1.ContinuousValueDeviation{
					PrometheusService: address, PromQL: continuousPromQL, PodNameKey: "pod",
				}}
			},
		},
		{
			name: fmt.Sprintf("peer/pods=%d/series=%d", pods, len(pv)),
			body: renderVector(pv),
			breaker: func(address string) *v1alpha1.BreakerStrategy {
				return &v1alpha1.BreakerStrategy{Name: "b", PeerOutlier: &v1alpha1.PeerOutlier{
					PrometheusService: address, PromQL: peerPromQL, PodNameKey: "pod",
				}}
			},
		},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			srv := newFakeServer(b, "/api/v1/query", http.StatusOK, "application/json", tc.body, 0)
			det, err := New(tc.breaker(srv.hostPort()), Options{Timeout: 10 * time.Second})
			if err != nil {
				b.Fatal(err)
			}
			req := Request{Namespace: "shop", KubervisorService: "pricer", Breaker: "b", Pods: managed}
			b.SetBytes(int64(len(tc.body)))
			b.ReportAllocs()
			for b.Loop() {
				res, err := det.Detect(context.Background(), req)
				if err != nil || len(res.Anomalies) != pods/10 {
					b.Fatalf("Detect() = %d anomalies, %v; want %d", len(res.Anomalies), err, pods/10)
				}
			}
			// The fake server records every request; drop them so memory stays flat across iterations.
			srv.mu.Lock()
			srv.requests = nil
			srv.mu.Unlock()
		})
	}
}
