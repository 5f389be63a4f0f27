package controller_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
)

// validSpec is a KubervisorService spec the API server accepts; each admission case breaks one thing.
const validSpec = `
service: pricer
breakers:
- name: errors
  evaluationPeriod: 5
  minPodsAvailableCount: 1
  minPodsAvailableRatio: 50
  discreteValueOutOfList:
    prometheusService: prometheus:9090
    promQL: sum(increase(http_requests_total[1m])) by (code, pod)
    key: code
    podNameKey: pod
    goodValues: ["200"]
defaultActivator:
  mode: periodic
  period: 10s
`

func kvsObject(ns, name string, mutate func(spec map[string]any)) *unstructured.Unstructured {
	spec := map[string]any{}
	Expect(yaml.Unmarshal([]byte(validSpec), &spec)).To(Succeed())
	if mutate != nil {
		mutate(spec)
	}
	u := &unstructured.Unstructured{Object: map[string]any{"spec": spec}}
	u.SetAPIVersion(kvv1.GroupVersion.String())
	u.SetKind("KubervisorService")
	u.SetNamespace(ns)
	u.SetName(name)
	return u
}

func breaker0(spec map[string]any) map[string]any {
	return spec["breakers"].([]any)[0].(map[string]any)
}

func discrete0(spec map[string]any) map[string]any {
	return breaker0(spec)["discreteValueOutOfList"].(map[string]any)
}

// peerBreaker is a valid peerOutlier breaker; mutate changes its detector.
func peerBreaker(name string, mutate func(peer map[string]any)) map[string]any {
	peer := map[string]any{"prometheusService": "http://prometheus:9090", "promQL": "x", "podNameKey": "pod"}
	if mutate != nil {
		mutate(peer)
	}
	return map[string]any{"name": name, "peerOutlier": peer}
}

func continuousBreaker(name string) map[string]any {
	return map[string]any{"name": name, "continuousValueDeviation": map[string]any{
		"prometheusService": "http://prometheus:9090", "promQL": "x", "podNameKey": "pod"}}
}

