package controller

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/metrics"
)

// countPods counts the managed pods by state (SPEC §2.2).
func countPods(pods []corev1.Pod) kvv1.PodCounts {
	var c kvv1.PodCounts
	for i := range pods {
		p := &pods[i]
		c.Managed++
		ready := podReady(p)
		if ready {
			c.Ready++
		}
		switch p.Labels[kvv1.LabelTraffic] {
		case kvv1.TrafficYes:
			if ready {
				c.InTraffic++
			}
		case kvv1.TrafficNo:
			c.Ejected++
		case kvv1.TrafficPause:
			c.Paused++
		default:
			c.Unknown++
		}
	}
	return c
}

func recordPodMetrics(kvs *kvv1.KubervisorService, c kvv1.PodCounts) {
	for state, v := range map[string]int32{
		"managed": c.Managed, "ready": c.Ready, "in_traffic": c.InTraffic, "ejected": c.Ejected, "paused": c.Paused, "unknown": c.Unknown,
	} {
		metrics.Pods.WithLabelValues(kvs.Namespace, kvs.Name, state).Set(float64(v))
	}
}

// setConditions sets every condition from what the pass observed and decided. The messages are
// deterministic so that an unchanged cluster gives an unchanged status (no write).
func setConditions(kvs *kvv1.KubervisorService, obs *observation, status *kvv1.KubervisorServiceStatus) {
	set := func(t string, ok bool, reason, msg string) {
		s := metav1.ConditionFalse
		if ok {
			s = metav1.ConditionTrue
		}
		meta.SetStatusCondition(&status.Conditions, metav1.Condition{
			Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: kvs.Generation,
		})
	}
	svc := obs.svc

	if svc == nil {
		set(kvv1.ConditionServiceFound, false, kvv1.ReasonServiceNotFound, fmt.Sprintf("Service %s not found", kvs.Spec.Service))
	} else {
		set(kvv1.ConditionServiceFound, true, kvv1.ReasonServiceFound, fmt.Sprintf("Service %s found", svc.Name))
	}

	_, hasSelector := managedSelector(svc)
	switch {
	case svc == nil:
		set(kvv1.ConditionTrafficControlled, false, kvv1.ReasonServiceNotFound, fmt.Sprintf("Service %s not found", kvs.Spec.Service))
	case !hasSelector:
		set(kvv1.ConditionTrafficControlled, false, kvv1.ReasonEmptySelector,
			fmt.Sprintf("Service %s selects no pod by label; Kubervisor supervises no pod", svc.Name))
	case trafficControlled(svc):
		set(kvv1.ConditionTrafficControlled, true, kvv1.ReasonSelectorHasTraffic,
			fmt.Sprintf("Service %s selects kubervisor/traffic=yes: ejections take effect", svc.Name))
	default:
		set(kvv1.ConditionTrafficControlled, false, kvv1.ReasonSelectorNoTraffic,
			fmt.Sprintf("Service %s does not select kubervisor/traffic=yes: breakers only report (as in dry run)", svc.Name))
	}

	if obs.conflictReason != "" {
		set(kvv1.ConditionConflict, true, obs.conflictReason, obs.conflictMessage)
	} else {
		set(kvv1.ConditionConflict, false, kvv1.ReasonNoConflict, "No other KubervisorService supervises these pods")
	}

	var withheld []string
	for _, b := range status.Breakers {
		if len(b.WithheldPods) > 0 {
			withheld = append(withheld, fmt.Sprintf("%s withheld %s", b.Name, strings.Join(b.WithheldPods, ", ")))
		}
	}
	if len(withheld) > 0 {
		set(kvv1.ConditionEjectionAllowed, false, kvv1.ReasonFloorReached,
			"The floor keeps anomalous pods in traffic: "+strings.Join(withheld, "; "))
	} else {
		set(kvv1.ConditionEjectionAllowed, true, kvv1.ReasonWithinFloor, "No anomalous pod is withheld by the floor")
	}

	var failing, pending []string
	evaluated := map[string]bool{}
	for _, b := range status.Breakers {
		evaluated[b.Name] = true
		if strings.HasPrefix(b.LastResult, "Error") {
			failing = append(failing, fmt.Sprintf("breaker %s: %s", b.Name, b.LastResult))
		}
	}
	for _, b := range kvs.Spec.Breakers {
		if !evaluated[b.Name] {
			pending = append(pending, b.Name)
		}
	}
	switch {
	case svc == nil:
		set(kvv1.ConditionReady, false, kvv1.ReasonServiceNotFound, fmt.Sprintf("Service %s not found", kvs.Spec.Service))
	case !obs.owner:
		set(kvv1.ConditionReady, false, kvv1.ReasonServiceClaimed, obs.conflictMessage)
	case len(failing) > 0:
		set(kvv1.ConditionReady, false, kvv1.ReasonDetectorError, strings.Join(failing, "; "))
	case len(pending) > 0:
		set(kvv1.ConditionReady, false, kvv1.ReasonPending, "Waiting for the first evaluation of breakers "+strings.Join(pending, ", "))
	default:
		set(kvv1.ConditionReady, true, kvv1.ReasonAllBreakersOK, "Service found and every breaker's last evaluation succeeded")
	}
}
