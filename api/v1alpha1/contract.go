package v1alpha1

import (
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/intstr"
)

// The pod contract (SPEC §3). Every key Kubervisor reads or writes on a pod is listed here and nowhere else.
const (
	// KeyPrefix begins every pod label and annotation key of the contract: a pod with none of them (and
	// without the ConditionInTraffic gate) is one Kubervisor has no part in.
	KeyPrefix = "kubervisor/"
	// LabelTraffic says whether a pod should receive traffic: TrafficYes, TrafficNo or TrafficPause.
	LabelTraffic = "kubervisor/traffic"
	// LabelName names the KubervisorService that supervises the pod.
	LabelName = "kubervisor/name"
	// LabelStrategy names the breaker that last ejected the pod; it selects the activator.
	LabelStrategy = "kubervisor/strategy"
	// AnnotationBreakAt is the RFC 3339 time (sub-second precision) of the pod's last ejection.
	AnnotationBreakAt = "kubervisor/break-at"
	// AnnotationRetryCount is the number of ejections of the pod so far.
	AnnotationRetryCount = "kubervisor/retry-count"
	// AnnotationRestoredAt is the RFC 3339 time the activator last put the pod back in traffic.
	AnnotationRestoredAt = "kubervisor/restored-at"
	// AnnotationActivator is the fingerprint (ResolvedActivator.Fingerprint) of the activator in force when
	// the pod was last ejected (for a pod ejected by a version that did not record it, when the manager first
	// saw it out of traffic): an activator edited since then never pauses or kills the pod at once (SPEC §6,
	// a spec change never punishes).
	AnnotationActivator = "kubervisor/activator"

	// Manual control (SPEC §10). A request is written on the pod by `kubectl kubervisor eject|restore`
	// (the only writer of these keys besides the controller, which removes them once it has acted):
	// AnnotationRequest is RequestEject or RequestRestore; the others say who asked, when, why, for how
	// long (eject only, a duration string; unset: until restored) and whether the floor may be broken
	// ("true").
	AnnotationRequest       = "kubervisor/request"
	AnnotationRequestBy     = "kubervisor/request-by"
	AnnotationRequestAt     = "kubervisor/request-at"
	AnnotationRequestReason = "kubervisor/request-reason"
	AnnotationRequestFor    = "kubervisor/request-for"
	AnnotationRequestForce  = "kubervisor/request-force"
	// AnnotationRequestOutcome is the controller's answer to the last request: its request-at, a space,
	// then OutcomeDonePrefix or OutcomeRefusedPrefix and what was done or why not.
	AnnotationRequestOutcome = "kubervisor/request-outcome"
	// A pod ejected by hand carries who ejected it, why, and until when (RFC 3339; unset: until
	// restored); the activator's mode does not apply to it. Its kubervisor/strategy label is ManualStrategy.
	AnnotationManualBy     = "kubervisor/manual-by"
	AnnotationManualReason = "kubervisor/manual-reason"
	AnnotationManualUntil  = "kubervisor/manual-until"

	// RequestEject and RequestRestore are the values of AnnotationRequest.
	RequestEject   = "eject"
	RequestRestore = "restore"
	// ManualStrategy is the kubervisor/strategy of a pod ejected by hand. It is not a valid breaker name
	// (breaker names are DNS-1035 labels, without dots), so it never selects a breaker's activator.
	ManualStrategy = "manual.kubervisor.io"

	// TrafficYes keeps the pod in traffic.
	TrafficYes = "yes"
	// TrafficNo takes the pod out of traffic until the activator brings it back.
	TrafficNo = "no"
	// TrafficPause takes the pod out of traffic for good, for investigation.
	TrafficPause = "pause"

	// ConditionInTraffic is the pod condition of the readinessGate mode (SPEC §11), declared by the pods in
	// spec.readinessGates: True while kubervisor/traffic is yes, False while it is no or pause.
	ConditionInTraffic = "kubervisor.io/in-traffic"
	// GateReasonEjected and GateReasonPaused are the reasons of a False ConditionInTraffic (traffic no,
	// pause); GateReasonInTraffic, GateReasonSelectorMode and GateReasonNotSupervised those of a True one:
	// the pod in traffic, its KubervisorService in selector mode, or no KubervisorService supervising it.
	GateReasonEjected       = "Ejected"
	GateReasonPaused        = "Paused"
	GateReasonInTraffic     = "InTraffic"
	GateReasonSelectorMode  = "SelectorMode"
	GateReasonNotSupervised = "NotSupervised"

	// AnnotationDeletionCost is the Kubernetes annotation a ReplicaSet ranks its pods by when it removes
	// some (scale-down, rollout): lowest cost first. Kubervisor sets it to DeletionCostOutOfTraffic on the
	// pods it holds out of traffic (no and pause) and removes it when it puts them back, so that a
	// ReplicaSet removes pods that serve nothing before serving ones (SPEC §5 step 12). It is not under
	// KeyPrefix: it belongs to Kubernetes, and Kubervisor owns it only on pods it holds out of traffic.
	AnnotationDeletionCost = "controller.kubernetes.io/pod-deletion-cost"
	// DeletionCostOutOfTraffic is the deletion cost of a pod out of traffic: the lowest int32, below any
	// serving pod (the default cost is 0).
	DeletionCostOutOfTraffic = "-2147483648"

	// Finalizer is set on every KubervisorService so that its pods are released before it goes away.
	Finalizer = "breaker.kubervisor.io/finalizer"
)

