package podstate

import (
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/kubervisor/kubervisor/api/v1alpha1"
)

// ReadyStatus returns the status of the pod's Ready condition, Unknown when it is not set.
func ReadyStatus(pod *corev1.Pod) corev1.ConditionStatus {
	if s := conditionStatus(pod, corev1.PodReady); s != "" {
		return s
	}
	return corev1.ConditionUnknown
}

// Ready reports whether the pod's Ready condition is True.
func Ready(pod *corev1.Pod) bool {
	return ReadyStatus(pod) == corev1.ConditionTrue
}

// conditionStatus returns the status of the pod's condition of type t, "" when it is not set.
func conditionStatus(pod *corev1.Pod, t corev1.PodConditionType) corev1.ConditionStatus {
	for _, c := range pod.Status.Conditions {
		if c.Type == t {
			return c.Status
		}
	}
	return ""
}

// ContainersReady reports whether the kubelet says every container of the pod is ready (ContainersReady):
// readiness without any readiness gate.
func ContainersReady(pod *corev1.Pod) bool {
	return conditionStatus(pod, corev1.ContainersReady) == corev1.ConditionTrue
}

// ServingReady is the readiness the floor, the counts and the guards judge (SPEC §11): Ready, or in
// readinessGate mode ContainersReady, since Ready then includes Kubervisor's own gate (an ejected pod is
// not Ready, yet healthy).
func ServingReady(pod *corev1.Pod, gateMode bool) bool {
	if gateMode {
		return ContainersReady(pod)
	}
	return Ready(pod)
}

// Serving reports whether the pod is in traffic, as the floor, the quota, the pod counts and the detectors
// judge it (SPEC §5.3): labelled traffic=yes, ready in ServingReady's sense (ContainersReady in readinessGate
// mode), and not terminating (the EndpointSlice controller marks a terminating pod so, whatever its Ready
// condition says: it serves no new traffic).
func Serving(pod *corev1.Pod, gateMode bool) bool {
	return Serves(TrafficOf(pod), ServingReady(pod, gateMode), !pod.DeletionTimestamp.IsZero())
}

// Serves is Serving's rule on what is known of a pod: its traffic label, its readiness in ServingReady's
// sense and whether it is terminating. For code that holds that summary rather than the pod (breaker.Pod)
// or has the readiness at hand already.
func Serves(traffic string, ready, terminating bool) bool {
	return ready && !terminating && traffic == v1alpha1.TrafficYes
}

// ReadySince returns when the pod last became ready in ServingReady's sense (Ready; ContainersReady in
// readinessGate mode): the condition's lastTransitionTime. Zero when the pod is not ready or the time is
// unset (a pod with no known start of readiness counts as warm: warm-up never keeps a pod in traffic on a
// guess).
func ReadySince(pod *corev1.Pod, gateMode bool) time.Time {
	t := corev1.PodReady
	if gateMode {
		t = corev1.ContainersReady
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == t && c.Status == corev1.ConditionTrue {
			return c.LastTransitionTime.Time
		}
	}
	return time.Time{}
}

// HasGate reports whether the pod declares the readiness gate kubervisor.io/in-traffic.
func HasGate(pod *corev1.Pod) bool {
	for _, g := range pod.Spec.ReadinessGates {
		if g.ConditionType == v1alpha1.ConditionInTraffic {
			return true
		}
	}
	return false
}

// GateStatus returns the status of the pod's kubervisor.io/in-traffic condition, "" when it is not set.
func GateStatus(pod *corev1.Pod) corev1.ConditionStatus {
	return conditionStatus(pod, v1alpha1.ConditionInTraffic)
}

// WantedGate is the kubervisor.io/in-traffic status a pod should carry: False while Kubervisor holds it out
// of traffic in readinessGate mode (traffic no or pause), True otherwise — in traffic, in selector mode, not
// supervised — so that no pod stays NotReady because of Kubervisor's gate once Kubervisor lets go of it.
func WantedGate(pod *corev1.Pod, gateMode bool) corev1.ConditionStatus {
	if gateMode && OwnerOf(pod) != "" {
		if t := TrafficOf(pod); t == v1alpha1.TrafficNo || t == v1alpha1.TrafficPause {
			return corev1.ConditionFalse
		}
	}
	return corev1.ConditionTrue
}

// GateReason is the reason and message of the kubervisor.io/in-traffic condition a pod should carry
// (WantedGate): why Kubervisor holds it out of traffic (ejected by which breaker, paused), or why it lets it
// in (in traffic, selector mode, not supervised).
func GateReason(pod *corev1.Pod, gateMode bool) (reason, message string) {
	want := WantedGate(pod, gateMode)
	switch t := TrafficOf(pod); {
	case want == corev1.ConditionFalse && t == v1alpha1.TrafficPause:
		return v1alpha1.GateReasonPaused, "Paused by Kubervisor for investigation (kubervisor/traffic=pause)"
	case want == corev1.ConditionFalse:
		strategy := StrategyOf(pod)
		if strategy == "" {
			strategy = "(none)"
		}
		return v1alpha1.GateReasonEjected, "Taken out of traffic by Kubervisor, breaker " + strategy
	case OwnerOf(pod) == "":
		return v1alpha1.GateReasonNotSupervised, "No KubervisorService supervises the pod"
	case !gateMode:
		return v1alpha1.GateReasonSelectorMode, "The KubervisorService controls traffic through the Service selector"
	}
	return v1alpha1.GateReasonInTraffic, "Kubervisor keeps the pod in traffic"
}