var _ = Describe("Admission", func() {
	var ns string
	ctx := context.Background()
	BeforeEach(func() { ns = newNamespace() })

	type invalid struct {
		mutate func(spec map[string]any)
		// field and message must both appear in the API server's refusal.
		field, message string
	}
	DescribeTable("refuses invalid KubervisorServices with a message naming the field",
		func(c invalid) {
			err := k8sClient.Create(ctx, kvsObject(ns, "bad", c.mutate))
			Expect(err).To(HaveOccurred())
			Expect(err.Error()).To(And(ContainSubstring(c.field), ContainSubstring(c.message)))
		},
		Entry("no service", invalid{func(s map[string]any) { delete(s, "service") }, "spec.service", "Required value"}),
		Entry("service not a DNS label", invalid{func(s map[string]any) { s["service"] = "Pricer_1" }, "spec.service", "should match"}),
		Entry("no breakers", invalid{func(s map[string]any) { delete(s, "breakers") }, "spec.breakers", "Required value"}),
		Entry("empty breakers", invalid{func(s map[string]any) { s["breakers"] = []any{} }, "spec.breakers", "at least 1"}),
		Entry("17 breakers", invalid{func(s map[string]any) {
			var bs []any
			for i := range 17 {
				bs = append(bs, continuousBreaker(fmt.Sprintf("b%d", i)))
			}
			s["breakers"] = bs
		}, "spec.breakers", "at most 16"}),
		Entry("duplicate breaker names", invalid{func(s map[string]any) {
			s["breakers"] = append(s["breakers"].([]any), continuousBreaker("errors"))
		}, "spec.breakers[1]", "Duplicate value"}),
		Entry("breaker name not a DNS label", invalid{func(s map[string]any) { breaker0(s)["name"] = "Bad_Name" }, "spec.breakers[0].name", "should match"}),
		Entry("no detector", invalid{func(s map[string]any) { delete(breaker0(s), "discreteValueOutOfList") }, "spec.breakers[0]", "exactly one detector"}),
		Entry("two detectors", invalid{func(s map[string]any) {
			breaker0(s)["customService"] = map[string]any{"url": "http://detector:8080/x"}
		}, "spec.breakers[0]", "exactly one detector"}),
		Entry("three detectors", invalid{func(s map[string]any) {
			breaker0(s)["customService"] = map[string]any{"url": "http://detector:8080/x"}
			breaker0(s)["continuousValueDeviation"] = continuousBreaker("x")["continuousValueDeviation"]
		}, "spec.breakers[0]", "exactly one detector"}),
		Entry("peerOutlier and another detector", invalid{func(s map[string]any) {
			breaker0(s)["peerOutlier"] = peerBreaker("x", nil)["peerOutlier"]
		}, "spec.breakers[0]", "exactly one detector"}),
		Entry("onNoData error on customService", invalid{func(s map[string]any) {
			s["breakers"] = []any{map[string]any{"name": "c", "onNoData": "error", "customService": map[string]any{"url": "http://detector:8080/x"}}}
		}, "spec.breakers[0]", "onNoData: error applies to the Prometheus detectors only"}),
		Entry("unknown onNoData", invalid{func(s map[string]any) { breaker0(s)["onNoData"] = "panic" },
			"spec.breakers[0].onNoData", "Unsupported value"}),
		Entry("maxAnomalousPercent 101", invalid{func(s map[string]any) { breaker0(s)["maxAnomalousPercent"] = 101 },
			"spec.breakers[0].maxAnomalousPercent", "less than or equal to 100"}),
		Entry("negative minPodsToJudge", invalid{func(s map[string]any) { breaker0(s)["minPodsToJudge"] = -1 },
			"spec.breakers[0].minPodsToJudge", "greater than or equal to 0"}),
		Entry("stormCooldown 25h", invalid{func(s map[string]any) { breaker0(s)["stormCooldown"] = "25h" },
			"spec.breakers[0].stormCooldown", "at most 24h"}),
		Entry("failureThreshold 0", invalid{func(s map[string]any) { breaker0(s)["failureThreshold"] = 0 },
			"spec.breakers[0].failureThreshold", "greater than or equal to 1"}),
		Entry("failureThreshold 101", invalid{func(s map[string]any) { breaker0(s)["failureThreshold"] = 101 },
			"spec.breakers[0].failureThreshold", "less than or equal to 100"}),
		Entry("warmup 25h", invalid{func(s map[string]any) { breaker0(s)["warmup"] = "25h" },
			"spec.breakers[0].warmup", "at most 24h"}),
		Entry("warmup not a duration", invalid{func(s map[string]any) { breaker0(s)["warmup"] = "a while" },
			"spec.breakers[0].warmup", "duration string"}),
		Entry("peerOutlier threshold \"0\"", invalid{func(s map[string]any) {
			s["breakers"] = []any{peerBreaker("p", func(p map[string]any) { p["threshold"] = "0" })}
		}, "spec.breakers[0].peerOutlier.threshold", "should match"}),
		Entry("peerOutlier threshold 0", invalid{func(s map[string]any) {
			s["breakers"] = []any{peerBreaker("p", func(p map[string]any) { p["threshold"] = 0 })}
		}, "spec.breakers[0].peerOutlier.threshold", "should be greater than 0"}),
		Entry("peerOutlier threshold -2.5", invalid{func(s map[string]any) {
			s["breakers"] = []any{peerBreaker("p", func(p map[string]any) { p["threshold"] = -2.5 })}
		}, "spec.breakers[0].peerOutlier.threshold", "should be greater than 0"}),
		Entry("peerOutlier threshold not a decimal", invalid{func(s map[string]any) {
			s["breakers"] = []any{peerBreaker("p", func(p map[string]any) { p["threshold"] = "high" })}
		}, "spec.breakers[0].peerOutlier.threshold", "should match"}),
		// resource.ParseQuantity does not return on such an exponent: the manager's cache would hang decoding
		// it, and so did the API server on the CEL rule of the former schema (quantity(string(self))).
		Entry("peerOutlier threshold with a huge exponent", invalid{func(s map[string]any) {
			s["breakers"] = []any{peerBreaker("p", func(p map[string]any) { p["threshold"] = "1e-99999999999" })}
		}, "spec.breakers[0].peerOutlier.threshold", "should match"}),
		Entry("peerOutlier threshold a boolean", invalid{func(s map[string]any) {
			s["breakers"] = []any{peerBreaker("p", func(p map[string]any) { p["threshold"] = true })}
		}, "spec.breakers[0].peerOutlier.threshold", "must not validate"}),
		Entry("peerOutlier threshold an object", invalid{func(s map[string]any) {
			s["breakers"] = []any{peerBreaker("p", func(p map[string]any) { p["threshold"] = map[string]any{} })}
		}, "spec.breakers[0].peerOutlier.threshold", "must not validate"}),
		Entry("peerOutlier threshold a list", invalid{func(s map[string]any) {
			s["breakers"] = []any{peerBreaker("p", func(p map[string]any) { p["threshold"] = []any{3} })}
		}, "spec.breakers[0].peerOutlier.threshold", "must not validate"}),
		Entry("peerOutlier minAbsoluteDeviation -0.5", invalid{func(s map[string]any) {
			s["breakers"] = []any{peerBreaker("p", func(p map[string]any) { p["minAbsoluteDeviation"] = -0.5 })}
		}, "spec.breakers[0].peerOutlier.minAbsoluteDeviation", "should be greater than or equal to 0"}),
		Entry("peerOutlier minAbsoluteDeviation \"-1\"", invalid{func(s map[string]any) {
			s["breakers"] = []any{peerBreaker("p", func(p map[string]any) { p["minAbsoluteDeviation"] = "-1" })}
		}, "spec.breakers[0].peerOutlier.minAbsoluteDeviation", "should match"}),
		Entry("peerOutlier minAbsoluteDeviation a boolean", invalid{func(s map[string]any) {
			s["breakers"] = []any{peerBreaker("p", func(p map[string]any) { p["minAbsoluteDeviation"] = false })}
		}, "spec.breakers[0].peerOutlier.minAbsoluteDeviation", "must not validate"}),
		Entry("peerOutlier unknown direction", invalid{func(s map[string]any) {
			s["breakers"] = []any{peerBreaker("p", func(p map[string]any) { p["direction"] = "sideways" })}
		}, "spec.breakers[0].peerOutlier.direction", "Unsupported value"}),
		Entry("goodValues and badValues", invalid{func(s map[string]any) { discrete0(s)["badValues"] = []any{"500"} },
			"spec.breakers[0].discreteValueOutOfList", "exactly one of goodValues or badValues"}),
		Entry("neither goodValues nor badValues", invalid{func(s map[string]any) { delete(discrete0(s), "goodValues") },
			"spec.breakers[0].discreteValueOutOfList", "exactly one of goodValues or badValues"}),
		Entry("empty goodValues", invalid{func(s map[string]any) { discrete0(s)["goodValues"] = []any{} },
			"spec.breakers[0].discreteValueOutOfList.goodValues", "at least 1"}),
		Entry("ratio 120", invalid{func(s map[string]any) { breaker0(s)["minPodsAvailableRatio"] = 120 },
			"spec.breakers[0].minPodsAvailableRatio", "less than or equal to 100"}),
		Entry("ratio -1", invalid{func(s map[string]any) { breaker0(s)["minPodsAvailableRatio"] = -1 },
			"spec.breakers[0].minPodsAvailableRatio", "greater than or equal to 0"}),
		Entry("count -1", invalid{func(s map[string]any) { breaker0(s)["minPodsAvailableCount"] = -1 },
			"spec.breakers[0].minPodsAvailableCount", "greater than or equal to 0"}),
		Entry("period 0", invalid{func(s map[string]any) { breaker0(s)["evaluationPeriod"] = 0 },
			"spec.breakers[0].evaluationPeriod", "more than zero"}),
		Entry("period 0s", invalid{func(s map[string]any) { breaker0(s)["evaluationPeriod"] = "0s" },
			"spec.breakers[0].evaluationPeriod", "more than zero"}),
		Entry("period not a duration", invalid{func(s map[string]any) { breaker0(s)["evaluationPeriod"] = "soon" },
			"spec.breakers[0].evaluationPeriod", "duration string"}),
		Entry("period 25h", invalid{func(s map[string]any) { breaker0(s)["evaluationPeriod"] = "25h" },
			"spec.breakers[0].evaluationPeriod", "at most 24h"}),
		Entry("period 100000 seconds", invalid{func(s map[string]any) { breaker0(s)["evaluationPeriod"] = 100000 },
			"spec.breakers[0].evaluationPeriod", "at most 24h"}),
		Entry("activator period negative", invalid{func(s map[string]any) {
			s["defaultActivator"].(map[string]any)["period"] = "-5s"
		}, "spec.defaultActivator.period", "more than zero"}),
		Entry("breaker activator period 0", invalid{func(s map[string]any) {
			breaker0(s)["activator"] = map[string]any{"period": 0}
		}, "spec.breakers[0].activator.period", "more than zero"}),
		Entry("bad activator mode", invalid{func(s map[string]any) { s["defaultActivator"].(map[string]any)["mode"] = "sometimes" },
			"spec.defaultActivator.mode", "Unsupported value"}),
		Entry("negative maxRetryCount", invalid{func(s map[string]any) { s["defaultActivator"].(map[string]any)["maxRetryCount"] = -1 },
			"spec.defaultActivator.maxRetryCount", "greater than or equal to 0"}),
		Entry("negative maxPauseCount", invalid{func(s map[string]any) { s["defaultActivator"].(map[string]any)["maxPauseCount"] = -2 },
			"spec.defaultActivator.maxPauseCount", "greater than or equal to 0"}),
		Entry("tolerance 101", invalid{func(s map[string]any) { discrete0(s)["tolerance"] = 101 },
			"spec.breakers[0].discreteValueOutOfList.tolerance", "less than or equal to 100"}),
		Entry("negative minActivity", invalid{func(s map[string]any) { discrete0(s)["minActivity"] = -3 },
			"spec.breakers[0].discreteValueOutOfList.minActivity", "greater than or equal to 0"}),
		Entry("prometheusService not an address", invalid{func(s map[string]any) { discrete0(s)["prometheusService"] = "not an address" },
			"spec.breakers[0].discreteValueOutOfList.prometheusService", "host:port or an http(s):// URL"}),
		Entry("prometheusService with another scheme", invalid{func(s map[string]any) { discrete0(s)["prometheusService"] = "ftp://prometheus:9090" },
			"spec.breakers[0].discreteValueOutOfList.prometheusService", "host:port or an http(s):// URL"}),
		Entry("empty promQL", invalid{func(s map[string]any) { discrete0(s)["promQL"] = "" },
			"spec.breakers[0].discreteValueOutOfList.promQL", "at least 1"}),
		Entry("no podNameKey", invalid{func(s map[string]any) { delete(discrete0(s), "podNameKey") },
			"spec.breakers[0].discreteValueOutOfList.podNameKey", "Required value"}),
		Entry("negative maxDeviationPercent", invalid{func(s map[string]any) {
			b := continuousBreaker("dev")
			b["continuousValueDeviation"].(map[string]any)["maxDeviationPercent"] = -5
			s["breakers"] = []any{b}
		}, "spec.breakers[0].continuousValueDeviation.maxDeviationPercent", "greater than or equal to 0"}),
		Entry("custom service url with a space", invalid{func(s map[string]any) {
			s["breakers"] = []any{map[string]any{"name": "c", "customService": map[string]any{"url": "detector :8080/x"}}}
		}, "spec.breakers[0].customService.url", "host:port/path, an http(s):// URL, or a path under a detector endpoint"}),
		Entry("unknown dryRun type", invalid{func(s map[string]any) { s["dryRun"] = "perhaps" },
			"spec.dryRun", "boolean"}),
		Entry("prometheusService and endpoint", invalid{func(s map[string]any) { discrete0(s)["endpoint"] = "thanos" },
			"spec.breakers[0].discreteValueOutOfList", "set prometheusService or endpoint, not both"}),
		Entry("endpoint not a DNS label", invalid{func(s map[string]any) {
			delete(discrete0(s), "prometheusService")
			discrete0(s)["endpoint"] = "Thanos_1"
		}, "spec.breakers[0].discreteValueOutOfList.endpoint", "should match"}),
		Entry("custom service endpoint with a full url", invalid{func(s map[string]any) {
			s["breakers"] = []any{map[string]any{"name": "c", "customService": map[string]any{"endpoint": "d", "url": "detector:8080/x"}}}
		}, "spec.breakers[0].customService", "with endpoint, url is a path under the endpoint's URL"}),
	)

	DescribeTable("accepts detectors that name an endpoint, or none (the manager's default)",
		func(mutate func(s map[string]any)) {
			Expect(k8sClient.Create(ctx, kvsObject(ns, "endpoint", mutate))).To(Succeed())
		},
		Entry("a Prometheus detector naming an endpoint", func(s map[string]any) {
			delete(discrete0(s), "prometheusService")
			discrete0(s)["endpoint"] = "thanos"
		}),
		Entry("a Prometheus detector naming no address (the default endpoint)", func(s map[string]any) { delete(discrete0(s), "prometheusService") }),
		Entry("a custom service with an endpoint and a path", func(s map[string]any) {
			s["breakers"] = []any{map[string]any{"name": "c", "customService": map[string]any{"endpoint": "d", "url": "/v1/anomalies?team=a"}}}
		}),
		Entry("a custom service with an endpoint alone", func(s map[string]any) {
			s["breakers"] = []any{map[string]any{"name": "c", "customService": map[string]any{"endpoint": "d"}}}
		}),
		Entry("a custom service with a path alone (under the default endpoint)", func(s map[string]any) {
			s["breakers"] = []any{map[string]any{"name": "c", "customService": map[string]any{"url": "/v1/anomalies"}}}
		}),
		Entry("a custom service with nothing (the default endpoint)", func(s map[string]any) {
			s["breakers"] = []any{map[string]any{"name": "c", "customService": map[string]any{}}}
		}),
	)

	DescribeTable("accepts a peerOutlier threshold as a number or a string",
		func(threshold any, want float64) {
			Expect(k8sClient.Create(ctx, kvsObject(ns, "peer", func(s map[string]any) {
				s["breakers"] = []any{peerBreaker("p", func(p map[string]any) { p["threshold"] = threshold })}
			}))).To(Succeed())
			Expect(getKVS(ns, "peer").Spec.Breakers[0].PeerOutlier.Threshold.AsApproximateFloat64()).To(Equal(want))
		},
		Entry("the string \"2.5\"", "2.5", 2.5),
		Entry("the integer 4", 4, 4.0),
		Entry("the number 2.5", 2.5, 2.5),
		Entry("the string \"2500m\" (how a resource.Quantity of 2.5 is written)", "2500m", 2.5),
		Entry("null (the default)", nil, 3.0),
	)

	DescribeTable("accepts a peerOutlier minAbsoluteDeviation as a number or a string",
		func(deviation any, want float64) {
			Expect(k8sClient.Create(ctx, kvsObject(ns, "peer", func(s map[string]any) {
				s["breakers"] = []any{peerBreaker("p", func(p map[string]any) {
					if deviation != nil {
						p["minAbsoluteDeviation"] = deviation
					}
				})}
			}))).To(Succeed())
			Expect(getKVS(ns, "peer").Spec.Breakers[0].PeerOutlier.MinAbsoluteDeviation.AsApproximateFloat64()).To(Equal(want))
		},
		Entry("the number 0.05", 0.05, 0.05),
		Entry("the string \"0.05\"", "0.05", 0.05),
		Entry("the integer 0 (off)", 0, 0.0),
		Entry("the string \"2k\"", "2k", 2000.0),
		Entry("nothing (the default, 0.001)", nil, 0.001),
	)

	It("applies the defaults of the schema", func() {
		Expect(k8sClient.Create(ctx, kvsObject(ns, "defaults", func(s map[string]any) {
			b := breaker0(s)
			delete(b, "evaluationPeriod")
			delete(b, "minPodsAvailableCount")
			delete(s, "defaultActivator")
		}))).To(Succeed())
		kvs := getKVS(ns, "defaults")
		b := kvs.Spec.Breakers[0]
		Expect(b.EvaluationPeriod.String()).To(Equal("5"))
		Expect(*b.MinPodsAvailableCount).To(Equal(int32(1)))
		Expect(*b.DiscreteValueOutOfList.Tolerance).To(Equal(int32(50)))
		Expect(*b.DiscreteValueOutOfList.MinActivity).To(Equal(int32(2)))
		Expect(b.FailureThreshold).NotTo(BeNil())
		Expect(*b.FailureThreshold).To(Equal(int32(1)), "failureThreshold defaults to 1: the first flagging evaluation ejects, as before")
		Expect(b.Warmup).To(BeNil(), "no warm-up unless asked")
		Expect(kvs.Spec.DefaultActivator).NotTo(BeNil())
		Expect(kvs.Spec.DefaultActivator.Mode).To(Equal(kvv1.ActivatorModePeriodic))
		Expect(kvs.Spec.DefaultActivator.Period.String()).To(Equal("10"))
	})

	It("refuses a change of spec.service", func() {
		Expect(k8sClient.Create(ctx, kvsObject(ns, "immutable", nil))).To(Succeed())
		// The controller adds its finalizer meanwhile: retry on conflicts until the API server judges the change.
		Eventually(func() string {
			u := kvsObject(ns, "immutable", nil)
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(u), u)).To(Succeed())
			Expect(unstructured.SetNestedField(u.Object, "other", "spec", "service")).To(Succeed())
			err := k8sClient.Update(ctx, u)
			if err == nil {
				return "accepted"
			}
			return err.Error()
		}).Should(And(ContainSubstring("spec"), ContainSubstring("service is immutable")))
	})

	It("accepts every sample of config/samples", func() {
		files, err := filepath.Glob(filepath.Join("..", "..", "config", "samples", "breaker_*.yaml"))
		Expect(err).NotTo(HaveOccurred())
		Expect(files).To(HaveLen(5), "one sample per detector kind, and the guards")
		kinds := map[string]bool{}
		for _, f := range files {
			data, err := os.ReadFile(f)
			Expect(err).NotTo(HaveOccurred())
			u := &unstructured.Unstructured{}
			Expect(yaml.Unmarshal(data, &u.Object)).To(Succeed())
			u.SetNamespace(ns)
			Expect(k8sClient.Create(ctx, u)).To(Succeed(), f)
			for _, b := range u.Object["spec"].(map[string]any)["breakers"].([]any) {
				for k := range b.(map[string]any) {
					if strings.HasSuffix(k, "ValueOutOfList") || strings.HasSuffix(k, "ValueDeviation") || k == "peerOutlier" || k == "customService" {
						kinds[k] = true
					}
				}
			}
		}
		Expect(kinds).To(HaveLen(4))
	})
})