// OwnedLabels are the pod labels a KubervisorService owns (removed when it lets go of a pod).
var OwnedLabels = []string{LabelName, LabelStrategy}

// OwnedAnnotations are the pod annotations a KubervisorService owns (removed when it lets go of a pod).
var OwnedAnnotations = []string{AnnotationBreakAt, AnnotationRetryCount, AnnotationRestoredAt, AnnotationActivator,
	AnnotationManualBy, AnnotationManualReason, AnnotationManualUntil}

// RequestAnnotations are the keys of a manual request, removed by the controller once it has acted.
var RequestAnnotations = []string{AnnotationRequest, AnnotationRequestBy, AnnotationRequestAt, AnnotationRequestReason,
	AnnotationRequestFor, AnnotationRequestForce}

// Condition types of a KubervisorService.
const (
	// ConditionReady is True when the Service is found, the configuration is usable, there is no conflict
	// and the last evaluation of every breaker succeeded.
	ConditionReady = "Ready"
	// ConditionServiceFound is True when the named Service exists.
	ConditionServiceFound = "ServiceFound"
	// ConditionTrafficControlled is True when the Service selector holds kubervisor/traffic: "yes".
	ConditionTrafficControlled = "TrafficControlled"
	// ConditionEjectionAllowed is False while no pod may leave traffic: reason BelowFloor while fewer pods
	// serve than the floor (Kubervisor restores the pods its breakers ejected), FloorReached while anomalies
	// are withheld by the floor, StormSuspected while a breaker's storm guard holds.
	ConditionEjectionAllowed = "EjectionAllowed"
	// ConditionConflict is True when another KubervisorService supervises the same Service or pods.
	ConditionConflict = "Conflict"
	// ConditionReadinessGateMissing is True, in readinessGate mode, while managed pods lack the readiness
	// gate kubervisor.io/in-traffic: those pods are never ejected.
	ConditionReadinessGateMissing = "ReadinessGateMissing"
)

// Condition reasons.
const (
	ReasonServiceFound       = "ServiceFound"
	ReasonServiceNotFound    = "ServiceNotFound"
	ReasonSelectorHasTraffic = "SelectorHasTrafficKey"
	ReasonSelectorNoTraffic  = "SelectorLacksTrafficKey"
	ReasonEmptySelector      = "EmptySelector"
	ReasonNoConflict         = "NoConflict"
	ReasonServiceClaimed     = "ServiceClaimedByOther"
	ReasonPodsClaimed        = "PodsClaimedByOther"
	ReasonAllBreakersOK      = "BreakersHealthy"
	ReasonDetectorError      = "DetectorError"
	ReasonInvalidSpec        = "InvalidSpec"
	ReasonFloorReached       = "FloorReached"
	ReasonBelowFloor         = "BelowFloor"
	ReasonWithinFloor        = "WithinFloor"
	ReasonPending            = "Pending"
	ReasonStormSuspected     = "StormSuspected"
	ReasonAdoptionFailed     = "AdoptionFailed"
	ReasonGateMissing        = "PodsLackReadinessGate"
	ReasonGatesPresent       = "EveryPodHasTheGate"
	ReasonSelectorMode       = "SelectorMode"
	ReasonReadinessGateMode  = "ReadinessGateMode"
)

