package v1alpha1

import (
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// KubervisorServiceSpec defines which Service is supervised and how its pods are judged and brought back.
// +kubebuilder:validation:XValidation:rule="self.service == oldSelf.service",message="service is immutable: delete and re-create the KubervisorService to supervise another Service"
type KubervisorServiceSpec struct {
	// service is the name of the Service, in the same namespace, whose pods are supervised.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z]([-a-z0-9]*[a-z0-9])?$`
	Service string `json:"service"`

	// dryRun, when true, makes every breaker evaluate and report only: no pod is relabelled, paused or killed.
	// +optional
	// +kubebuilder:default=false
	DryRun bool `json:"dryRun,omitempty"`

	// breakers are the anomaly detections applied to the Service's pods. Names are unique.
	// +required
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	Breakers []BreakerStrategy `json:"breakers"`

	// defaultActivator brings back the pods ejected by a breaker that has no activator of its own, and fills
	// the unset fields of those that do.
	// +optional
	// +kubebuilder:default={mode: periodic, period: 10, maxRetryCount: 3, maxPauseCount: 1}
	DefaultActivator *ActivatorStrategy `json:"defaultActivator,omitempty"`

	// trafficControl is how an ejection takes a pod out of traffic: selector (the Service selects
	// kubervisor/traffic=yes; only that Service stops sending) or readinessGate (Kubervisor sets the pod
	// condition kubervisor.io/in-traffic, which the pods declare in spec.readinessGates: the pod is NotReady
	// for every Service, mesh, load balancer, Deployment and PodDisruptionBudget). It may be switched at any
	// time: every switch puts the condition back to True on pods in traffic, so no pod stays out because of
	// it. Default selector.
	// +optional
	// +kubebuilder:default=selector
	TrafficControl TrafficControl `json:"trafficControl,omitempty"`
}

// TrafficControl is how Kubervisor takes a pod out of traffic.
// +kubebuilder:validation:Enum=selector;readinessGate
type TrafficControl string

const (
	// TrafficControlSelector: the Service selects kubervisor/traffic=yes (SPEC §3).
	TrafficControlSelector TrafficControl = "selector"
	// TrafficControlReadinessGate: the pod condition kubervisor.io/in-traffic, a readiness gate (SPEC §11).
	TrafficControlReadinessGate TrafficControl = "readinessGate"
)

// BreakerStrategy is one anomaly detection and the floor it must respect.
// +kubebuilder:validation:XValidation:rule="(has(self.discreteValueOutOfList) ? 1 : 0) + (has(self.continuousValueDeviation) ? 1 : 0) + (has(self.customService) ? 1 : 0) + (has(self.peerOutlier) ? 1 : 0) == 1",message="exactly one detector must be set: discreteValueOutOfList, continuousValueDeviation, peerOutlier or customService"
// +kubebuilder:validation:XValidation:rule="!has(self.customService) || !has(self.onNoData) || self.onNoData == 'ignore'",message="onNoData: error applies to the Prometheus detectors only; a custom service's empty answer is its verdict"
type BreakerStrategy struct {
	// name identifies the breaker; it is written on the pods it ejects (label kubervisor/strategy).
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`

	// evaluationPeriod is the time between two evaluations: an integer number of seconds or a duration
	// string such as "500ms" or "15s"; more than zero and at most 24h.
	// +optional
	// +kubebuilder:default=5
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? (self > 0 && self <= 86400) : (self.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') && duration(self) > duration('0s') && duration(self) <= duration('24h'))",message="must be a number of seconds or a duration string such as \"500ms\" or \"15s\", more than zero and at most 24h"
	EvaluationPeriod *intstr.IntOrString `json:"evaluationPeriod,omitempty"`

	// minPodsAvailableCount is the absolute number of Ready pods kept in traffic, whatever the detector says.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=0
	MinPodsAvailableCount *int32 `json:"minPodsAvailableCount,omitempty"`

	// minPodsAvailableRatio is the percentage (0..100) of the managed Ready pods kept in traffic, rounded up.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	MinPodsAvailableRatio *int32 `json:"minPodsAvailableRatio,omitempty"`

	// dryRun, when true, makes this breaker evaluate and report only.
	// +optional
	DryRun bool `json:"dryRun,omitempty"`

	// discreteValueOutOfList judges pods by the share of their events whose value is bad (e.g. HTTP codes).
	// +optional
	DiscreteValueOutOfList *DiscreteValueOutOfList `json:"discreteValueOutOfList,omitempty"`

	// continuousValueDeviation judges pods by how far a per-pod value deviates from the fleet's.
	// +optional
	ContinuousValueDeviation *ContinuousValueDeviation `json:"continuousValueDeviation,omitempty"`

	// peerOutlier judges pods by how far a raw per-pod value lies from the median of the pods in traffic,
	// in median absolute deviations (a robust z-score).
	// +optional
	PeerOutlier *PeerOutlier `json:"peerOutlier,omitempty"`

	// customService delegates the judgement to an HTTP service that returns the anomalous pods.
	// +optional
	CustomService *CustomService `json:"customService,omitempty"`

	// namespaceKey is the label holding a series' namespace in Prometheus answers: a series naming another
	// namespace is ignored (and counted in status.breakers[].ignoredSamples). "" disables the check.
	// +optional
	// +kubebuilder:default=namespace
	// +kubebuilder:validation:MaxLength=253
	NamespaceKey *string `json:"namespaceKey,omitempty"`

	// minPodsToJudge is the number of Ready managed pods below which the breaker judges nobody
	// (lastResult FleetTooSmall). 0 turns the guard off.
	// +optional
	// +kubebuilder:default=0
	// +kubebuilder:validation:Minimum=0
	MinPodsToJudge *int32 `json:"minPodsToJudge,omitempty"`

	// maxAnomalousPercent is the storm guard: when more than this percentage of the Ready managed pods is
	// anomalous in one evaluation, the detector is suspect and the breaker ejects nobody (lastResult
	// StormSuspected). 100 turns the guard off.
	// +optional
	// +kubebuilder:default=50
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	MaxAnomalousPercent *int32 `json:"maxAnomalousPercent,omitempty"`

	// stormCooldown is, after a storm, how long the anomalous share must stay at or under
	// maxAnomalousPercent before the breaker ejects again: a number of seconds or a duration string, 0 to
	// 24h. Default 0.
	// +optional
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? (self >= 0 && self <= 86400) : (self.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') && duration(self) >= duration('0s') && duration(self) <= duration('24h'))",message="must be a number of seconds or a duration string such as \"30s\", at most 24h"
	StormCooldown *intstr.IntOrString `json:"stormCooldown,omitempty"`

	// onNoData says what an answer holding no sample about any managed pod in traffic means: ignore
	// (lastResult NoData, never an ejection) or error (Ready=False, a Warning event), so that a query
	// broken by a relabelling is seen. Prometheus detectors only.
	// +optional
	// +kubebuilder:default=ignore
	OnNoData OnNoData `json:"onNoData,omitempty"`

	// probation is how long after the activator restored a pod this breaker judges it without ejecting it
	// (decision Probation in status): set it to the query window, so that a restored pod is not ejected
	// again at once on failures from before its ejection. A number of seconds or a duration string, 0 to
	// 24h. Default 0.
	// +optional
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? (self >= 0 && self <= 86400) : (self.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') && duration(self) >= duration('0s') && duration(self) <= duration('24h'))",message="must be a number of seconds or a duration string such as \"30s\", at most 24h"
	Probation *intstr.IntOrString `json:"probation,omitempty"`

	// failureThreshold is how many consecutive evaluations, in traffic, must flag a pod before this breaker
	// ejects it (a probe's failureThreshold, Envoy's consecutive_5xx): 1 to 100, default 1 (the first
	// flagging evaluation ejects). An evaluation that does not flag the pod starts its count again; a failed
	// evaluation (a detector error, a suspected storm) leaves it; evaluations while the pod warms up or is on
	// probation do not count. Until the count is reached the pod's decision is Pending. Counts live in the manager's memory: a restart or a spec change starts them
	// again, which delays an ejection and never hastens one.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	FailureThreshold *int32 `json:"failureThreshold,omitempty"`

	// warmup is how long after a pod became Ready (its Ready condition's lastTransitionTime; in readinessGate
	// mode ContainersReady's) this breaker judges it without ejecting it (decision WarmingUp, no quota used):
	// a new pod of a rollout, or a JVM warming its JIT, is not ejected for being new. Unlike probation, which
	// spares pods the activator restored, warmup spares pods that are new to traffic. A number of seconds or
	// a duration string, 0 to 24h. Default 0.
	// +optional
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? (self >= 0 && self <= 86400) : (self.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') && duration(self) >= duration('0s') && duration(self) <= duration('24h'))",message="must be a number of seconds or a duration string such as \"30s\", at most 24h"
	Warmup *intstr.IntOrString `json:"warmup,omitempty"`

	// activator brings back the pods this breaker ejected; unset fields are taken from defaultActivator.
	// +optional
	Activator *ActivatorStrategy `json:"activator,omitempty"`
}

// DiscreteValueOutOfList flags a pod when too large a share of its events carries a bad value.
// +kubebuilder:validation:XValidation:rule="has(self.goodValues) != has(self.badValues)",message="exactly one of goodValues or badValues must be set"
// +kubebuilder:validation:XValidation:rule="!(has(self.prometheusService) && has(self.endpoint))",message="set prometheusService or endpoint, not both"
type DiscreteValueOutOfList struct {
	// prometheusService is an open Prometheus to query, with plain requests: host:port or an http(s):// URL.
	// Set it or endpoint, not both; with neither, the manager's default endpoint is used (SPEC §2.3).
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="self.matches('^https?://') ? isURL(self) : self.matches('^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?:[0-9]{1,5}$')",message="must be host:port or an http(s):// URL"
	PrometheusService string `json:"prometheusService,omitempty"`

	// endpoint names a detector endpoint the manager's administrators defined (URL, TLS, credentials,
	// headers: SPEC §2.3). A KubervisorService never sees or sets credentials or headers.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Endpoint string `json:"endpoint,omitempty"`

	// promQL returns one counter per (value, pod), e.g. sum(increase(http_requests_total[1m])) by (code, pod).
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=8192
	PromQL string `json:"promQL"`

	// key is the label that holds the value, e.g. code.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Key string `json:"key"`

	// podNameKey is the label that holds the pod name, e.g. pod.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	PodNameKey string `json:"podNameKey"`

	// goodValues lists the good values; every other value is bad. Exclusive with badValues.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=253
	GoodValues []string `json:"goodValues,omitempty"`

	// badValues lists the bad values; every other value is good. Exclusive with goodValues.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=253
	BadValues []string `json:"badValues,omitempty"`

	// tolerance is the percentage (0..100) of bad events tolerated before a pod is anomalous.
	// +optional
	// +kubebuilder:default=50
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	Tolerance *int32 `json:"tolerance,omitempty"`

	// minActivity is the number of events (good plus bad) a pod needs before it is judged.
	// +optional
	// +kubebuilder:default=2
	// +kubebuilder:validation:Minimum=0
	MinActivity *int32 `json:"minActivity,omitempty"`
}

// ContinuousValueDeviation flags a pod whose value deviates from the fleet's by more than a tolerance.
// +kubebuilder:validation:XValidation:rule="!(has(self.prometheusService) && has(self.endpoint))",message="set prometheusService or endpoint, not both"
type ContinuousValueDeviation struct {
	// prometheusService is an open Prometheus to query, with plain requests: host:port or an http(s):// URL.
	// Set it or endpoint, not both; with neither, the manager's default endpoint is used (SPEC §2.3).
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="self.matches('^https?://') ? isURL(self) : self.matches('^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?:[0-9]{1,5}$')",message="must be host:port or an http(s):// URL"
	PrometheusService string `json:"prometheusService,omitempty"`

	// endpoint names a detector endpoint the manager's administrators defined (URL, TLS, credentials,
	// headers: SPEC §2.3). A KubervisorService never sees or sets credentials or headers.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Endpoint string `json:"endpoint,omitempty"`

	// promQL returns one value per pod: the pod's value divided by the fleet's (1.0 is the average).
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=8192
	PromQL string `json:"promQL"`

	// podNameKey is the label that holds the pod name, e.g. pod.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	PodNameKey string `json:"podNameKey"`

	// maxDeviationPercent is the largest |1 - value| tolerated, in percent.
	// +optional
	// +kubebuilder:default=75
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100000
	MaxDeviationPercent *int32 `json:"maxDeviationPercent,omitempty"`
}

// OnNoData is what a breaker makes of an answer without data.
// +kubebuilder:validation:Enum=ignore;error
type OnNoData string

const (
	// OnNoDataIgnore reports NoData and ejects nobody.
	OnNoDataIgnore OnNoData = "ignore"
	// OnNoDataError reports an error: Ready=False, reason DetectorError, a Warning event.
	OnNoDataError OnNoData = "error"
)

// PeerDirection says which side of the median is anomalous.
// +kubebuilder:validation:Enum=high;low;both
type PeerDirection string

const (
	// PeerDirectionHigh flags values above the median (latencies, error rates).
	PeerDirectionHigh PeerDirection = "high"
	// PeerDirectionLow flags values below the median (throughput, a price that drops to 0).
	PeerDirectionLow PeerDirection = "low"
	// PeerDirectionBoth flags values on either side.
	PeerDirectionBoth PeerDirection = "both"
)

// PeerOutlier flags a pod whose raw value lies far from its peers': |value − median| / (1.4826 × MAD) above
// threshold, where the median and the median absolute deviation (MAD) are those of the pods in traffic.
// Unlike a mean, the median does not move when one pod reads 0. Needs at least 3 pods in traffic with a
// value, else NoData.
// +kubebuilder:validation:XValidation:rule="!(has(self.prometheusService) && has(self.endpoint))",message="set prometheusService or endpoint, not both"
type PeerOutlier struct {
	// prometheusService is an open Prometheus to query, with plain requests: host:port or an http(s):// URL.
	// Set it or endpoint, not both; with neither, the manager's default endpoint is used (SPEC §2.3).
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="self.matches('^https?://') ? isURL(self) : self.matches('^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?:[0-9]{1,5}$')",message="must be host:port or an http(s):// URL"
	PrometheusService string `json:"prometheusService,omitempty"`

	// endpoint names a detector endpoint the manager's administrators defined (URL, TLS, credentials,
	// headers: SPEC §2.3). A KubervisorService never sees or sets credentials or headers.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Endpoint string `json:"endpoint,omitempty"`

	// promQL returns one raw value per pod (a p99 latency, an error rate, a price), with no fleet
	// normalisation.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=8192
	PromQL string `json:"promQL"`

	// podNameKey is the label that holds the pod name, e.g. pod.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	PodNameKey string `json:"podNameKey"`

	// direction is high (default), low or both: the side of the median that is anomalous.
	// +optional
	// +kubebuilder:default=high
	Direction PeerDirection `json:"direction,omitempty"`

	// threshold is the robust z-score above which a pod is anomalous, more than 0: a number (3, 2.5) or a
	// decimal string ("2.5"), at most 16 characters. Default 3.
	// +optional
	// +kubebuilder:default="3"
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:pruning:PreserveUnknownFields
	Threshold *resource.Quantity `json:"threshold,omitempty"`

	// minDeviationPercent keeps a pod within this share of the median from being anomalous, so that a
	// tight fleet (MAD near 0) is not split on noise. Default 10.
	// +optional
	// +kubebuilder:default=10
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100000
	MinDeviationPercent *int32 `json:"minDeviationPercent,omitempty"`

	// minAbsoluteDeviation keeps a pod whose value lies within this distance of the median, in the metric's
	// own units, from being anomalous: a number or a decimal string, 0 or more. Default 0.001.
	// It matters when the median is 0 or near it (an error rate on a healthy fleet): the MAD is then 0 and
	// so is minDeviationPercent's share of the median, so any value above 0 would score +Inf and a single
	// error would eject a pod. Set it to the smallest deviation worth an ejection, in the metric's units (an
	// error ratio of 0.05, say). The default changes nothing for a fleet whose median is 0.01 or more (10%
	// of the median, minDeviationPercent's default, is then the larger bound) and ignores only deviations
	// too small to act on in the usual units (seconds, ratios, requests per second); lower it for a metric
	// whose values are themselves that small; 0 turns it off.
	// +optional
	// +kubebuilder:default="0.001"
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:pruning:PreserveUnknownFields
	MinAbsoluteDeviation *resource.Quantity `json:"minAbsoluteDeviation,omitempty"`
}

// CustomService delegates anomaly detection to an HTTP service.
// +kubebuilder:validation:XValidation:rule="!has(self.endpoint) || !has(self.url) || self.url.startsWith('/')",message="with endpoint, url is a path under the endpoint's URL (starting with /)"
type CustomService struct {
	// url is the service to ask: host:port/path or an http(s):// URL; or a path (starting with /) under the
	// URL of the named endpoint or, without endpoint, of the manager's default endpoint (SPEC §2.3); with
	// endpoint, a path or nothing. It receives a GET with the query parameters namespace,
	// kubervisorservice and breaker, and answers 200 with a v1 PodList (JSON or YAML) or
	// {"pods": ["name", ...]}, worst first.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="self.startsWith('/') || (self.matches('^https?://') ? isURL(self) : self.matches('^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?(:[0-9]{1,5})?(/.*)?$'))",message="must be host:port/path, an http(s):// URL, or a path under a detector endpoint"
	URL string `json:"url,omitempty"`

	// endpoint names a detector endpoint the manager's administrators defined (SPEC §2.3); url is then a
	// path under its URL. Without endpoint, a url that is only a path, or no url, uses the manager's default
	// endpoint.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Endpoint string `json:"endpoint,omitempty"`
}

// ActivatorMode says what happens to an ejected pod once its period is over.
// +kubebuilder:validation:Enum=periodic;retryAndPause;retryAndKill
type ActivatorMode string

const (
	// ActivatorModePeriodic brings the pod back after each period, forever.
	ActivatorModePeriodic ActivatorMode = "periodic"
	// ActivatorModeRetryAndPause brings the pod back maxRetryCount times, then pauses it (or kills it when
	// maxPauseCount pods are already paused).
	ActivatorModeRetryAndPause ActivatorMode = "retryAndPause"
	// ActivatorModeRetryAndKill brings the pod back maxRetryCount times, then evicts it.
	ActivatorModeRetryAndKill ActivatorMode = "retryAndKill"
)

// ActivatorStrategy says when and how ejected pods come back. In a breaker's activator every unset field is
// taken from the KubervisorService's defaultActivator, and from the built-in defaults after that.
type ActivatorStrategy struct {
	// mode is periodic, retryAndPause or retryAndKill. Built-in default: periodic.
	// +optional
	Mode ActivatorMode `json:"mode,omitempty"`

	// period is the time out of traffic before a retry: an integer number of seconds or a duration string;
	// more than zero and at most 24h. Built-in default: 10s. Retry n waits n periods.
	// +optional
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? (self > 0 && self <= 86400) : (self.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') && duration(self) > duration('0s') && duration(self) <= duration('24h'))",message="must be a number of seconds or a duration string such as \"500ms\" or \"15s\", more than zero and at most 24h"
	Period *intstr.IntOrString `json:"period,omitempty"`

	// maxRetryCount is the number of ejections after which retryAndPause and retryAndKill stop retrying.
	// Built-in default: 3.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000
	MaxRetryCount *int32 `json:"maxRetryCount,omitempty"`

	// maxPauseCount is, for retryAndPause, the most pods paused at once; beyond it pods are killed instead.
	// Set in a breaker's own activator, it counts the pods that breaker paused; in defaultActivator (or the
	// built-in default, 1), every paused pod of the KubervisorService.
	// +optional
	// +kubebuilder:validation:Minimum=0
	MaxPauseCount *int32 `json:"maxPauseCount,omitempty"`

	// backoff is how the wait grows with the retry count n: linear (n × period, the 2018 behaviour) or
	// exponential (period × 2^(n−1)). Built-in default: linear.
	// +optional
	Backoff Backoff `json:"backoff,omitempty"`

	// maxPeriod caps any wait (after jitter): a number of seconds or a duration string, more than zero and
	// at most 24h. Built-in default: none (waits are capped at 24h × maxRetryCount by the API's limits).
	// +optional
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? (self > 0 && self <= 86400) : (self.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') && duration(self) > duration('0s') && duration(self) <= duration('24h'))",message="must be a number of seconds or a duration string such as \"5m\", more than zero and at most 24h"
	MaxPeriod *intstr.IntOrString `json:"maxPeriod,omitempty"`

	// jitterPercent spreads each wait by up to ± this share, deterministically from the pod's UID and retry
	// count (a restarted controller computes the same due time; pods ejected together do not come back
	// together). 0 to 100. Built-in default: 0.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	JitterPercent *int32 `json:"jitterPercent,omitempty"`

	// forgiveAfter: each full forgiveAfter a pod spends in traffic since it was restored lowers its retry
	// count by one, computed when it is next ejected. A number of seconds or a duration string, more than
	// zero and at most 720h (30 days). Built-in default: never.
	// +optional
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? (self > 0 && self <= 2592000) : (self.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') && duration(self) > duration('0s') && duration(self) <= duration('720h'))",message="must be a number of seconds or a duration string such as \"10m\", more than zero and at most 720h"
	ForgiveAfter *intstr.IntOrString `json:"forgiveAfter,omitempty"`
}

// Backoff says how an activator's wait grows with the retry count.
// +kubebuilder:validation:Enum=linear;exponential
type Backoff string

const (
	// BackoffLinear waits n × period at retry n.
	BackoffLinear Backoff = "linear"
	// BackoffExponential waits period × 2^(n−1) at retry n.
	BackoffExponential Backoff = "exponential"
)

// PodCounts counts the pods a KubervisorService manages.
type PodCounts struct {
	// managed is the number of pods labelled with this KubervisorService's name.
	Managed int32 `json:"managed"`
	// ready is the number of managed pods whose Ready condition is True.
	Ready int32 `json:"ready"`
	// inTraffic is the number of serving managed pods: Ready, not terminating, labelled kubervisor/traffic=yes.
	InTraffic int32 `json:"inTraffic"`
	// ejected is the number of managed pods labelled kubervisor/traffic=no.
	Ejected int32 `json:"ejected"`
	// paused is the number of managed pods labelled kubervisor/traffic=pause.
	Paused int32 `json:"paused"`
	// unknown is the number of managed pods whose kubervisor/traffic label is missing or unknown.
	Unknown int32 `json:"unknown"`
}

// BreakerStatus is the outcome of a breaker's last evaluation. Pod name lists are capped at
// MaxPodNamesInStatus entries.
type BreakerStatus struct {
	// name is the breaker's name.
	// +required
	Name string `json:"name"`

	// lastEvaluationTime is the time of the evaluation that last changed this entry. Evaluations that change
	// nothing are not written (no status write in steady state); the metric
	// kubervisor_breaker_last_evaluation_timestamp_seconds follows every evaluation.
	// +optional
	LastEvaluationTime *metav1.Time `json:"lastEvaluationTime,omitempty"`

	// lastResult is OK, NoData, or "Error: " followed by what went wrong.
	// +optional
	LastResult string `json:"lastResult,omitempty"`

	// anomalousPods are the managed pods the detector flagged, worst first.
	// +optional
	AnomalousPods []string `json:"anomalousPods,omitempty"`

	// ejectedPods are the pods this breaker holds out of traffic now (kubervisor/traffic=no, ejected by it),
	// sorted.
	// +optional
	EjectedPods []string `json:"ejectedPods,omitempty"`

	// withheldPods are anomalous pods kept in traffic by the floor.
	// +optional
	WithheldPods []string `json:"withheldPods,omitempty"`

	// wouldEjectPods are the pods a dry run (or an inactive Service selector) would have ejected.
	// +optional
	WouldEjectPods []string `json:"wouldEjectPods,omitempty"`

	// ignoredSamples counts what the last answer said about pods that are not managed or live in another
	// namespace: never acted on, reported so that a query selecting the wrong pods is seen.
	// +optional
	IgnoredSamples int32 `json:"ignoredSamples,omitempty"`

	// warnings are what Prometheus attached to its last answer (e.g. a partial response), capped.
	// +optional
	// +kubebuilder:validation:MaxItems=20
	Warnings []string `json:"warnings,omitempty"`

	// lastStormTime is the time of the breaker's last suspected storm once it is over (written when the
	// anomalous share falls back under maxAnomalousPercent, not at every evaluation of a storm), so that
	// stormCooldown holds across a restart of the manager and an edit of the spec. A manager that starts
	// while lastResult is StormSuspected counts the cooldown from its own start: a restart delays an
	// ejection, never hastens one.
	// +optional
	LastStormTime *metav1.Time `json:"lastStormTime,omitempty"`

	// anomalies says, per anomalous pod (at most 20, worst first), what the breaker decided and why.
	// An entry is rewritten only when its pod's decision changes.
	// +optional
	// +listType=map
	// +listMapKey=pod
	// +kubebuilder:validation:MaxItems=20
	Anomalies []PodDecision `json:"anomalies,omitempty"`
}

// Decision is what a breaker decided about one anomalous pod.
// +kubebuilder:validation:Enum=Ejected;Withheld;WouldEject;Probation;Pending;WarmingUp;Ignored
type Decision string

const (
	// DecisionEjected: the pod is out of traffic because of this breaker.
	DecisionEjected Decision = "Ejected"
	// DecisionWithheld: the pod stays in traffic to hold the floor, or because a guard (storm, fleet too
	// small) stopped the breaker.
	DecisionWithheld Decision = "Withheld"
	// DecisionWouldEject: a dry run would have ejected the pod.
	DecisionWouldEject Decision = "WouldEject"
	// DecisionProbation: the pod was restored too recently to be ejected again.
	DecisionProbation Decision = "Probation"
	// DecisionPending: the pod is anomalous, but in fewer consecutive evaluations than the breaker's
	// failureThreshold.
	DecisionPending Decision = "Pending"
	// DecisionWarmingUp: the pod became Ready less than the breaker's warmup ago.
	DecisionWarmingUp Decision = "WarmingUp"
	// DecisionIgnored: the pod is not in traffic (not Ready, terminating, already out): nothing to decide.
	DecisionIgnored Decision = "Ignored"
)

// PodDecision is a breaker's decision about one anomalous pod.
type PodDecision struct {
	// pod is the pod's name.
	// +required
	Pod string `json:"pod"`
	// decision is Ejected, Withheld, WouldEject, Probation, Pending, WarmingUp or Ignored.
	// +required
	Decision Decision `json:"decision"`
	// reason says why, in the detector's and the breaker's words.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Reason string `json:"reason,omitempty"`
	// since is when the pod got this decision.
	// +optional
	Since metav1.Time `json:"since,omitempty"`
}

// KubervisorServiceStatus is the observed state of a KubervisorService.
type KubervisorServiceStatus struct {
	// observedGeneration is the generation of the spec the status was computed from.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions are Ready, ServiceFound, TrafficControlled, EjectionAllowed and Conflict.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`

	// pods counts the managed pods by state.
	// +optional
	Pods PodCounts `json:"pods,omitempty"`

	// breakers holds the outcome of each breaker's evaluations.
	// +optional
	// +listType=map
	// +listMapKey=name
	Breakers []BreakerStatus `json:"breakers,omitempty"`

	// manual lists the pods held out of traffic by hand (kubectl kubervisor eject), at most 20.
	// +optional
	// +listType=map
	// +listMapKey=pod
	// +kubebuilder:validation:MaxItems=20
	Manual []ManualHold `json:"manual,omitempty"`
}

// ManualHold is a pod ejected by hand.
type ManualHold struct {
	// pod is the pod's name.
	// +required
	Pod string `json:"pod"`
	// by is who asked for the ejection (their username, from a SelfSubjectReview).
	// +optional
	By string `json:"by,omitempty"`
	// reason is what they gave as the reason.
	// +optional
	Reason string `json:"reason,omitempty"`
	// since is when the pod left traffic.
	// +optional
	Since *metav1.Time `json:"since,omitempty"`
	// until is when the pod comes back by itself; unset: when restored by hand.
	// +optional
	Until *metav1.Time `json:"until,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=kvs,categories=kubervisor
// +kubebuilder:printcolumn:name="Service",type=string,JSONPath=`.spec.service`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Managed",type=integer,JSONPath=`.status.pods.managed`
// +kubebuilder:printcolumn:name="In-Traffic",type=integer,JSONPath=`.status.pods.inTraffic`
// +kubebuilder:printcolumn:name="Ejected",type=integer,JSONPath=`.status.pods.ejected`
// +kubebuilder:printcolumn:name="Paused",type=integer,JSONPath=`.status.pods.paused`
// +kubebuilder:printcolumn:name="Dry-Run",type=boolean,JSONPath=`.spec.dryRun`
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.trafficControl`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// KubervisorService supervises the pods of one Service: breakers eject anomalous pods from its endpoints,
// never under a floor, and an activator brings them back.
type KubervisorService struct {
	metav1.TypeMeta `json:",inline"`

	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec says which Service is supervised and how.
	// +required
	Spec KubervisorServiceSpec `json:"spec"`

	// status is the observed state.
	// +optional
	Status KubervisorServiceStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// KubervisorServiceList contains a list of KubervisorService.
type KubervisorServiceList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []KubervisorService `json:"items"`
}
