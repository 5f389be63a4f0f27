package detector

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/common/model"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kubervisor/kubervisor/api/v1alpha1"
)

func TestNew(t *testing.T) {
	discrete := func(mutate func(*v1alpha1.DiscreteValueOutOfList)) *v1alpha1.BreakerStrategy {
		d := &v1alpha1.DiscreteValueOutOfList{PrometheusService: "prometheus.monitoring:9090", PromQL: "up", Key: "code", PodNameKey: "pod", GoodValues: []string{"200"}}
		if mutate != nil {
			mutate(d)
		}
		return &v1alpha1.BreakerStrategy{Name: "b", DiscreteValueOutOfList: d}
	}
	continuous := func(mutate func(*v1alpha1.ContinuousValueDeviation)) *v1alpha1.BreakerStrategy {
		c := &v1alpha1.ContinuousValueDeviation{PrometheusService: "https://prometheus.example.com/tenant-a", PromQL: "up", PodNameKey: "pod"}
		if mutate != nil {
			mutate(c)
		}
		return &v1alpha1.BreakerStrategy{Name: "b", ContinuousValueDeviation: c}
	}
	peer := func(mutate func(*v1alpha1.PeerOutlier)) *v1alpha1.BreakerStrategy {
		p := &v1alpha1.PeerOutlier{PrometheusService: "prometheus.monitoring:9090", PromQL: "up", PodNameKey: "pod"}
		if mutate != nil {
			mutate(p)
		}
		return &v1alpha1.BreakerStrategy{Name: "b", PeerOutlier: p}
	}
	custom := func(url string) *v1alpha1.BreakerStrategy {
		return &v1alpha1.BreakerStrategy{Name: "b", CustomService: &v1alpha1.CustomService{URL: url}}
	}

	tests := map[string]struct {
		breaker *v1alpha1.BreakerStrategy
		opts    Options
		wantErr string // "" when New must succeed
	}{
		"discrete with defaults":               {breaker: discrete(nil)},
		"discrete with an http URL and a path": {breaker: discrete(func(d *v1alpha1.DiscreteValueOutOfList) { d.PrometheusService = "http://thanos:10902/prefix" })},
		"continuous with an https URL":         {breaker: continuous(nil)},
		"peer outlier with defaults":           {breaker: peer(nil)},
		"peer outlier with every field": {breaker: peer(func(p *v1alpha1.PeerOutlier) {
			p.Direction, p.Threshold, p.MinDeviationPercent = v1alpha1.PeerDirectionBoth, new(resource.MustParse("2.5")), new(int32(0))
			p.MinAbsoluteDeviation = new(resource.MustParse("0.05"))
		})},
		"custom host:port/path":           {breaker: custom("anomalies.shop:8080/v1/pricer")},
		"custom host/path without a port": {breaker: custom("anomalies.shop/v1/pricer")},
		"custom https URL with a query":   {breaker: custom("https://anomalies.shop/v1?token=x")},
		"nil breaker":                     {wantErr: "nil breaker"},
		"no detector": {
			breaker: &v1alpha1.BreakerStrategy{Name: "b"},
			wantErr: `breaker "b": exactly one detector must be set (discreteValueOutOfList, continuousValueDeviation, peerOutlier or customService), found 0`,
		},
		"two detectors": {
			breaker: &v1alpha1.BreakerStrategy{Name: "b", CustomService: &v1alpha1.CustomService{URL: "x:1"}, ContinuousValueDeviation: continuous(nil).ContinuousValueDeviation},
			wantErr: "found 2",
		},
		"peer outlier and another detector": {
			breaker: &v1alpha1.BreakerStrategy{Name: "b", PeerOutlier: peer(nil).PeerOutlier, DiscreteValueOutOfList: discrete(nil).DiscreteValueOutOfList},
			wantErr: "found 2",
		},
		"peer outlier without podNameKey": {
			breaker: peer(func(p *v1alpha1.PeerOutlier) { p.PodNameKey = "" }),
			wantErr: `breaker "b": peerOutlier: podNameKey must be set`,
		},
		"peer outlier with an unknown direction": {
			breaker: peer(func(p *v1alpha1.PeerOutlier) { p.Direction = "sideways" }),
			wantErr: `breaker "b": peerOutlier: direction "sideways" is not high, low or both`,
		},
		"peer outlier with threshold 0": {
			breaker: peer(func(p *v1alpha1.PeerOutlier) { p.Threshold = new(resource.MustParse("0")) }),
			wantErr: `breaker "b": peerOutlier: threshold 0 is not a number more than 0`,
		},
		"peer outlier with a negative threshold": {
			breaker: peer(func(p *v1alpha1.PeerOutlier) { p.Threshold = new(resource.MustParse("-2")) }),
			wantErr: "threshold -2 is not a number more than 0",
		},
		"peer outlier with a negative minAbsoluteDeviation": {
			breaker: peer(func(p *v1alpha1.PeerOutlier) { p.MinAbsoluteDeviation = new(resource.MustParse("-0.5")) }),
			wantErr: `breaker "b": peerOutlier: minAbsoluteDeviation -500m is not a number of 0 or more`,
		},
		"peer outlier with a negative minDeviationPercent": {
			breaker: peer(func(p *v1alpha1.PeerOutlier) { p.MinDeviationPercent = new(int32(-1)) }),
			wantErr: "minDeviationPercent -1 is negative",
		},
		"peer outlier with an empty promQL": {
			breaker: peer(func(p *v1alpha1.PeerOutlier) { p.PromQL = "" }),
			wantErr: `breaker "b": peerOutlier: empty promQL`,
		},
		"both goodValues and badValues": {
			breaker: discrete(func(d *v1alpha1.DiscreteValueOutOfList) { d.BadValues = []string{"500"} }),
			wantErr: `breaker "b": discreteValueOutOfList: exactly one of goodValues or badValues must be set`,
		},
		"neither goodValues nor badValues": {
			breaker: discrete(func(d *v1alpha1.DiscreteValueOutOfList) { d.GoodValues = nil }),
			wantErr: "exactly one of goodValues or badValues must be set",
		},
		"key equal to podNameKey": {
			breaker: discrete(func(d *v1alpha1.DiscreteValueOutOfList) { d.Key = "pod" }),
			wantErr: `key and podNameKey are both "pod"`,
		},
		"tolerance above 100": {
			breaker: discrete(func(d *v1alpha1.DiscreteValueOutOfList) { d.Tolerance = new(int32(101)) }),
			wantErr: "tolerance 101 is not a percentage (0..100)",
		},
		"negative minActivity": {
			breaker: discrete(func(d *v1alpha1.DiscreteValueOutOfList) { d.MinActivity = new(int32(-1)) }),
			wantErr: "minActivity -1 is negative",
		},
		"empty promQL": {
			breaker: discrete(func(d *v1alpha1.DiscreteValueOutOfList) { d.PromQL = "" }),
			wantErr: `breaker "b": discreteValueOutOfList: empty promQL`,
		},
		"prometheusService with another scheme": {
			breaker: discrete(func(d *v1alpha1.DiscreteValueOutOfList) { d.PrometheusService = "ftp://prometheus:21" }),
			wantErr: `prometheusService: address "ftp://prometheus:21": scheme "ftp" is not http or https`,
		},
		"prometheusService without a host": {
			breaker: continuous(func(c *v1alpha1.ContinuousValueDeviation) { c.PrometheusService = "http:///api" }),
			wantErr: `address "http:///api": no host`,
		},
		"negative maxDeviationPercent": {
			breaker: continuous(func(c *v1alpha1.ContinuousValueDeviation) { c.MaxDeviationPercent = new(int32(-5)) }),
			wantErr: "maxDeviationPercent -5 is negative",
		},
		"custom URL that does not parse": {
			breaker: custom("http://[::1"),
			wantErr: `breaker "b": customService: url: address "http://[::1"`,
		},
		"empty custom URL": {
			breaker: custom(""),
			wantErr: "no address and no endpoint",
		},
		"negative timeout": {
			breaker: custom("x:1"),
			opts:    Options{Timeout: -time.Second},
			wantErr: "negative detector timeout -1s",
		},
		"no timeout and an unusable evaluationPeriod": {
			breaker: &v1alpha1.BreakerStrategy{Name: "b", EvaluationPeriod: new(intstr.FromString("soon")), CustomService: &v1alpha1.CustomService{URL: "x:1"}},
			wantErr: `breaker "b": evaluationPeriod: period "soon"`,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			det, err := New(tc.breaker, tc.opts)
			if tc.wantErr == "" {
				if err != nil || det == nil {
					t.Fatalf("New() = %v, %v; want a detector", det, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("New() error = nil, want one containing %q", tc.wantErr)
			}
			if got := err.Error(); !strings.Contains(got, tc.wantErr) {
				t.Errorf("New() error = %q, want it to contain %q", got, tc.wantErr)
			}
		})
	}
}

// TestNewTimeoutDefaultsToEvaluationPeriod checks that a query never outlives the evaluation period it
// serves when the caller sets no timeout: the period is what Prometheus receives as its timeout.
func TestNewTimeoutDefaultsToEvaluationPeriod(t *testing.T) {
	tests := map[string]struct {
		period *intstr.IntOrString
		want   string
	}{
		"default evaluation period": {period: nil, want: "5s"},
		"integer seconds":           {period: new(intstr.FromInt32(12)), want: "12s"},
		"duration string":           {period: new(intstr.FromString("750ms")), want: "750ms"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			srv := newFakeServer(t, "/api/v1/query", 200, "application/json", promVector(), 0)
			det, err := New(&v1alpha1.BreakerStrategy{Name: "b", EvaluationPeriod: tc.period, ContinuousValueDeviation: &v1alpha1.ContinuousValueDeviation{
				PrometheusService: srv.URL, PromQL: "up", PodNameKey: "pod",
			}}, Options{Now: func() time.Time { return fixedNow }})
			if err != nil {
				t.Fatalf("New() error = %v", err)
			}
			if _, err := det.Detect(context.Background(), Request{}); err != nil {
				t.Fatalf("Detect() error = %v", err)
			}
			checkPromRequest(t, srv, "", "up", tc.want)
		})
	}
}