// The two kinds of answer to a manual request, in kubervisor/request-outcome after its request-at.
const (
	// OutcomeDonePrefix starts the answer to a request carried out: "Done: ejected by alice until restored".
	OutcomeDonePrefix = "Done: "
	// OutcomeRefusedPrefix starts the answer to a request refused, followed by why.
	OutcomeRefusedPrefix = "Refused: "
)

// Values of status.breakers[].lastResult. An error is ResultErrorPrefix followed by what went wrong.
const (
	// ResultOK is a successful evaluation whose answer held data about the managed pods.
	ResultOK = "OK"
	// ResultNoData is a successful evaluation whose answer held no usable sample: never a reason to eject.
	ResultNoData = "NoData"
	// ResultErrorPrefix starts the lastResult of a failed evaluation.
	ResultErrorPrefix = "Error: "
	// ResultFleetTooSmall is an evaluation that judged nobody: fewer Ready managed pods than minPodsToJudge.
	ResultFleetTooSmall = "FleetTooSmall"
	// ResultStormSuspected is an evaluation that ejected nobody: more pods anomalous than
	// maxAnomalousPercent, or a storm's cooldown not over.
	ResultStormSuspected = "StormSuspected"
)

// Event reasons (what users match on in `kubectl get events --field-selector reason=...`).
const (
	EventEjected           = "Ejected"
	EventWouldEject        = "WouldEject"
	EventEjectionWithheld  = "EjectionWithheld"
	EventDetectorFailed    = "DetectorFailed"
	EventRestored          = "Restored"
	EventPaused            = "Paused"
	EventKilled            = "Killed"
	EventEvictionRefused   = "EvictionRefused"
	EventMalformedPodState = "MalformedPodState"
	EventInvalidActivator  = "InvalidActivator"
	EventLeftPaused        = "LeftPaused"
	EventStormSuspected    = "StormSuspected"
	EventOrphanReleased    = "OrphanReleased"
	// EventFloorRestored is the Warning of a pass that put pods its breakers ejected back in traffic
	// because fewer pods served than the floor (SPEC §5 step 12).
	EventFloorRestored     = "FloorRestored"
	EventPrometheusWarning = "PrometheusWarning"
	// EventEndpointWarning reports what a breaker's detector endpoint warns about (SPEC §2.3): a certificate
	// not verified, a configuration file that does not parse (the last good one is in use).
	EventEndpointWarning = "EndpointWarning"
	EventManualEject     = "ManualEject"
	EventManualRestore   = "ManualRestore"
	EventManualRefused   = "ManualRequestRefused"
	// EventInvalidSpec and EventAdoptionFailed accompany Ready=False with the same reason, once per change
	// of its message.
	EventInvalidSpec    = ReasonInvalidSpec
	EventAdoptionFailed = ReasonAdoptionFailed
)

// Event actions (the events.k8s.io action field: what the controller did or tried).
const (
	ActionEvaluate = "Evaluate"
	ActionEject    = "Eject"
	ActionRestore  = "Restore"
	ActionPause    = "Pause"
	ActionKill     = "Kill"
	ActionActivate = "Activate"
	ActionRelease  = "Release"
)

// Built-in defaults, used wherever neither a breaker nor defaultActivator sets a field.
const (
	DefaultEvaluationPeriod = 5 * time.Second
	DefaultActivatorPeriod  = 10 * time.Second
	DefaultMaxRetryCount    = int32(3)
	DefaultMaxPauseCount    = int32(1)
	DefaultTolerance        = int32(50)
	DefaultMinActivity      = int32(2)
	DefaultMaxDeviation     = int32(75)
	DefaultMinPodsAvailable = int32(1)
	DefaultMaxAnomalous     = int32(50)
	DefaultNamespaceKey     = "namespace"
	DefaultPeerThreshold    = 3.0
	DefaultMinDeviation     = int32(10)
	// DefaultMinAbsoluteDeviation is peerOutlier.minAbsoluteDeviation's default, in the metric's units.
	DefaultMinAbsoluteDeviation = 0.001
	MaxPeriod                   = 24 * time.Hour
	// MaxPodNamesInStatus caps every pod name list in status.breakers[].
	MaxPodNamesInStatus = 20
)

