package detector

import (
	"fmt"
	"testing"

	"github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/breaker"
)

// BenchmarkEvaluation measures the controller's side of one breaker evaluation once Prometheus's answer is
// decoded: the discrete analysis of the vector (two series per pod), then the ejection plan (floor and
// quota) over every managed pod, as the KubervisorService reconciler runs them. BenchmarkDetect adds the
// HTTP round trip and client_golang's decoding for 10k pods.
func BenchmarkEvaluation(b *testing.B) {
	a, err := newDiscreteAnalyzer(&v1alpha1.DiscreteValueOutOfList{Key: "code", PodNameKey: "pod", GoodValues: []string{"200"}})
	if err != nil {
		b.Fatal(err)
	}
	ratio := int32(80)
	spec := &v1alpha1.KubervisorServiceSpec{Breakers: []v1alpha1.BreakerStrategy{{Name: "errors", MinPodsAvailableRatio: &ratio}}}
	for _, pods := range benchPodCounts {
		v, managed := discreteBenchVector(pods)
		fleet := make([]breaker.Pod, 0, pods)
		for i := range pods {
			fleet = append(fleet, breaker.Pod{Name: benchPodName(i), Ready: true, Traffic: v1alpha1.TrafficYes})
		}
		req := &Request{Pods: managed}
		b.Run(fmt.Sprintf("pods=%d/series=%d", pods, len(v)), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				res, err := a.analyze(v, req)
				if err != nil {
					b.Fatal(err)
				}
				in := breaker.Input{Name: "errors", Anomalies: make([]breaker.Anomaly, len(res.Anomalies))}
				for i, an := range res.Anomalies {
					in.Anomalies[i] = breaker.Anomaly{Pod: an.Pod, Reason: an.Reason}
				}
				out := breaker.Plan(fleet, breaker.FloorOf(spec, breaker.Count(fleet).Base), []breaker.Input{in})
				if len(out[0].Eject) != pods/10 {
					b.Fatalf("ejected %d pods, want %d", len(out[0].Eject), pods/10)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(pods), "ns/pod")
		})
	}
}
