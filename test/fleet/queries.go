package fleet

import (
	"strconv"
	"strings"
)

// Metric and label names served by a Fleet.
const (
	// MetricRequests is a counter of requests answered, by namespace, pod and code.
	MetricRequests = "demo_http_requests_total"
	// MetricPrice is a gauge: the price each pod computes (the same for healthy pods, up to ±1%).
	MetricPrice = "demo_price"
	// MetricDuration is a histogram of request durations, by namespace and pod.
	MetricDuration = "demo_request_duration_seconds"

	// PodLabel holds the pod name (a breaker's podNameKey).
	PodLabel = "pod"
	// CodeLabel holds the HTTP status code (a discrete breaker's key).
	CodeLabel = "code"
	// NamespaceLabel holds the pod's namespace.
	NamespaceLabel = "namespace"
)

// Recommended detector settings for a fleet, checked against Prometheus 2.42 by the e2e tests of
// test/cluster. They read every fleet a Prometheus scrapes; DiscreteQuery and friends restrict them
// to one namespace, which tests running fleets side by side need.
const (
	// DiscretePromQL feeds discreteValueOutOfList: request counts of the last 20s by code and pod.
	DiscretePromQL = `sum(increase(demo_http_requests_total[20s])) by (code, pod)`
	// DiscreteKey is the label of DiscretePromQL that holds the value (the code).
	DiscreteKey = CodeLabel
	// ContinuousPromQL feeds continuousValueDeviation: each pod's price divided by the fleet's
	// median price (1.0 = typical). NOTE: the median, not the average, so that a deviating pod does
	// not pull the reference towards itself: with an average, a factor of 3 in a fleet of 4 gives 2.0
	// for that pod and 0.67 for the healthy ones; with the median, 3.0 and 1.0.
	ContinuousPromQL = `avg by (pod) (demo_price) / scalar(quantile(0.5, avg by (pod) (demo_price)))`
	// LatencyPromQL feeds continuousValueDeviation from the histogram: each pod's 90th percentile
	// latency over the last 20s divided by the median of those percentiles. (The fleet-wide 90th
	// percentile would be no reference: one slow pod in four owns the fleet's slowest 25%.)
	LatencyPromQL = latencyPerPod + ` / scalar(quantile(0.5, ` + latencyPerPod + `))`
	latencyPerPod = `histogram_quantile(0.9, sum by (pod, le) (rate(demo_request_duration_seconds_bucket[20s])))`
	// CustomDetectorPath answers a customService breaker: {"pods":[...]}, the pods with a fault,
	// worst first.
	CustomDetectorPath = "/anomalies"
)

// DiscreteGoodValues are the codes a discrete breaker over DiscretePromQL counts as good.
var DiscreteGoodValues = []string{"200"}

// DiscreteQuery is DiscretePromQL restricted to the fleet of one namespace.
func DiscreteQuery(namespace string) string {
	return `sum(increase(demo_http_requests_total` + nsMatcher(namespace) + `[20s])) by (code, pod)`
}

// ContinuousQuery is ContinuousPromQL restricted to the fleet of one namespace.
func ContinuousQuery(namespace string) string {
	perPod := `avg by (pod) (demo_price` + nsMatcher(namespace) + `)`
	return perPod + ` / scalar(quantile(0.5, ` + perPod + `))`
}

// LatencyQuery is LatencyPromQL restricted to the fleet of one namespace.
func LatencyQuery(namespace string) string {
	perPod := `histogram_quantile(0.9, sum by (pod, le) (rate(demo_request_duration_seconds_bucket` + nsMatcher(namespace) + `[20s])))`
	return perPod + ` / scalar(quantile(0.5, ` + perPod + `))`
}

func nsMatcher(namespace string) string {
	if namespace == "" {
		return ""
	}
	return `{namespace=` + strconv.Quote(strings.TrimSpace(namespace)) + `}`
}
