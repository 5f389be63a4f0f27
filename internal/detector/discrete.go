package detector

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"

	"github.com/prometheus/common/model"

	"github.com/kubervisor/kubervisor/api/v1alpha1"
)

// discreteAnalyzer judges pods by the share of their events that carry a bad value (SPEC §2.1,
// discreteValueOutOfList).
type discreteAnalyzer struct {
	key        model.LabelName
	podNameKey model.LabelName
	// listed holds goodValues or badValues, whichever is set; listedAreGood says which. Only one list is
	// kept because the other side is "every other value".
	listed        map[string]struct{}
	listedAreGood bool
	// tolerance is a fraction (0..1), minActivity a number of events; both floats because increase() and
	// rate() yield fractional counts that are real evidence.
	tolerance   float64
	minActivity float64
}

func newDiscreteAnalyzer(d *v1alpha1.DiscreteValueOutOfList) (*discreteAnalyzer, error) {
	if d.Key == "" || d.PodNameKey == "" {
		return nil, errors.New("key and podNameKey must both be set")
	}
	if d.Key == d.PodNameKey {
		return nil, fmt.Errorf("key and podNameKey are both %q: one label cannot hold both the value and the pod name", d.Key)
	}
	if (len(d.GoodValues) > 0) == (len(d.BadValues) > 0) {
		return nil, errors.New("exactly one of goodValues or badValues must be set")
	}
	a := &discreteAnalyzer{
		key:           model.LabelName(d.Key),
		podNameKey:    model.LabelName(d.PodNameKey),
		listedAreGood: len(d.GoodValues) > 0,
	}
	list := d.BadValues
	if a.listedAreGood {
		list = d.GoodValues
	}
	a.listed = make(map[string]struct{}, len(list))
	for _, v := range list {
		a.listed[v] = struct{}{}
	}
	tolerance := v1alpha1.DefaultTolerance
	if d.Tolerance != nil {
		tolerance = *d.Tolerance
	}
	if tolerance < 0 || tolerance > 100 {
		return nil, fmt.Errorf("tolerance %d is not a percentage (0..100)", tolerance)
	}
	minActivity := v1alpha1.DefaultMinActivity
	if d.MinActivity != nil {
		minActivity = *d.MinActivity
	}
	if minActivity < 0 {
		return nil, fmt.Errorf("minActivity %d is negative", minActivity)
	}
	a.tolerance = float64(tolerance) / 100
	a.minActivity = float64(minActivity)
	return a, nil
}

func (a *discreteAnalyzer) expects() string {
	return fmt.Sprintf("one counter per (%s, %s)", a.key, a.podNameKey)
}

// eventCounts accumulates one pod's events over all its series.
type eventCounts struct {
	pod       string
	good, bad float64
}

// discreteCandidate is an anomalous pod before ranking.
type discreteCandidate struct {
	eventCounts
	total, ratio float64
}

