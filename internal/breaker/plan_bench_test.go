package breaker

import (
	"fmt"
	"testing"
	"time"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
)

// BenchmarkPlan measures one pass's decision for fleets of 1k, 10k and 100k pods with 10% of them flagged
// by each of two breakers (the detector's analysis is benchmarked in internal/detector).
func BenchmarkPlan(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		pods := make([]Pod, n)
		for i := range pods {
			pods[i] = Pod{Name: fmt.Sprintf("pod-%d", i), Ready: i%50 != 0, Traffic: kvv1.TrafficYes}
		}
		inputs := []Input{{Name: "errors"}, {Name: "latency"}}
		for i := 0; i < n; i += 10 {
			inputs[0].Anomalies = append(inputs[0].Anomalies, Anomaly{Pod: pods[i].Name, Reason: "r"})
			inputs[1].Anomalies = append(inputs[1].Anomalies, Anomaly{Pod: pods[(i+5)%n].Name, Reason: "r"})
		}
		spec := &kvv1.KubervisorServiceSpec{Breakers: []kvv1.BreakerStrategy{{Name: "errors"}, {Name: "latency"}}}
		ratio := int32(90)
		spec.Breakers[0].MinPodsAvailableRatio = &ratio
		b.Run(fmt.Sprintf("pods=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Plan(pods, FloorOf(spec, Count(pods).Base), inputs)
			}
		})
	}
}

// BenchmarkRestore: the floor restoration's choice on a fleet of 1,000 pods of which 300 are out of traffic
// and 600 NotReady (the floor of 500 misses 400), ranked by two breakers.
func BenchmarkRestore(b *testing.B) {
	pods := make([]Pod, 1000)
	var ranking []string
	for i := range pods {
		pods[i] = Pod{Name: fmt.Sprintf("p%d", i), Ready: i%10 < 4 || i >= 700, Traffic: kvv1.TrafficYes}
		if i >= 700 {
			pods[i].Traffic, pods[i].BreakAt = kvv1.TrafficNo, time.Unix(int64(i), 0)
			if i%3 == 0 {
				ranking = append(ranking, pods[i].Name)
			}
		}
	}
	standing := Standings(ranking, ranking[:len(ranking)/2])
	b.ReportAllocs()
	for b.Loop() {
		if r := Restore(pods, 500, standing); len(r.Restore) == 0 {
			b.Fatal("nothing restored")
		}
	}
}