// ParsePeriod reads an integer number of seconds or a duration string; nil gives def. The API server
// already refuses bad values; this guards against objects written before validation existed.
func ParsePeriod(v *intstr.IntOrString, def time.Duration) (time.Duration, error) {
	return parseWithin(v, def, MaxPeriod)
}

// MaxForgiveAfter is the longest forgiveAfter.
const MaxForgiveAfter = 30 * 24 * time.Hour

// parseWithin reads a period in (0, limit]; nil gives def.
func parseWithin(v *intstr.IntOrString, def, limit time.Duration) (time.Duration, error) {
	if v == nil {
		return def, nil
	}
	var d time.Duration
	switch v.Type {
	case intstr.Int:
		d = time.Duration(v.IntVal) * time.Second
	default:
		var err error
		if d, err = time.ParseDuration(v.StrVal); err != nil {
			return 0, fmt.Errorf("period %q: %w", v.StrVal, err)
		}
	}
	if d <= 0 || d > limit {
		return 0, fmt.Errorf("period %s: must be more than zero and at most %s", d, limit)
	}
	return d, nil
}

// ResolvedActivator is an activator with every field filled.
type ResolvedActivator struct {
	Mode          ActivatorMode
	Period        time.Duration
	MaxRetryCount int32
	MaxPauseCount int32
	// PauseScope is whose paused pods count against MaxPauseCount: the breaker's name when its own
	// activator sets maxPauseCount (its pods only), "" when it comes from defaultActivator or the built-in
	// default (every pod of the KubervisorService).
	PauseScope string
	Backoff    Backoff
	// MaxPeriod caps every wait; 0 is no cap.
	MaxPeriod time.Duration
	// JitterPercent spreads every wait by ± that share, 0 to 100.
	JitterPercent int32
	// ForgiveAfter lowers the retry count by one per full period in traffic; 0 never forgives.
	ForgiveAfter time.Duration
}

// Fingerprint identifies what decides whether a pod past its retries is paused or killed: the mode and
// maxRetryCount. It is written on a pod at each ejection (AnnotationActivator).
func (r ResolvedActivator) Fingerprint() string {
	h := fnv.New32a()
	_, _ = fmt.Fprintf(h, "%s/%d", r.Mode, r.MaxRetryCount) // a hash.Hash never fails to write
	return fmt.Sprintf("%08x", h.Sum32())
}

// ActivatorFor returns the activator that applies to pods ejected by the named breaker: the breaker's own
// activator, its unset fields taken from defaultActivator, then from the built-in defaults. An unknown
// breaker name (a pod ejected by a breaker since removed, or a label set by hand) gets defaultActivator.
func (s *KubervisorServiceSpec) ActivatorFor(breaker string) (ResolvedActivator, error) {
	layers := []*ActivatorStrategy{nil, s.DefaultActivator}
	for i := range s.Breakers {
		if s.Breakers[i].Name == breaker {
			layers[0] = s.Breakers[i].Activator
		}
	}
	r := ResolvedActivator{Mode: ActivatorModePeriodic, MaxRetryCount: DefaultMaxRetryCount, MaxPauseCount: DefaultMaxPauseCount,
		Backoff: BackoffLinear}
	var period, maxPeriod, forgive *intstr.IntOrString
	// Apply the least specific layer first so that the most specific one wins.
	for _, a := range slices.Backward(layers) {

		if a == nil {
			continue
		}
		if a.Mode != "" {
			r.Mode = a.Mode
		}
		if a.Period != nil {
			period = a.Period
		}
		if a.MaxRetryCount != nil {
			r.MaxRetryCount = *a.MaxRetryCount
		}
		if a.MaxPauseCount != nil {
			if a == layers[0] {
				r.PauseScope = breaker
			}
			r.MaxPauseCount = *a.MaxPauseCount
		}
		if a.Backoff != "" {
			r.Backoff = a.Backoff
		}
		if a.MaxPeriod != nil {
			maxPeriod = a.MaxPeriod
		}
		if a.JitterPercent != nil {
			r.JitterPercent = min(max(*a.JitterPercent, 0), 100)
		}
		if a.ForgiveAfter != nil {
			forgive = a.ForgiveAfter
		}
	}
	var err, errs error
	if r.Period, err = ParsePeriod(period, DefaultActivatorPeriod); err != nil {
		errs = errors.Join(errs, err)
	}
	if r.MaxPeriod, err = ParsePeriod(maxPeriod, 0); err != nil {
		errs = errors.Join(errs, fmt.Errorf("maxPeriod: %w", err))
	}
	if r.ForgiveAfter, err = parseWithin(forgive, 0, MaxForgiveAfter); err != nil {
		errs = errors.Join(errs, fmt.Errorf("forgiveAfter: %w", err))
	}
	return r, errs
}

