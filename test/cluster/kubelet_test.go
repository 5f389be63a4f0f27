package cluster

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestRunningPodStatusReadinessGates: Ready needs the containers and every readiness gate, as the kubelet
// computes it; ContainersReady ignores the gates.
func TestRunningPodStatusReadinessGates(t *testing.T) {
	now := metav1.Now()
	gated := func(gate corev1.ConditionStatus) *corev1.Pod {
		p := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:1"}},
			ReadinessGates: []corev1.PodReadinessGate{{ConditionType: "example.com/gate"}}}}
		if gate != "" {
			p.Status.Conditions = []corev1.PodCondition{{Type: "example.com/gate", Status: gate}}
		}
		return p
	}
	cond := func(s *corev1.PodStatus, t corev1.PodConditionType) corev1.ConditionStatus {
		for _, c := range s.Conditions {
			if c.Type == t {
				return c.Status
			}
		}
		return ""
	}
	cases := []struct {
		name                      string
		pod                       *corev1.Pod
		ready                     bool
		wantContainers, wantReady corev1.ConditionStatus
	}{
		{"no gate: Ready follows the containers", &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}}, true, "True", "True"},
		{"gate True", gated("True"), true, "True", "True"},
		{"gate False: NotReady, containers ready", gated("False"), true, "True", "False"},
		{"gate missing: NotReady", gated(""), true, "True", "False"},
		{"gate True, containers not ready", gated("True"), false, "False", "False"},
	}
	for _, tc := range cases {
		s := RunningPodStatus(tc.pod, "10.0.0.1", "10.1.0.2", tc.ready, now)
		if got := cond(s, corev1.ContainersReady); got != tc.wantContainers {
			t.Errorf("%s: ContainersReady = %s, want %s", tc.name, got, tc.wantContainers)
		}
		if got := cond(s, corev1.PodReady); got != tc.wantReady {
			t.Errorf("%s: Ready = %s, want %s", tc.name, got, tc.wantReady)
		}
		if tc.pod.Spec.ReadinessGates != nil && cond(s, "example.com/gate") != cond(&tc.pod.Status, "example.com/gate") {
			t.Errorf("%s: the gate's condition was changed", tc.name)
		}
	}
}