// ManagedSelector returns the selector of the pods a KubervisorService supervises: the Service selector
// minus kubervisor/traffic. A selector with no other key selects nothing to supervise (a Service without a
// selector has its endpoints managed by hand; one with the traffic key alone would pick the in-traffic
// pods of every supervised app in the namespace), so ok is false.
func ManagedSelector(selector map[string]string) (sel labels.Selector, ok bool) {
	set := labels.Set{}
	for k, v := range selector {
		if k != v1alpha1.LabelTraffic {
			set[k] = v
		}
	}
	if len(set) == 0 {
		return labels.Nothing(), false
	}
	return labels.SelectorFromValidatedSet(set), true
}

// ManagedPairs returns the key=value pairs of ManagedSelector's selector, sorted: the Service selector
// minus kubervisor/traffic.
func ManagedPairs(selector map[string]string) []string {
	out := make([]string, 0, len(selector))
	for k, v := range selector {
		if k != v1alpha1.LabelTraffic {
			out = append(out, k+"="+v)
		}
	}
	slices.Sort(out)
	return out
}

// TrafficControlled reports whether the Service selector holds kubervisor/traffic: "yes", the switch that
// makes Kubervisor's labels effective in selector mode (SPEC §3).
func TrafficControlled(svc *corev1.Service) bool {
	return svc != nil && svc.Spec.Selector[v1alpha1.LabelTraffic] == v1alpha1.TrafficYes
}

// Effective reports whether an ejection of the KubervisorService takes effect: in readinessGate mode
// always (the gate needs no selector edit; pods lacking it are never ejected), in selector mode while the
// Service selects kubervisor/traffic=yes. Otherwise breakers only report, as in dry run.
func Effective(kvs *v1alpha1.KubervisorService, svc *corev1.Service) bool {
	return svc != nil && (kvs.Spec.GateMode() || TrafficControlled(svc))
}

// dryRun is what Inactivity says of a dry run, short and long.
const dryRun = "dry run"

// Inactivity says why the activator holds back on the pods of a KubervisorService; the zero value means it
// acts fully.
type Inactivity struct {
	// Short is a few words, for a table cell ("dry run", "selector").
	Short string
	// Long is a sentence part, for a header or an event.
	Long string
	// RestoreOnly is true when the activator still restores ejected pods when due but never pauses or kills
	// them (dry run, an inactive selector: SPEC §6, "dry run and deactivation restore, never punish").
	RestoreOnly bool
}

// Active reports whether the activator acts fully (restores, pauses and kills).
func (i Inactivity) Active() bool { return i.Short == "" }

// Acts reports whether the activator acts at all: fully, or by restoring only.
func (i Inactivity) Acts() bool { return i.Short == "" || i.RestoreOnly }

// ActivatorInactivity decides how the activator acts on the pods of kvs, whose Service is svc (nil when it
// does not exist): not at all while the KubervisorService is being deleted (the finalizer releases the
// pods) or the Service is missing or selects nothing; by restoring only while the KubervisorService is in
// dry run or the Service selector lacks the traffic key. ActivatorInactivityFor adds the breaker's own dry
// run. The Pod reconciler and the plugin both ask it.
func ActivatorInactivity(kvs *v1alpha1.KubervisorService, svc *corev1.Service) Inactivity {
	switch {
	case !kvs.DeletionTimestamp.IsZero():
		return Inactivity{Short: "deleting", Long: "the KubervisorService is being deleted"}
	case svc == nil:
		return Inactivity{Short: "no service", Long: "Service " + kvs.Spec.Service + " not found"}
	}
	if _, ok := ManagedSelector(svc.Spec.Selector); !ok {
		return Inactivity{Short: "selector", Long: "the selector of Service " + svc.Name + " has no key besides " + v1alpha1.LabelTraffic}
	}
	switch {
	case kvs.Spec.DryRun:
		return Inactivity{Short: dryRun, Long: dryRun, RestoreOnly: true}
	case !Effective(kvs, svc):
		return Inactivity{Short: "selector", RestoreOnly: true,
			Long: "the selector of Service " + svc.Name + " lacks " + v1alpha1.LabelTraffic + "=" + v1alpha1.TrafficYes}
	}
	return Inactivity{}
}

// ActivatorInactivityFor is ActivatorInactivity for the pods ejected by the named breaker: its own dry
// run makes the activator restore only, too.
func ActivatorInactivityFor(kvs *v1alpha1.KubervisorService, svc *corev1.Service, breaker string) Inactivity {
	off := ActivatorInactivity(kvs, svc)
	if !off.Active() {
		return off
	}
	for i := range kvs.Spec.Breakers {
		if b := &kvs.Spec.Breakers[i]; b.Name == breaker && b.DryRun {
			return Inactivity{Short: dryRun, Long: "breaker " + breaker + " is in dry run", RestoreOnly: true}
		}
	}
	return off
}