func TestServerTimeout(t *testing.T) {
	tests := map[string]struct {
		limit    time.Duration
		deadline time.Duration // 0 is no ctx deadline
		want     time.Duration
	}{
		"whole seconds are kept":                       {limit: 5 * time.Second, want: 5 * time.Second},
		"fractions of a second above 1s are truncated": {limit: 1500 * time.Millisecond, want: time.Second},
		"minutes and seconds":                          {limit: 90 * time.Second, want: 90 * time.Second},
		"milliseconds under a second":                  {limit: 750*time.Millisecond + 300*time.Microsecond, want: 750 * time.Millisecond},
		"under a millisecond is no timeout":            {limit: 300 * time.Microsecond, want: 0},
		"a sooner ctx deadline wins":                   {limit: time.Hour, deadline: 3500 * time.Millisecond, want: 3 * time.Second},
		"a later ctx deadline does not":                {limit: 2 * time.Second, deadline: time.Hour, want: 2 * time.Second},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			if tc.deadline > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.deadline)
				defer cancel()
			}
			if got := serverTimeout(ctx, tc.limit); got != tc.want {
				t.Errorf("serverTimeout(%s) = %s, want %s", tc.limit, got, tc.want)
			}
		})
	}
}

func TestParseAddress(t *testing.T) {
	tests := map[string]string{
		"prometheus:9090":               "http://prometheus:9090",
		"anomalies.shop:8080/v1?x=1":    "http://anomalies.shop:8080/v1?x=1",
		"http://prometheus:9090":        "http://prometheus:9090",
		"https://prom.example.com/base": "https://prom.example.com/base",
		" prometheus:9090 ":             "http://prometheus:9090",
	}
	for in, want := range tests {
		t.Run(in, func(t *testing.T) {
			u, err := parseAddress(in)
			if err != nil {
				t.Fatalf("parseAddress(%q) error = %v", in, err)
			}
			if diff := cmp.Diff(want, u.String()); diff != "" {
				t.Errorf("parseAddress(%q) (-want +got):\n%s", in, diff)
			}
		})
	}
}