// EvaluationPeriodOf returns the breaker's evaluation period.
func (b *BreakerStrategy) EvaluationPeriodOf() (time.Duration, error) {
	return ParsePeriod(b.EvaluationPeriod, DefaultEvaluationPeriod)
}

// Floor returns the breaker's minimum count and ratio, with defaults applied.
func (b *BreakerStrategy) Floor() (count, ratio int32) {
	count, ratio = DefaultMinPodsAvailable, 0
	if b.MinPodsAvailableCount != nil {
		count = *b.MinPodsAvailableCount
	}
	if b.MinPodsAvailableRatio != nil {
		ratio = *b.MinPodsAvailableRatio
	}
	return count, ratio
}

// GateMode reports whether the KubervisorService controls traffic through the readiness gate.
func (s *KubervisorServiceSpec) GateMode() bool {
	return s.TrafficControl == TrafficControlReadinessGate
}

// IsDryRun reports whether the breaker only reports, by its own setting or the KubervisorService's.
func (s *KubervisorServiceSpec) IsDryRun(b *BreakerStrategy) bool {
	return s.DryRun || b.DryRun
}

// ParseDuration reads an integer number of seconds or a duration string, zero allowed; nil gives def.
func ParseDuration(v *intstr.IntOrString, def time.Duration) (time.Duration, error) {
	if v == nil {
		return def, nil
	}
	if v.Type == intstr.Int && v.IntVal == 0 {
		return 0, nil
	}
	if v.Type == intstr.String && v.StrVal != "" {
		if d, err := time.ParseDuration(v.StrVal); err == nil && d == 0 {
			return 0, nil
		}
	}
	return ParsePeriod(v, def)
}

// Guards are a breaker's guards against a detector gone wrong (SPEC §5 step 9), with defaults applied.
type Guards struct {
	// MinPodsToJudge: below this many Ready managed pods nobody is judged; 0 is off.
	MinPodsToJudge int32
	// MaxAnomalousPercent: above this share of anomalous Ready managed pods nobody is ejected; 100 is off.
	MaxAnomalousPercent int32
	// StormCooldown: after a storm, how long the share must stay under the threshold.
	StormCooldown time.Duration
	// OnNoDataError turns an answer without data into an error.
	OnNoDataError bool
}

// GuardsOf returns the breaker's guards. An unusable stormCooldown (refused at admission) counts as 0.
func (b *BreakerStrategy) GuardsOf() (Guards, error) {
	g := Guards{MaxAnomalousPercent: DefaultMaxAnomalous, OnNoDataError: b.OnNoData == OnNoDataError}
	if b.MinPodsToJudge != nil {
		g.MinPodsToJudge = *b.MinPodsToJudge
	}
	if b.MaxAnomalousPercent != nil {
		g.MaxAnomalousPercent = *b.MaxAnomalousPercent
	}
	var err error
	if g.StormCooldown, err = ParseDuration(b.StormCooldown, 0); err != nil {
		return g, fmt.Errorf("stormCooldown: %w", err)
	}
	return g, nil
}

// NamespaceKeyOf returns the label holding a series' namespace in Prometheus answers ("" disables the
// check).
func (b *BreakerStrategy) NamespaceKeyOf() string {
	if b.NamespaceKey == nil {
		return DefaultNamespaceKey
	}
	return *b.NamespaceKey
}

