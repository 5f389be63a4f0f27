package controller

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
)

// fullPod is a pod as the API server sends it: an owner, annotations, a spec and a status.
func fullPod() *corev1.Pod {
	deleted := metav1.Unix(1700000000, 0)
	return &corev1.Pod{
		TypeMeta: metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{
			Name: "web-1", Namespace: "shop", UID: "u-1", ResourceVersion: "42", Generation: 1,
			Labels:            map[string]string{"app": "web", "pod-template-hash": "abc"},
			Annotations:       map[string]string{"sidecar.example/status": `{"containers":["proxy"]}`},
			OwnerReferences:   []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-abc", UID: "rs"}},
			Finalizers:        []string{"example/keep"},
			DeletionTimestamp: &deleted,
			ManagedFields:     []metav1.ManagedFieldsEntry{{Manager: "kubelet"}},
		},
		Spec: corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "app", Image: "web:1"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.1", Conditions: []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue},
			{Type: corev1.PodReady, Status: corev1.ConditionTrue},
			{Type: corev1.ContainersReady, Status: corev1.ConditionTrue},
		}},
	}
}

// TestTrimPodStubsPodsKubervisorHasNoPartIn checks what the pod cache keeps: a pod without any
// kubervisor/ key, gate or condition as a stub (identity, resourceVersion, labels, deletion, phase), and
// every other pod with its metadata, readiness gates and the conditions the reconcilers read.
func TestTrimPodStubsPodsKubervisorHasNoPartIn(t *testing.T) {
	stub := func() *corev1.Pod {
		p := fullPod()
		return &corev1.Pod{TypeMeta: p.TypeMeta, ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace,
			UID: p.UID, ResourceVersion: p.ResourceVersion, Labels: p.Labels, DeletionTimestamp: p.DeletionTimestamp},
			Status: corev1.PodStatus{Phase: p.Status.Phase}}
	}
	trimmed := func(edit func(*corev1.Pod)) *corev1.Pod {
		p := fullPod()
		edit(p)
		p.ManagedFields = nil
		p.Spec = corev1.PodSpec{NodeName: p.Spec.NodeName, ReadinessGates: p.Spec.ReadinessGates}
		var conds []corev1.PodCondition
		for _, c := range p.Status.Conditions {
			if c.Type != corev1.PodScheduled {
				conds = append(conds, c)
			}
		}
		p.Status = corev1.PodStatus{Phase: p.Status.Phase, Conditions: conds}
		return p
	}
	gate := func(p *corev1.Pod) {
		p.Spec.ReadinessGates = []corev1.PodReadinessGate{{ConditionType: kvv1.ConditionInTraffic}}
	}
	cases := map[string]struct {
		edit func(*corev1.Pod)
		want *corev1.Pod
	}{
		"no kubervisor key: a stub": {edit: func(*corev1.Pod) {}, want: stub()},
		"a traffic label":           {edit: func(p *corev1.Pod) { p.Labels[kvv1.LabelTraffic] = kvv1.TrafficYes }},
		"an owner label":            {edit: func(p *corev1.Pod) { p.Labels[kvv1.LabelName] = "web" }},
		"a manual request only":     {edit: func(p *corev1.Pod) { p.Annotations[kvv1.AnnotationRequest] = kvv1.RequestEject }},
		"the readiness gate only":   {edit: gate},
		"the in-traffic condition only": {edit: func(p *corev1.Pod) {
			p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: kvv1.ConditionInTraffic, Status: corev1.ConditionFalse})
		}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			in := fullPod()
			tc.edit(in)
			want := tc.want
			if want == nil {
				want = trimmed(tc.edit)
			}
			out, err := TrimPod(in)
			if err != nil {
				t.Fatal(err)
			}
			if !equality.Semantic.DeepEqual(out, want) {
				t.Errorf("TrimPod kept\n%+v\nwant\n%+v", out, want)
			}
		})
	}
}

// TestTrimServiceKeepsMetadataAndSelector checks what the Service cache keeps: metadata without annotations
// or managedFields, and the selector; the rest of the spec and the status go.
func TestTrimServiceKeepsMetadataAndSelector(t *testing.T) {
	in := &corev1.Service{
		TypeMeta: metav1.TypeMeta{Kind: "Service", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", UID: "u", ResourceVersion: "7", Labels: map[string]string{"team": "a"},
			Annotations:   map[string]string{"kubectl.kubernetes.io/last-applied-configuration": `{"kind":"Service"}`},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web", kvv1.LabelTraffic: kvv1.TrafficYes},
			Ports: []corev1.ServicePort{{Port: 80}}, ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10"}},
		Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{IP: "1.2.3.4"}}}},
	}
	want := &corev1.Service{TypeMeta: in.TypeMeta, ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", UID: "u",
		ResourceVersion: "7", Labels: map[string]string{"team": "a"}}, Spec: corev1.ServiceSpec{Selector: in.Spec.Selector}}
	out, err := TrimService(in)
	if err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(out, want) {
		t.Errorf("TrimService kept\n%+v\nwant\n%+v", out, want)
	}
}

// TestTrimHandsBackOtherTypes checks that each transform returns an object of another type as it is.
func TestTrimHandsBackOtherTypes(t *testing.T) {
	for name, tc := range map[string]struct {
		trim  func(any) (any, error)
		other any
	}{
		"TrimPod of a Service": {TrimPod, &corev1.Service{}},
		"TrimService of a Pod": {TrimService, &corev1.Pod{}},
	} {
		if out, err := tc.trim(tc.other); err != nil || out != tc.other {
			t.Errorf("%s = %v, %v; want the object itself", name, out, err)
		}
	}
}