func TestAppendNumber(t *testing.T) {
	tests := map[float64]string{0.4: "0.4", 130: "130", 2.0 / 3: "0.667", 0.0004: "0", 1e6: "1000000", math.Inf(1): "+Inf", math.Inf(-1): "-Inf",
		// Beyond a float64's decimals, an exponent: neither 309 digits nor +Inf.
		9999999999999998: "9999999999999998", 1e16: "1e+16", -6.02e23: "-6.02e+23", 1e306: "1e+306", math.MaxFloat64: "1.7976931348623157e+308"}
	for in, want := range tests {
		if got := string(appendNumber([]byte("x="), in)); got != "x="+want {
			t.Errorf("appendNumber(%v) = %q, want %q", in, got, "x="+want)
		}
	}
}

// TestUnreachable checks that a detector whose endpoint refuses connections fails with the endpoint and the
// breaker in the message, for both kinds of HTTP detector.
func TestUnreachable(t *testing.T) {
	srv := newFakeServer(t, "/", 200, "application/json", "", 0)
	address := srv.hostPort()
	srv.Close() // nothing listens there any more

	tests := map[string]*v1alpha1.BreakerStrategy{
		"prometheus": {Name: "b", ContinuousValueDeviation: &v1alpha1.ContinuousValueDeviation{PrometheusService: address, PromQL: "up", PodNameKey: "pod"}},
		"custom":     {Name: "b", CustomService: &v1alpha1.CustomService{URL: address + "/anomalies"}},
	}
	for name, b := range tests {
		t.Run(name, func(t *testing.T) {
			det, err := New(b, Options{Timeout: time.Second})
			if err != nil {
				t.Fatalf("New() error = %v", err)
			}
			_, err = det.Detect(context.Background(), Request{Pods: podSet("a")})
			checkErr(t, err, []string{"at " + address, `for breaker "b"`, "connection refused"})
		})
	}
}

