package breaker

import (
	"fmt"
	"testing"

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
