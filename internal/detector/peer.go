package detector

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/prometheus/common/model"

	"github.com/kubervisor/kubervisor/api/v1alpha1"
)

// madScale turns a median absolute deviation into an estimate of the standard deviation of normally
// distributed values (1 / Φ⁻¹(3/4)), so that a threshold reads as it would for a z-score.
const madScale = 1.4826

// minPeers is the fewest pods in traffic with a value that make a median: with two, each pod is as far
// from the median as the other and neither can be told apart.
const minPeers = 3

// peerAnalyzer judges pods by how far their raw value lies from their peers' (SPEC §2.1, peerOutlier):
// the robust z-score |value − median| / (1.4826 × MAD), where the median and the median absolute
// deviation are those of the pods in traffic.
type peerAnalyzer struct {
	podNameKey model.LabelName
	direction  v1alpha1.PeerDirection
	// threshold is the robust z-score a pod must exceed; minDeviation the share of |median| (a fraction:
	// minDeviationPercent / 100) and minAbsolute the distance, in the metric's units, its value must be away
	// from the median as well.
	threshold    float64
	minDeviation float64
	minAbsolute  float64
}

func newPeerAnalyzer(p *v1alpha1.PeerOutlier) (*peerAnalyzer, error) {
	if p.PodNameKey == "" {
		return nil, errors.New("podNameKey must be set")
	}
	a := &peerAnalyzer{
		podNameKey:   model.LabelName(p.PodNameKey),
		direction:    v1alpha1.PeerDirectionHigh,
		threshold:    v1alpha1.DefaultPeerThreshold,
		minDeviation: float64(v1alpha1.DefaultMinDeviation) / 100,
		minAbsolute:  v1alpha1.DefaultMinAbsoluteDeviation,
	}
	switch p.Direction {
	case "":
	case v1alpha1.PeerDirectionHigh, v1alpha1.PeerDirectionLow, v1alpha1.PeerDirectionBoth:
		a.direction = p.Direction
	default:
		return nil, fmt.Errorf("direction %q is not high, low or both", p.Direction)
	}
	if p.Threshold != nil {
		a.threshold = p.Threshold.AsApproximateFloat64()
		if !(a.threshold > 0) || math.IsInf(a.threshold, 0) {
			return nil, fmt.Errorf("threshold %s is not a number more than 0", p.Threshold)
		}
	}
	if p.MinDeviationPercent != nil {
		if *p.MinDeviationPercent < 0 {
			return nil, fmt.Errorf("minDeviationPercent %d is negative", *p.MinDeviationPercent)
		}
		a.minDeviation = float64(*p.MinDeviationPercent) / 100
	}
	if p.MinAbsoluteDeviation != nil {
		a.minAbsolute = p.MinAbsoluteDeviation.AsApproximateFloat64()
		if !(a.minAbsolute >= 0) || math.IsInf(a.minAbsolute, 0) {
			return nil, fmt.Errorf("minAbsoluteDeviation %s is not a number of 0 or more", p.MinAbsoluteDeviation)
		}
	}
	return a, nil
}

func (a *peerAnalyzer) expects() string {
	return fmt.Sprintf("one raw value per %s (not divided by the fleet's)", a.podNameKey)
}

// peerValue is a managed pod's value.
type peerValue struct {
	pod   string
	value float64
}

// peerCandidate is an anomalous pod before ranking.
type peerCandidate struct {
	peerValue
	deviation, score float64
}