// analyze sums good and bad events per managed pod and flags the pods whose bad ratio exceeds the
// tolerance once they have enough activity to be judged.
func (a *discreteAnalyzer) analyze(v model.Vector, req *Request) (Result, error) {
	var res Result
	pods := req.Pods
	// index maps every pod seen to its entry in counts, or to -1 when it is not managed, so that the
	// large maps are looked up once per series rather than twice: at 100k pods they no longer fit in the
	// CPU caches and map lookups are most of the cost.
	index := make(map[string]int32, min(len(v), len(pods)))
	counts := make([]eventCounts, 0, min(len(v), len(pods)))
	for _, s := range v {
		pod, err := podOf(s, a.podNameKey)
		if err != nil {
			return Result{}, err
		}
		value := s.Metric[a.key]
		if value == "" {
			return Result{}, fmt.Errorf("series %s has no label %q (key): the query must keep the value, e.g. \"sum(...) by (%s, %s)\"",
				s.Metric, a.key, a.key, a.podNameKey)
		}
		x, err := floatOf(s)
		if err != nil {
			return Result{}, err
		}
		// NOTE: a bad count is refused even for a pod that is not managed: it means the query is not the
		// counter the user believes it is (e.g. delta() instead of increase()), so no answer of it is trusted.
		if x < 0 || math.IsInf(x, 0) {
			return Result{}, fmt.Errorf("series %s has count %v: counts must be finite and non-negative", s.Metric, x)
		}
		// NaN comes from 0/0 in the query (e.g. a rate over an empty window): no evidence either way.
		if math.IsNaN(x) {
			if _, managed := pods[pod]; !managed {
				res.Ignored++
			}
			continue
		}
		i, seen := index[pod]
		if !seen {
			i = -1
			if _, managed := pods[pod]; managed {
				i = int32(len(counts))
				counts = append(counts, eventCounts{pod: pod})
			}
			index[pod] = i
		}
		if i < 0 {
			res.Ignored++
			continue
		}
		if _, listed := a.listed[string(value)]; listed == a.listedAreGood {
			counts[i].good += x
		} else {
			counts[i].bad += x
		}
	}
	if len(counts) == 0 {
		res.NoData = true
		return res, nil
	}
	res.OutOfTrafficOnly = !slices.ContainsFunc(counts, func(c eventCounts) bool { return req.serving(c.pod) })

	var flagged []discreteCandidate
	for _, c := range counts {
		total := c.good + c.bad
		if math.IsInf(total, 0) {
			return Result{}, fmt.Errorf("pod %q: the sum of its counts overflows", c.pod)
		}
		// total > 0 also guards minActivity 0: a pod without events has no ratio.
		if total <= 0 || total < a.minActivity {
			continue
		}
		if ratio := c.bad / total; exceeds(ratio, a.tolerance) {
			flagged = append(flagged, discreteCandidate{eventCounts: c, total: total, ratio: ratio})
		}
	}
	slices.SortFunc(flagged, func(x, y discreteCandidate) int {
		if c := cmp.Compare(y.ratio, x.ratio); c != 0 {
			return c
		}
		if c := cmp.Compare(y.total, x.total); c != 0 {
			return c
		}
		return cmp.Compare(x.pod, y.pod)
	})
	if len(flagged) > 0 {
		res.Anomalies = make([]Anomaly, len(flagged))
		var buf []byte // reused: one allocation per reason rather than one per number
		for i, c := range flagged {
			buf = append(buf[:0], "bad ratio "...)
			buf = appendNumber(buf, c.ratio)
			buf = append(buf, " > tolerance "...)
			buf = appendNumber(buf, a.tolerance)
			buf = append(buf, " over "...)
			buf = appendNumber(buf, c.total)
			buf = append(buf, " events ("...)
			buf = appendNumber(buf, c.bad)
			buf = append(buf, " bad)"...)
			res.Anomalies[i] = Anomaly{Pod: c.pod, Score: c.ratio, Reason: string(buf)}
		}
	}
	return res, nil
}

// exceeds reports whether x is beyond limit by more than floating-point noise.
//
// NOTE: without the margin a value sitting exactly on the limit is flagged or not depending on rounding
// (|1 − 0.7| is 0.30000000000000004 > 0.3), and the reason would read "deviation 0.3 > 0.3". The margin
// is far below any threshold a user can configure (whole percents). +Inf exceeds every limit; NaN none.
func exceeds(x, limit float64) bool {
	return x > limit+1e-9
}

// appendNumber prints a number for a human: at most three decimals, no trailing zeros, no exponent for
// ordinary counts ("0.4", "130", "0.667"). From 1e16 on, where a float64 has no decimals left, it writes
// an exponent ("6.02e+23"): written out, such a number took up to 309 digits, and rounding it to three
// decimals overflowed to +Inf from 1.8e305 on.
func appendNumber(buf []byte, x float64) []byte {
	if math.Abs(x) >= 1e16 {
		return strconv.AppendFloat(buf, x, 'g', -1, 64)
	}
	if !math.IsNaN(x) {
		x = math.Round(x*1000) / 1000
	}
	return strconv.AppendFloat(buf, x, 'f', -1, 64)
}