// TestOutOfTrafficOnly: an answer whose usable samples are all about pods out of traffic (stale series of
// ejected pods) is not NoData but says OutOfTrafficOnly, which onNoData: error treats as no data (SPEC §5
// step 9); one sample about a pod in traffic clears it, and nil InTraffic means every pod serves.
func TestOutOfTrafficOnly(t *testing.T) {
	discrete, err := newDiscreteAnalyzer(&v1alpha1.DiscreteValueOutOfList{Key: "code", PodNameKey: "pod", GoodValues: []string{"200"}})
	if err != nil {
		t.Fatal(err)
	}
	continuous, err := newContinuousAnalyzer(&v1alpha1.ContinuousValueDeviation{PodNameKey: "pod"})
	if err != nil {
		t.Fatal(err)
	}
	peer, err := newPeerAnalyzer(&v1alpha1.PeerOutlier{PodNameKey: "pod", Direction: v1alpha1.PeerDirectionBoth})
	if err != nil {
		t.Fatal(err)
	}
	vector := func(pods ...string) model.Vector {
		var v model.Vector
		for _, p := range pods {
			v = append(v, &model.Sample{Metric: model.Metric{"pod": model.LabelValue(p), "code": "200"}, Value: 1})
		}
		return v
	}
	pods := podSet("a", "b", "c", "d")
	tests := map[string]struct {
		samples   []string
		inTraffic map[string]struct{}
		wantOnly  bool
		wantNo    bool
	}{
		"samples about ejected pods only":        {samples: []string{"c", "d"}, inTraffic: podSet("a", "b"), wantOnly: true},
		"one sample about a pod in traffic":      {samples: []string{"a", "c", "d"}, inTraffic: podSet("a", "b")},
		"no InTraffic: every pod serves":         {samples: []string{"c", "d"}},
		"no sample at all: NoData, not the flag": {inTraffic: podSet("a", "b"), wantNo: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			for kind, a := range map[string]analyzer{"discrete": discrete, "continuous": continuous} {
				res, err := a.analyze(vector(tc.samples...), &Request{Pods: pods, InTraffic: tc.inTraffic})
				if err != nil {
					t.Fatal(err)
				}
				if res.OutOfTrafficOnly != tc.wantOnly || res.NoData != tc.wantNo {
					t.Errorf("%s: OutOfTrafficOnly %v, NoData %v; want %v, %v", kind, res.OutOfTrafficOnly, res.NoData, tc.wantOnly, tc.wantNo)
				}
			}
			// peerOutlier needs 3 pods in traffic with a value: with fewer it is NoData, never the flag.
			res, err := peer.analyze(vector(tc.samples...), &Request{Pods: pods, InTraffic: tc.inTraffic})
			if err != nil {
				t.Fatal(err)
			}
			if res.OutOfTrafficOnly {
				t.Errorf("peerOutlier: OutOfTrafficOnly set (NoData %v)", res.NoData)
			}
		})
	}
}