// analyze takes the median and MAD of the pods in traffic and flags every managed pod, in traffic or not,
// whose value lies beyond the threshold and both minimum deviations on the side the direction names.
//
// NOTE: the pods out of traffic are judged but do not make the reference, so that an ejected pod that is
// still bad keeps being flagged while it does not drag the median towards itself.
func (a *peerAnalyzer) analyze(v model.Vector, req *Request) (Result, error) {
	values := make([]peerValue, 0, min(len(v), len(req.Pods)))
	// peers are the values of the pods in traffic; medianAndMAD reorders and overwrites them.
	peers := make([]float64, 0, min(len(v), len(req.Pods)))
	ignored, err := forEachValue(v, a.podNameKey, req.Pods, func(pod string, x float64) {
		values = append(values, peerValue{pod: pod, value: x})
		if req.serving(pod) {
			peers = append(peers, x)
		}
	})
	if err != nil {
		return Result{}, err
	}
	res := Result{Ignored: ignored}
	median, mad, ok := medianAndMAD(peers)
	if !ok {
		// Fewer than 3 pods in traffic with a value, none among them: NoData, whatever the others read.
		res.NoData = true
		return res, nil
	}

	var flagged []peerCandidate
	for _, pv := range values {
		if c, anomalous := a.judge(pv, median, mad); anomalous {
			flagged = append(flagged, c)
		}
	}
	slices.SortFunc(flagged, func(x, y peerCandidate) int {
		return cmp.Or(cmp.Compare(y.score, x.score), cmp.Compare(y.deviation, x.deviation), cmp.Compare(x.pod, y.pod))
	})
	if len(flagged) > 0 {
		res.Anomalies = make([]Anomaly, len(flagged))
		var buf []byte // reused: one allocation per reason rather than one per number
		for i, c := range flagged {
			buf = append(buf[:0], "value "...)
			buf = appendNumber(buf, c.value)
			buf = append(buf, " is "...)
			buf = appendNumber(buf, c.score)
			if c.value > median {
				buf = append(buf, " MADs above the median "...)
			} else {
				buf = append(buf, " MADs below the median "...)
			}
			buf = appendNumber(buf, median)
			if mad == 0 {
				buf = append(buf, " (MAD 0, threshold "...)
			} else {
				buf = append(buf, " (threshold "...)
			}
			buf = appendNumber(buf, a.threshold)
			buf = append(buf, ')')
			res.Anomalies[i] = Anomaly{Pod: c.pod, Score: c.score, Reason: string(buf)}
		}
	}
	return res, nil
}

// judge scores one pod against the reference and says whether it is anomalous.
func (a *peerAnalyzer) judge(pv peerValue, median, mad float64) (peerCandidate, bool) {
	above, below := pv.value > median, pv.value < median
	switch {
	case a.direction == v1alpha1.PeerDirectionHigh && !above,
		a.direction == v1alpha1.PeerDirectionLow && !below,
		!above && !below:
		return peerCandidate{}, false
	}
	deviation := math.Abs(pv.value - median)
	// The share of the median is compared as a ratio, free of the value's unit; a median of 0 makes every
	// deviation infinitely large, which is why the absolute distance is required too: without it, on a fleet
	// whose healthy value is 0 (an error rate), a single error would be anomalous.
	share := deviation / math.Abs(median)
	if math.IsInf(deviation, 0) && !math.IsInf(pv.value, 0) {
		// A finite value and median of opposite signs can be more than the largest float64 apart: the share
		// is then taken without the overflow, |value/|median| − sign(median)|, not as +Inf.
		share = math.Abs(pv.value/math.Abs(median) - math.Copysign(1, median))
	}
	if !exceeds(share, a.minDeviation) || (a.minAbsolute > 0 && !exceeds(deviation, a.minAbsolute)) {
		return peerCandidate{}, false
	}
	// A MAD of 0 (most pods in traffic agree exactly) makes any other value infinitely unusual; the
	// minimum deviation above is what keeps noise from counting then.
	score := math.Inf(1)
	if mad > 0 {
		score = deviation / (madScale * mad)
	}
	if !exceeds(score, a.threshold) {
		return peerCandidate{}, false
	}
	return peerCandidate{peerValue: pv, deviation: deviation, score: score}, true
}

// medianAndMAD returns the median of xs and the median of the absolute deviations from it, or false when
// they are no reference: fewer than minPeers values, or a median or MAD that is not finite (half of the
// values or more are ±Inf). xs must hold no NaN; it is reordered and overwritten.
func medianAndMAD(xs []float64) (median, mad float64, ok bool) {
	if len(xs) < minPeers {
		return 0, 0, false
	}
	median = medianOf(xs)
	if math.IsInf(median, 0) || math.IsNaN(median) {
		return 0, 0, false
	}
	for i, x := range xs {
		xs[i] = math.Abs(x - median)
	}
	mad = medianOf(xs)
	if math.IsInf(mad, 0) {
		return 0, 0, false
	}
	return median, mad, true
}

// medianOf returns the median of xs (the mean of the two middle values when their number is even),
// reordering xs. xs is not empty and holds no NaN.
func medianOf(xs []float64) float64 {
	slices.Sort(xs)
	n := len(xs)
	if n%2 == 1 {
		return xs[n/2]
	}
	lo, hi := xs[n/2-1], xs[n/2]
	if lo == hi {
		return lo
	}
	// lo + (hi − lo)/2 stays within [lo, hi], where lo/2 + hi/2 may not: halving a subnormal number rounds
	// (two equal middle values of 1.3e-310 made a median below both). Unless hi − lo overflows.
	if d := hi - lo; !math.IsInf(d, 0) {
		return min(lo+d/2, hi)
	}
	return lo/2 + hi/2
}
