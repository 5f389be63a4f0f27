package podstate

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/kubervisor/kubervisor/api/v1alpha1"
)

// ReadyStatus returns the status of the pod's Ready condition, Unknown when it is not set.
func ReadyStatus(pod *corev1.Pod) corev1.ConditionStatus {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status
		}
	}
	return corev1.ConditionUnknown
}

// Ready reports whether the pod's Ready condition is True.
func Ready(pod *corev1.Pod) bool {
	return ReadyStatus(pod) == corev1.ConditionTrue
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

// TrafficControlled reports whether the Service selector holds kubervisor/traffic: "yes", the switch that
// makes Kubervisor's labels effective (SPEC §3).
func TrafficControlled(svc *corev1.Service) bool {
	return svc != nil && svc.Spec.Selector[v1alpha1.LabelTraffic] == v1alpha1.TrafficYes
}

// Inactivity says why the activator leaves every pod of a KubervisorService alone; the zero value means
// it acts.
type Inactivity struct {
	// Short is a few words, for a table cell ("dry run", "selector").
	Short string
	// Long is a sentence part, for a header or an event.
	Long string
}

// Active reports whether the activator acts.
func (i Inactivity) Active() bool { return i.Short == "" }

// ActivatorInactivity decides whether the activator acts on the pods of kvs, whose Service is svc (nil when
// it does not exist): never while the KubervisorService is being deleted or in dry run, nor while the
// Service is missing, its selector lacks the traffic key or has no other key. The Pod reconciler and the
// plugin both ask it.
func ActivatorInactivity(kvs *v1alpha1.KubervisorService, svc *corev1.Service) Inactivity {
	switch {
	case !kvs.DeletionTimestamp.IsZero():
		return Inactivity{"deleting", "the KubervisorService is being deleted"}
	case kvs.Spec.DryRun:
		return Inactivity{"dry run", "dry run"}
	case svc == nil:
		return Inactivity{"no service", "Service " + kvs.Spec.Service + " not found"}
	case !TrafficControlled(svc):
		return Inactivity{"selector", "the selector of Service " + svc.Name + " lacks " + v1alpha1.LabelTraffic + "=" + v1alpha1.TrafficYes}
	}
	if _, ok := ManagedSelector(svc.Spec.Selector); !ok {
		return Inactivity{"selector", "the selector of Service " + svc.Name + " has no key besides " + v1alpha1.LabelTraffic}
	}
	return Inactivity{}
}
