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

// continuousAnalyzer judges pods by how far their value is from the fleet's (SPEC §2.1,
// continuousValueDeviation). The query already divides by the fleet, so 1.0 is the average.
type continuousAnalyzer struct {
	podNameKey   model.LabelName
	maxDeviation float64 // a fraction: maxDeviationPercent / 100
}

func newContinuousAnalyzer(c *v1alpha1.ContinuousValueDeviation) (*continuousAnalyzer, error) {
	if c.PodNameKey == "" {
		return nil, errors.New("podNameKey must be set")
	}
	maxDeviation := v1alpha1.DefaultMaxDeviation
	if c.MaxDeviationPercent != nil {
		maxDeviation = *c.MaxDeviationPercent
	}
	if maxDeviation < 0 {
		return nil, fmt.Errorf("maxDeviationPercent %d is negative", maxDeviation)
	}
	return &continuousAnalyzer{podNameKey: model.LabelName(c.PodNameKey), maxDeviation: float64(maxDeviation) / 100}, nil
}

func (a *continuousAnalyzer) expects() string {
	return fmt.Sprintf("one value per %s (the pod's value divided by the fleet's)", a.podNameKey)
}

// continuousCandidate is an anomalous pod before ranking.
type continuousCandidate struct {
	pod              string
	value, deviation float64
}

// analyze flags the managed pods whose |1 − value| exceeds the maximum deviation; NaN is never anomalous.
func (a *continuousAnalyzer) analyze(v model.Vector, req *Request) (Result, error) {
	var flagged []continuousCandidate
	judged, serving := 0, 0
	ignored, err := forEachValue(v, a.podNameKey, req.Pods, func(pod string, x float64) {
		judged++
		if req.serving(pod) {
			serving++
		}
		// ±Inf (a pod with activity in an otherwise idle fleet) gives an infinite deviation: anomalous and
		// ranked worst.
		if deviation := math.Abs(1 - x); exceeds(deviation, a.maxDeviation) {
			flagged = append(flagged, continuousCandidate{pod: pod, value: x, deviation: deviation})
		}
	})
	if err != nil {
		return Result{}, err
	}
	res := Result{Ignored: ignored}
	if judged == 0 {
		res.NoData = true
		return res, nil
	}
	res.OutOfTrafficOnly = serving == 0
	slices.SortFunc(flagged, func(x, y continuousCandidate) int {
		if c := cmp.Compare(y.deviation, x.deviation); c != 0 {
			return c
		}
		return cmp.Compare(x.pod, y.pod)
	})
	if len(flagged) > 0 {
		res.Anomalies = make([]Anomaly, len(flagged))
		var buf []byte // reused: one allocation per reason rather than one per number
		for i, c := range flagged {
			buf = append(buf[:0], "deviation "...)
			buf = appendNumber(buf, c.deviation)
			buf = append(buf, " > "...)
			buf = appendNumber(buf, a.maxDeviation)
			buf = append(buf, " (value "...)
			buf = appendNumber(buf, c.value)
			buf = append(buf, ", fleet average 1)"...)
			res.Anomalies[i] = Anomaly{Pod: c.pod, Score: c.deviation, Reason: string(buf)}
		}
	}
	return res, nil
}
