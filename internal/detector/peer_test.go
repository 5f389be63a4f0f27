package detector

import (
	"context"
	"math"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/common/model"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/kubervisor/kubervisor/api/v1alpha1"
)

const peerPromQL = `avg by (pod) (rate(price_quoted_sum[1m]) / rate(price_quoted_count[1m]))`

// The values of these tests are chosen so that every median and MAD is exact in binary; z computes the
// expected score at run time, as the detector does (Go would fold a constant expression exactly).
func z(deviation, mad float64) float64 { return deviation / (1.4826 * mad) }

func TestPeerOutlier(t *testing.T) {
	s := func(value, pod string) string { return promSample(value, "pod", pod) }
	inf := math.Inf(1)
	// Sorted 0, 10, 10.25, 10.5, 20: median 10.25, deviations 10.25, 0.25, 0, 0.25, 9.75, MAD 0.25.
	lowAndHigh := promVector(s("10", "a"), s("10.25", "b"), s("10.5", "c"), s("0", "d"), s("20", "e"))
	// Sorted 6, 9.5, 10, 10.5, 14: median 10, deviations 4, 0.5, 0, 0.5, 4, MAD 0.5: 6 and 14 both score
	// 5.396.
	symmetric := promVector(s("14", "a"), s("9.5", "e"), s("10", "c"), s("10.5", "d"), s("6", "b"))
	// Sorted 10, 10, 10, 10.5, 12: median 10, deviations 0, 0, 0, 0.5, 2, MAD 0. 10.5 is 5% away, 12 20%.
	agreeing := promVector(s("10", "a"), s("10", "b"), s("10", "c"), s("10.5", "d"), s("12", "e"))
	// Sorted 99.5, 100, 100.25, 100.5, 103: median 100.25, MAD 0.25: 103 scores 7.42 but is 2.7% away.
	tight := promVector(s("100", "a"), s("100.5", "b"), s("99.5", "c"), s("100.25", "d"), s("103", "e"))

	tests := map[string]struct {
		mutate    func(*v1alpha1.PeerOutlier) // applied to a spec with defaults
		pods      []string
		inTraffic []string // nil: Request.InTraffic is nil, every managed pod is in traffic
		body      string
		want      Result
		wantErr   []string
	}{
		// The KubeCon pricer: one pod of four answers 0, the others about 10. Sorted 0, 10, 10.25, 10.5:
		// median 10.125, absolute deviations 10.125, 0.125, 0.125, 0.375, MAD 0.25. The healthy pods score
		// 0.34 and 1.01; the faulty one 27.3. TestPeerOutlierAgainstTheMean shows what a mean does instead.
		"the KubeCon pricer: only the pod answering 0 is flagged": {
			mutate: func(p *v1alpha1.PeerOutlier) { p.Direction = v1alpha1.PeerDirectionLow },
			pods:   []string{"pricer-a", "pricer-b", "pricer-c", "pricer-d"},
			body:   promVector(s("10", "pricer-a"), s("10.25", "pricer-b"), s("10.5", "pricer-c"), s("0", "pricer-d")),
			want: Result{Anomalies: []Anomaly{
				{Pod: "pricer-d", Score: z(10.125, 0.25), Reason: "value 0 is 27.317 MADs below the median 10.125 (threshold 3)"},
			}},
		},
		"direction high (the default) flags only the value above": {
			pods: []string{"a", "b", "c", "d", "e"},
			body: lowAndHigh,
			want: Result{Anomalies: []Anomaly{
				{Pod: "e", Score: z(9.75, 0.25), Reason: "value 20 is 26.305 MADs above the median 10.25 (threshold 3)"},
			}},
		},
		"direction low flags only the value below": {
			mutate: func(p *v1alpha1.PeerOutlier) { p.Direction = v1alpha1.PeerDirectionLow },
			pods:   []string{"a", "b", "c", "d", "e"},
			body:   lowAndHigh,
			want: Result{Anomalies: []Anomaly{
				{Pod: "d", Score: z(10.25, 0.25), Reason: "value 0 is 27.654 MADs below the median 10.25 (threshold 3)"},
			}},
		},
		"direction both flags both, worst first": {
			mutate: func(p *v1alpha1.PeerOutlier) { p.Direction = v1alpha1.PeerDirectionBoth },
			pods:   []string{"a", "b", "c", "d", "e"},
			body:   lowAndHigh,
			want: Result{Anomalies: []Anomaly{
				{Pod: "d", Score: z(10.25, 0.25), Reason: "value 0 is 27.654 MADs below the median 10.25 (threshold 3)"},
				{Pod: "e", Score: z(9.75, 0.25), Reason: "value 20 is 26.305 MADs above the median 10.25 (threshold 3)"},
			}},
		},
		"equal scores are ranked by name": {
			mutate: func(p *v1alpha1.PeerOutlier) { p.Direction = v1alpha1.PeerDirectionBoth },
			pods:   []string{"a", "b", "c", "d", "e"},
			body:   symmetric,
			want: Result{Anomalies: []Anomaly{
				{Pod: "a", Score: z(4, 0.5), Reason: "value 14 is 5.396 MADs above the median 10 (threshold 3)"},
				{Pod: "b", Score: z(4, 0.5), Reason: "value 6 is 5.396 MADs below the median 10 (threshold 3)"},
			}},
		},
		"a threshold given as a decimal": {
			mutate: func(p *v1alpha1.PeerOutlier) {
				p.Direction, p.Threshold = v1alpha1.PeerDirectionBoth, new(resource.MustParse("5.4"))
			},
			pods: []string{"a", "b", "c", "d", "e"},
			body: symmetric,
			want: Result{},
		},
		"a threshold under the scores": {
			mutate: func(p *v1alpha1.PeerOutlier) {
				p.Direction, p.Threshold = v1alpha1.PeerDirectionHigh, new(resource.MustParse("0.5"))
			},
			pods: []string{"a", "b", "c", "d", "e"},
			body: symmetric,
			// 10.5 scores 0.674 > 0.5 but is 5% from the median, under minDeviationPercent 10.
			want: Result{Anomalies: []Anomaly{
				{Pod: "a", Score: z(4, 0.5), Reason: "value 14 is 5.396 MADs above the median 10 (threshold 0.5)"},
			}},
		},
		"MAD 0: any value beyond the minimum deviation scores +Inf": {
			pods: []string{"a", "b", "c", "d", "e"},
			body: agreeing,
			want: Result{Anomalies: []Anomaly{
				{Pod: "e", Score: inf, Reason: "value 12 is +Inf MADs above the median 10 (MAD 0, threshold 3)"},
			}},
		},
		"MAD 0 and no minimum deviation: +Inf scores ranked by deviation": {
			mutate: func(p *v1alpha1.PeerOutlier) { p.MinDeviationPercent = new(int32(0)) },
			pods:   []string{"a", "b", "c", "d", "e"},
			body:   agreeing,
			want: Result{Anomalies: []Anomaly{
				{Pod: "e", Score: inf, Reason: "value 12 is +Inf MADs above the median 10 (MAD 0, threshold 3)"},
				{Pod: "d", Score: inf, Reason: "value 10.5 is +Inf MADs above the median 10 (MAD 0, threshold 3)"},
			}},
		},
		"a median of 0 (an error rate): a value beyond minAbsoluteDeviation (default 0.001) is anomalous": {
			pods: []string{"a", "b", "c", "d"},
			body: promVector(s("0", "a"), s("0", "b"), s("0", "c"), s("0.02", "d")),
			want: Result{Anomalies: []Anomaly{
				{Pod: "d", Score: inf, Reason: "value 0.02 is +Inf MADs above the median 0 (MAD 0, threshold 3)"},
			}},
		},
		// The MAD and minDeviationPercent's share of the median are both 0: without minAbsoluteDeviation the
		// tiny value would score +Inf and be ejected.
		"a median of 0: a value within minAbsoluteDeviation (default 0.001) is not anomalous": {
			pods: []string{"a", "b", "c", "d"},
			body: promVector(s("0", "a"), s("0", "b"), s("0", "c"), s("0.0005", "d")),
			want: Result{},
		},
		// One error in a 5-minute window, as a rate: 1/300 per second.
		"a median of 0: one error is not anomalous under a minAbsoluteDeviation set for the metric": {
			mutate: func(p *v1alpha1.PeerOutlier) { p.MinAbsoluteDeviation = new(resource.MustParse("0.05")) },
			pods:   []string{"a", "b", "c", "d", "e"},
			body:   promVector(s("0", "a"), s("0", "b"), s("0", "c"), s("0.0033333333333333335", "d"), s("0.05", "e")),
			want:   Result{},
		},
		"a median of 0: a pod far above minAbsoluteDeviation is anomalous": {
			mutate: func(p *v1alpha1.PeerOutlier) { p.MinAbsoluteDeviation = new(resource.MustParse("0.05")) },
			pods:   []string{"a", "b", "c", "d", "e"},
			body:   promVector(s("0", "a"), s("0", "b"), s("0", "c"), s("0.0033333333333333335", "d"), s("2.5", "e")),
			want: Result{Anomalies: []Anomaly{
				{Pod: "e", Score: inf, Reason: "value 2.5 is +Inf MADs above the median 0 (MAD 0, threshold 3)"},
			}},
		},
		"minAbsoluteDeviation 0 is off: any value above a median of 0 is anomalous": {
			mutate: func(p *v1alpha1.PeerOutlier) { p.MinAbsoluteDeviation = new(resource.MustParse("0")) },
			pods:   []string{"a", "b", "c", "d"},
			body:   promVector(s("0", "a"), s("0", "b"), s("0", "c"), s("1e-12", "d")),
			want: Result{Anomalies: []Anomaly{
				{Pod: "d", Score: inf, Reason: "value 0 is +Inf MADs above the median 0 (MAD 0, threshold 3)"},
			}},
		},
		// The median is 1.7e308 and the MAD 0; -1.7e308 lies 3.4e308 away, more than the largest float64: twice
		// the median, not an infinite share of it, and under minDeviationPercent 300.
		"values more than the largest float64 apart are a finite share of the median": {
			mutate: func(p *v1alpha1.PeerOutlier) {
				p.Direction, p.MinDeviationPercent = v1alpha1.PeerDirectionBoth, new(int32(300))
			},
			pods: []string{"a", "b", "c"},
			body: promVector(s("1.7e308", "a"), s("-1.7e308", "b"), s("1.7e308", "c")),
			want: Result{},
		},
		"values more than the largest float64 apart: beyond minDeviationPercent": {
			mutate: func(p *v1alpha1.PeerOutlier) {
				p.Direction, p.MinDeviationPercent = v1alpha1.PeerDirectionBoth, new(int32(150))
			},
			pods: []string{"a", "b", "c"},
			body: promVector(s("1.7e308", "a"), s("-1.7e308", "b"), s("1.7e308", "c")),
			want: Result{Anomalies: []Anomaly{
				{Pod: "b", Score: inf, Reason: "value -1.7e+308 is +Inf MADs below the median 1.7e+308 (MAD 0, threshold 3)"},
			}},
		},
		// lowAndHigh scores 20 at 26.3 MADs, 95% above the median 10.25: a floor of 10 keeps it, 9.75 away.
		"a deviation within minAbsoluteDeviation is not anomalous, whatever its score": {
			mutate: func(p *v1alpha1.PeerOutlier) { p.MinAbsoluteDeviation = new(resource.MustParse("10")) },
			pods:   []string{"a", "b", "c", "d", "e"},
			body:   lowAndHigh,
			want:   Result{},
		},
		"a deviation beyond minAbsoluteDeviation is judged on its score": {
			mutate: func(p *v1alpha1.PeerOutlier) { p.MinAbsoluteDeviation = new(resource.MustParse("9.5")) },
			pods:   []string{"a", "b", "c", "d", "e"},
			body:   lowAndHigh,
			want: Result{Anomalies: []Anomaly{
				{Pod: "e", Score: z(9.75, 0.25), Reason: "value 20 is 26.305 MADs above the median 10.25 (threshold 3)"},
			}},
		},
		"a tight fleet is not split on noise: minDeviationPercent": {
			pods: []string{"a", "b", "c", "d", "e"},
			body: tight,
			want: Result{},
		},
		"a smaller minDeviationPercent lets the same pod be flagged": {
			mutate: func(p *v1alpha1.PeerOutlier) { p.MinDeviationPercent = new(int32(2)) },
			pods:   []string{"a", "b", "c", "d", "e"},
			body:   tight,
			want: Result{Anomalies: []Anomaly{
				{Pod: "e", Score: z(2.75, 0.25), Reason: "value 103 is 7.419 MADs above the median 100.25 (threshold 3)"},
			}},
		},
		// NaN is left out: the reference is -Inf, 10, 10.25, 10.5, +Inf, median 10.25, deviations Inf, 0.25,
		// 0, 0.25, Inf, MAD 0.25.
		"NaN is ignored, ±Inf are values anomalous in their direction": {
			mutate: func(p *v1alpha1.PeerOutlier) { p.Direction = v1alpha1.PeerDirectionBoth },
			pods:   []string{"a", "b", "c", "d", "e", "f"},
			body:   promVector(s("10", "a"), s("10.25", "b"), s("10.5", "c"), s("NaN", "d"), s("-Inf", "e"), s("+Inf", "f")),
			want: Result{Anomalies: []Anomaly{
				{Pod: "e", Score: inf, Reason: "value -Inf is +Inf MADs below the median 10.25 (threshold 3)"},
				{Pod: "f", Score: inf, Reason: "value +Inf is +Inf MADs above the median 10.25 (threshold 3)"},
			}},
		},
		"-Inf is not anomalous in direction high": {
			pods: []string{"a", "b", "c", "d"},
			body: promVector(s("10", "a"), s("10.25", "b"), s("10.5", "c"), s("-Inf", "d")),
			want: Result{},
		},
		"half of the pods in traffic at +Inf is NoData: the median is infinite": {
			pods: []string{"a", "b", "c", "d"},
			body: promVector(s("10", "a"), s("10.5", "b"), s("+Inf", "c"), s("+Inf", "d")),
			want: Result{NoData: true},
		},
		"-Inf and +Inf around two values is NoData: the MAD is infinite": {
			mutate: func(p *v1alpha1.PeerOutlier) { p.Direction = v1alpha1.PeerDirectionBoth },
			pods:   []string{"a", "b", "c", "d"},
			body:   promVector(s("10", "a"), s("10.5", "b"), s("-Inf", "c"), s("+Inf", "d")),
			want:   Result{NoData: true},
		},
		// In traffic: a, b, c, d; sorted 10, 10.25, 10.5, 10.75, median 10.375, MAD 0.25. e and f are out of
		// traffic and do not move the median (with them it would be 10.25).
		"pods out of traffic are judged against the median of those in traffic": {
			mutate:    func(p *v1alpha1.PeerOutlier) { p.Direction = v1alpha1.PeerDirectionLow },
			pods:      []string{"a", "b", "c", "d", "e", "f"},
			inTraffic: []string{"a", "b", "c", "d", "not-managed"},
			body:      promVector(s("10", "a"), s("10.25", "b"), s("10.5", "c"), s("10.75", "d"), s("0", "e"), s("0.5", "f")),
			want: Result{Anomalies: []Anomaly{
				{Pod: "e", Score: z(10.375, 0.25), Reason: "value 0 is 27.991 MADs below the median 10.375 (threshold 3)"},
				{Pod: "f", Score: z(9.875, 0.25), Reason: "value 0.5 is 26.642 MADs below the median 10.375 (threshold 3)"},
			}},
		},
		"fewer than 3 pods in traffic with a value is NoData, whatever the others say": {
			mutate:    func(p *v1alpha1.PeerOutlier) { p.Direction = v1alpha1.PeerDirectionLow },
			pods:      []string{"a", "b", "c", "d", "e"},
			inTraffic: []string{"a", "b", "c"},
			body:      promVector(s("10", "a"), s("10.5", "b"), s("NaN", "c"), s("0", "d"), s("0", "e")),
			want:      Result{NoData: true},
		},
		"no pod in traffic is NoData": {
			pods:      []string{"a", "b", "c"},
			inTraffic: []string{},
			body:      promVector(s("10", "a"), s("10.5", "b"), s("30", "c")),
			want:      Result{NoData: true},
		},
		"two pods is NoData": {
			pods: []string{"a", "b"},
			body: promVector(s("10", "a"), s("0", "b")),
			want: Result{NoData: true},
		},
		"only NaN is NoData": {
			pods: []string{"a", "b", "c"},
			body: promVector(s("NaN", "a"), s("NaN", "b"), s("NaN", "c")),
			want: Result{NoData: true},
		},
		"an empty vector is NoData": {
			pods: []string{"a"},
			body: promVector(),
			want: Result{NoData: true},
		},
		"samples about unmanaged pods are counted and make no part of the reference": {
			pods: []string{"a", "b", "c"},
			body: promVector(s("10", "a"), s("10.25", "b"), s("10.5", "c"), s("1000", "other-1"), s("2000", "other-2")),
			want: Result{Ignored: 2},
		},
		"a vector about no managed pod is NoData": {
			pods: []string{"a"},
			body: promVector(s("9", "other-1"), s("10", "other-2"), s("11", "other-3")),
			want: Result{NoData: true, Ignored: 3},
		},
		"several series for one pod are ambiguous": {
			pods:    []string{"a"},
			body:    promVector(promSample("1", "pod", "a", "instance", "x"), promSample("5", "pod", "a", "instance", "y")),
			wantErr: []string{`pod "a" appears in several series (one is {instance="y", pod="a"}): the query must return one value per pod`},
		},
		"a scalar is an error": {
			pods:    []string{"a"},
			body:    promScalar,
			wantErr: []string{`peerOutlier promQL`, `returned a scalar, expected an instant vector with one raw value per pod (not divided by the fleet's)`},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			srv := newFakeServer(t, "/api/v1/query", http.StatusOK, "application/json", tc.body, 0)
			p := &v1alpha1.PeerOutlier{PrometheusService: srv.hostPort(), PromQL: peerPromQL, PodNameKey: "pod"}
			if tc.mutate != nil {
				tc.mutate(p)
			}
			det, err := New(&v1alpha1.BreakerStrategy{Name: "price", PeerOutlier: p}, Options{Timeout: 3 * time.Second, Now: func() time.Time { return fixedNow }})
			if err != nil {
				t.Fatalf("New() error = %v", err)
			}
			req := Request{Namespace: "shop", KubervisorService: "pricer", Breaker: "price", Pods: podSet(tc.pods...)}
			if tc.inTraffic != nil {
				req.InTraffic = podSet(tc.inTraffic...)
			}
			got, err := det.Detect(context.Background(), req)
			checkErr(t, err, tc.wantErr)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Detect() result mismatch (-want +got):\n%s", diff)
			}
			checkPromRequest(t, srv, "", peerPromQL, "3s")
		})
	}
}

