package controller

import (
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
)

// NOTE: every pass compares the status it computed with the stored one, 200 times a second at 10,000 pods.
// equality.Semantic.DeepEqual did it by reflection, 5 % of the steady CPU (make bench-scale); these say the
// same without it: nil and empty slices alike, times compared as instants, a nil time unlike a set one.
// TestSameStatusSeesEveryField changes each field of a status in turn and fails when one is not compared
// (a field added to the API and forgotten here).

// sameStatus reports whether a and b are equal as equality.Semantic.DeepEqual says.
func sameStatus(a, b *kvv1.KubervisorServiceStatus) bool {
	return a.ObservedGeneration == b.ObservedGeneration && a.Pods == b.Pods &&
		slices.EqualFunc(a.Conditions, b.Conditions, sameCondition) &&
		slices.EqualFunc(a.Breakers, b.Breakers, sameBreaker) &&
		slices.EqualFunc(a.Manual, b.Manual, sameManualHold)
}

// sameBreaker reports whether two breaker entries are equal as equality.Semantic.DeepEqual says.
func sameBreaker(a, b kvv1.BreakerStatus) bool {
	return a.Name == b.Name && a.LastResult == b.LastResult && a.IgnoredSamples == b.IgnoredSamples &&
		a.LastEvaluationTime.Equal(b.LastEvaluationTime) && a.LastStormTime.Equal(b.LastStormTime) &&
		slices.Equal(a.AnomalousPods, b.AnomalousPods) && slices.Equal(a.EjectedPods, b.EjectedPods) &&
		slices.Equal(a.WithheldPods, b.WithheldPods) && slices.Equal(a.WouldEjectPods, b.WouldEjectPods) &&
		slices.Equal(a.Warnings, b.Warnings) && slices.EqualFunc(a.Anomalies, b.Anomalies, samePodDecision)
}

func samePodDecision(a, b kvv1.PodDecision) bool {
	return a.Pod == b.Pod && a.Decision == b.Decision && a.Reason == b.Reason && a.Since.Equal(&b.Since)
}

func sameManualHold(a, b kvv1.ManualHold) bool {
	return a.Pod == b.Pod && a.By == b.By && a.Reason == b.Reason && a.Since.Equal(b.Since) && a.Until.Equal(b.Until)
}

func sameCondition(a, b metav1.Condition) bool {
	return a.Type == b.Type && a.Status == b.Status && a.ObservedGeneration == b.ObservedGeneration &&
		a.Reason == b.Reason && a.Message == b.Message && a.LastTransitionTime.Equal(&b.LastTransitionTime)
}
