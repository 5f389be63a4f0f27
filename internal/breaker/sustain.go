package breaker

// Sustained evidence (SPEC §5 step 13): a breaker with failureThreshold N ejects a pod only after N
// consecutive evaluations flagged it while it was in traffic. The counts are the caller's memory; Sustain
// is the step from one evaluation to the next.

// Sustain returns the counts after an evaluation that succeeded: each anomalous pod serving now counts one
// more than in prev; every other pod (not flagged, or not serving: ejected, NotReady, terminating, gone)
// is dropped, so its count starts again. A failed evaluation does not call it: counts stay as they were.
// prev is not modified.
func Sustain(prev map[string]int, pods []Pod, anomalies []Anomaly) map[string]int {
	if len(anomalies) == 0 {
		return nil
	}
	serving := make(map[string]bool, len(anomalies))
	for _, a := range anomalies {
		serving[a.Pod] = false
	}
	for _, p := range pods {
		if _, flagged := serving[p.Name]; flagged && p.Serving() {
			serving[p.Name] = true
		}
	}
	var out map[string]int
	for _, a := range anomalies {
		if !serving[a.Pod] {
			continue
		}
		if _, counted := out[a.Pod]; counted {
			continue
		}
		if out == nil {
			out = make(map[string]int, len(anomalies))
		}
		out[a.Pod] = prev[a.Pod] + 1
	}
	return out
}