// TestPeerOutlierAgainstTheMean is the case for the median. The KubeCon pricer fleet of TestPeerOutlier
// (prices 10, 10.25, 10.5 and a faulty 0) through the 2018 demo's mean-normalised query, each price divided
// by the fleet's average 7.6875, reads 1.301, 1.333, 1.366 and 0: the pod answering 0 pulls the mean
// down by a quarter, so the healthy pods deviate by 30% to 37% and continuousValueDeviation at 30% (the
// sample's setting) flags all four, while peerOutlier flags only the faulty one.
func TestPeerOutlierAgainstTheMean(t *testing.T) {
	prices := map[string]float64{"pricer-a": 10, "pricer-b": 10.25, "pricer-c": 10.5, "pricer-d": 0}
	req := &Request{Pods: podSet("pricer-a", "pricer-b", "pricer-c", "pricer-d")}
	var raw, normalised model.Vector
	for pod, price := range prices {
		m := model.Metric{"pod": model.LabelValue(pod)}
		raw = append(raw, &model.Sample{Metric: m, Value: model.SampleValue(price)})
		normalised = append(normalised, &model.Sample{Metric: m, Value: model.SampleValue(price / 7.6875)})
	}
	podsOf := func(res Result) []string {
		var pods []string
		for _, a := range res.Anomalies {
			pods = append(pods, a.Pod)
		}
		return pods
	}

	continuous, err := newContinuousAnalyzer(&v1alpha1.ContinuousValueDeviation{PodNameKey: "pod", MaxDeviationPercent: new(int32(30))})
	if err != nil {
		t.Fatal(err)
	}
	res, err := continuous.analyze(normalised, req)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"pricer-d", "pricer-c", "pricer-b", "pricer-a"}, podsOf(res)); diff != "" {
		t.Errorf("mean-normalised: flagged pods (-want +got):\n%s", diff)
	}

	peer, err := newPeerAnalyzer(&v1alpha1.PeerOutlier{PodNameKey: "pod", Direction: v1alpha1.PeerDirectionBoth})
	if err != nil {
		t.Fatal(err)
	}
	res, err = peer.analyze(raw, req)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"pricer-d"}, podsOf(res)); diff != "" {
		t.Errorf("peerOutlier: flagged pods (-want +got):\n%s", diff)
	}
}