// SpecProblems lists what in the spec the controller cannot use, each entry naming its field. The API
// server refuses these values at admission (schema and CEL rules); an object stored before those rules
// existed, or through a CRD without them, can still hold them. The controller reports each one as
// Ready=False, reason InvalidSpec, with an event, and never replaces it silently by a default: a breaker
// with an unusable evaluationPeriod or stormCooldown is not evaluated (BreakerStrategy.Unusable); pods
// ejected under an unusable activator period come back on the built-in period, with an event (an unusable
// setting never keeps a pod out of traffic).
func (s *KubervisorServiceSpec) SpecProblems() []string {
	var out []string
	out = append(out, s.DefaultActivator.unusable("spec.defaultActivator")...)
	for i := range s.Breakers {
		b := &s.Breakers[i]
		path := fmt.Sprintf("spec.breakers[%d]", i)
		for _, p := range b.Unusable() {
			out = append(out, path+"."+p)
		}
		out = append(out, b.Activator.unusable(path+".activator")...)
	}
	return out
}

// unusable lists the activator's durations the controller cannot use, each prefixed by path.
func (a *ActivatorStrategy) unusable(path string) []string {
	if a == nil {
		return nil
	}
	var out []string
	if _, err := ParsePeriod(a.Period, 0); err != nil {
		out = append(out, path+".period: "+err.Error())
	}
	if _, err := ParsePeriod(a.MaxPeriod, 0); err != nil {
		out = append(out, path+".maxPeriod: "+err.Error())
	}
	if _, err := parseWithin(a.ForgiveAfter, 0, MaxForgiveAfter); err != nil {
		out = append(out, path+".forgiveAfter: "+err.Error())
	}
	return out
}

// Unusable lists the breaker's own settings the controller cannot use, each naming its field
// (evaluationPeriod, stormCooldown); a breaker with any is not evaluated.
func (b *BreakerStrategy) Unusable() []string {
	var out []string
	if _, err := b.EvaluationPeriodOf(); err != nil {
		out = append(out, "evaluationPeriod: "+err.Error())
	}
	if _, err := b.GuardsOf(); err != nil {
		out = append(out, err.Error())
	}
	if _, err := b.ProbationOf(); err != nil {
		out = append(out, "probation: "+err.Error())
	}
	if _, err := b.WarmupOf(); err != nil {
		out = append(out, "warmup: "+err.Error())
	}
	return out
}

// EndpointOf says whether the breaker's detector talks to a named endpoint (SPEC §2.3) and which: its
// endpoint field, or "" for the manager's default when the detector names no address of its own (no
// prometheusService; no customService.url, or only a path).
func (b *BreakerStrategy) EndpointOf() (name string, uses bool) {
	switch {
	case b.DiscreteValueOutOfList != nil:
		return b.DiscreteValueOutOfList.Endpoint, b.DiscreteValueOutOfList.PrometheusService == ""
	case b.ContinuousValueDeviation != nil:
		return b.ContinuousValueDeviation.Endpoint, b.ContinuousValueDeviation.PrometheusService == ""
	case b.PeerOutlier != nil:
		return b.PeerOutlier.Endpoint, b.PeerOutlier.PrometheusService == ""
	case b.CustomService != nil:
		c := b.CustomService
		return c.Endpoint, c.Endpoint != "" || c.URL == "" || strings.HasPrefix(c.URL, "/")
	}
	return "", false
}

// ProbationOf returns the breaker's probation (0: none).
func (b *BreakerStrategy) ProbationOf() (time.Duration, error) {
	return ParseDuration(b.Probation, 0)
}

// WarmupOf returns the breaker's warm-up (0: none).
func (b *BreakerStrategy) WarmupOf() (time.Duration, error) {
	return ParseDuration(b.Warmup, 0)
}

// FailureThresholdOf returns the breaker's failureThreshold: the consecutive anomalous evaluations before
// an ejection, at least 1 (a value under 1, refused at admission, counts as 1).
func (b *BreakerStrategy) FailureThresholdOf() int {
	if b.FailureThreshold == nil || *b.FailureThreshold < 1 {
		return 1
	}
	return int(*b.FailureThreshold)
}
