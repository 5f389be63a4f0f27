// Package metrics declares Kubervisor's Prometheus metrics on controller-runtime's registry, served on the
// manager's /metrics. Every metric is labelled by namespace and KubervisorService, never by pod (SPEC §7).
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

const (
	labelNamespace = "namespace"
	labelKVS       = "kubervisorservice"
	labelBreaker   = "breaker"
)

var (
	// Ejections counts pods a breaker took (enforced="true") or would have taken (enforced="false", dry run
	// or inactive selector) out of traffic.
	Ejections = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kubervisor_ejections_total",
		Help: "Pods ejected from traffic by a breaker; enforced=false counts dry-run (would-eject) decisions.",
	}, []string{labelNamespace, labelKVS, labelBreaker, "enforced"})

	// Withheld counts anomalous pods kept in traffic because of the floor.
	Withheld = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kubervisor_withheld_ejections_total",
		Help: "Anomalous pods kept in traffic because ejecting them would break the floor.",
	}, []string{labelNamespace, labelKVS, labelBreaker})

	// FloorRestorations counts the pods put back in traffic because fewer pods served than the floor (SPEC
	// §5 step 12).
	FloorRestorations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kubervisor_floor_restorations_total",
		Help: "Pods a breaker ejected that were put back in traffic because fewer pods served than the floor.",
	}, []string{labelNamespace, labelKVS})

	// EvaluationDuration observes one breaker pass of a KubervisorService (queries, plan and pod patches).
	EvaluationDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "kubervisor_evaluation_duration_seconds",
		Help:    "Duration of one breaker pass of a KubervisorService: detector queries, plan and pod patches.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{labelNamespace, labelKVS})

	// EvaluationLateness observes how long after its due time each evaluation of a breaker started. It is a
	// property of the manager (workers, load), so it carries no label.
	EvaluationLateness = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "kubervisor_evaluation_lateness_seconds",
		Help:    "How long after its due time each breaker evaluation started (scheduling delay of the manager).",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	})

	// QueryDuration observes one detector query.
	QueryDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "kubervisor_detector_query_duration_seconds",
		Help:    "Duration of one anomaly detector query (Prometheus or custom service).",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{labelNamespace, labelKVS, labelBreaker})

	// DetectorErrors counts failed detector queries (unreachable, timeout, bad answer).
	DetectorErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kubervisor_detector_errors_total",
		Help: "Detector queries that failed: unreachable, timed out, or answered something unusable.",
	}, []string{labelNamespace, labelKVS, labelBreaker})

	// LastEvaluation is the time of each breaker's last evaluation, written or not to status.
	LastEvaluation = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kubervisor_breaker_last_evaluation_timestamp_seconds",
		Help: "Unix time of the last evaluation of a breaker.",
	}, []string{labelNamespace, labelKVS, labelBreaker})

	// Pods counts the managed pods per state: ready, in_traffic, ejected, paused, unknown, managed.
	Pods = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kubervisor_pods",
		Help: "Managed pods of a KubervisorService per state (managed, ready, in_traffic, ejected, paused, unknown).",
	}, []string{labelNamespace, labelKVS, "state"})

	// Activations counts the activator's actions: restore, pause, kill.
	Activations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kubervisor_activator_actions_total",
		Help: "Activator actions on ejected pods (action=restore, pause or kill) per activator mode.",
	}, []string{labelNamespace, labelKVS, "mode", "action"})

	// EvictionsRefused counts evictions refused by the API server (PodDisruptionBudget), retried later.
	EvictionsRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kubervisor_evictions_refused_total",
		Help: "Evictions of pods the activator wanted to kill that the API server refused (e.g. a PodDisruptionBudget).",
	}, []string{labelNamespace, labelKVS})

	// Storms counts the evaluations that started a suspected storm (more anomalous pods than
	// maxAnomalousPercent): the breaker ejected nobody.
	Storms = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kubervisor_storms_total",
		Help: "Storms suspected by a breaker's guard (more anomalous pods than maxAnomalousPercent): nobody was ejected.",
	}, []string{labelNamespace, labelKVS, labelBreaker})

	// IgnoredSamples is what the last answer of a breaker's detector said about pods that are not managed or
	// live in another namespace.
	IgnoredSamples = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kubervisor_detector_ignored_samples",
		Help: "Samples of the last detector answer about pods that are not managed or in another namespace (never acted on).",
	}, []string{labelNamespace, labelKVS, labelBreaker})

	// EndpointsReloads counts the loads of the detector endpoints file (result="success" or "failure"). A
	// failed load keeps the last good configuration. Like the other metrics of the manager's own state, it
	// carries no KubervisorService label.
	EndpointsReloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kubervisor_endpoints_config_reloads_total",
		Help: "Loads of the detector endpoints file by result (success, failure); a failed load keeps the last good configuration.",
	}, []string{"result"})

	// EndpointsLastReloadSuccessful is 1 when the last load of the detector endpoints file succeeded, else 0.
	EndpointsLastReloadSuccessful = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "kubervisor_endpoints_config_last_reload_successful",
		Help: "Whether the last load of the detector endpoints file succeeded (1) or failed and the previous configuration is in use (0).",
	})
)

func init() {
	ctrlmetrics.Registry.MustRegister(Ejections, Withheld, FloorRestorations, EvaluationDuration, EvaluationLateness, QueryDuration, DetectorErrors,
		LastEvaluation, Pods, Activations, EvictionsRefused, Storms, IgnoredSamples, EndpointsReloads, EndpointsLastReloadSuccessful)
}

// Forget drops every series of a KubervisorService that is gone.
func Forget(namespace, name string) {
	match := prometheus.Labels{labelNamespace: namespace, labelKVS: name}
	for _, v := range []interface{ DeletePartialMatch(prometheus.Labels) int }{
		Ejections, Withheld, FloorRestorations, EvaluationDuration, QueryDuration, DetectorErrors, LastEvaluation, Pods,
		Activations, EvictionsRefused, Storms, IgnoredSamples,
	} {
		v.DeletePartialMatch(match)
	}
}