// TestMedianOf: the median of an even number of values is the midpoint of the two middle ones, within them
// even where halving rounds (subnormal numbers) or their difference overflows.
func TestMedianOf(t *testing.T) {
	// The smallest subnormal numbers with an odd mantissa: halving either rounds.
	tiny, tiny3 := math.Float64frombits(1), math.Float64frombits(3)
	tests := []struct {
		xs   []float64
		want float64
	}{
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 2, 3}, 2.5},
		{[]float64{tiny, tiny}, tiny},
		{[]float64{tiny3, tiny3, tiny3, 1}, tiny3},
		{[]float64{-math.MaxFloat64, math.MaxFloat64}, 0},
		{[]float64{math.Inf(1), math.Inf(1)}, math.Inf(1)},
		{[]float64{10, math.Inf(1)}, math.Inf(1)},
	}
	for _, tc := range tests {
		in := slices.Clone(tc.xs)
		if got := medianOf(in); got != tc.want {
			t.Errorf("medianOf(%v) = %v, want %v", tc.xs, got, tc.want)
		}
	}
	if got := medianOf([]float64{math.Inf(-1), math.Inf(1)}); !math.IsNaN(got) {
		t.Errorf("medianOf(-Inf, +Inf) = %v, want NaN (no median: NoData)", got)
	}
}
