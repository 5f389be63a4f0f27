package main

import (
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/test/fleet"
)

// The demo's objects.
const (
	namespace   = "demo"
	appName     = "pricer"
	replicas    = 6
	breakerName = "http-errors"
	appLabel    = "app"
)

// The breaker and activator settings.
//
// NOTE: the activator period is longer than the 20s window of fleet.DiscreteQuery. A pod restored
// sooner is judged again on the requests it failed before its ejection, still in the window, and is
// ejected again at once even if it was healed meanwhile (seen with 15s: the healed pod bounced once
// and only stayed at its second restore). --activator-period=15s shows it.
const (
	tolerancePercent   = 20
	minActivity        = 5
	evaluationPeriod   = "2s"
	minAvailableRatio  = 50
	maxRetryCount      = 2
	maxPauseCount      = 1
	defaultActivatorIn = 25 * time.Second
)

func namespaceObject() *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}
}

// deployment has kubervisor/traffic: "yes" in its pod template (so new pods are in traffic before
// Kubervisor adopts them) and never in its selector (so relabelling a pod does not orphan it). In
// readinessGate mode its pods declare the readiness gate kubervisor.io/in-traffic.
func deployment(mode kvv1.TrafficControl) *appsv1.Deployment {
	sel := map[string]string{appLabel: appName}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: appName, Namespace: namespace},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](replicas),
			Selector: &metav1.LabelSelector{MatchLabels: sel},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{appLabel: appName, kvv1.LabelTraffic: kvv1.TrafficYes}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name:  appName,
					Image: "registry.example/pricer:demo", // never pulled: the fake kubelet runs nothing
					Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
				}}},
			},
		},
	}
	if mode == kvv1.TrafficControlReadinessGate {
		d.Spec.Template.Spec.ReadinessGates = []corev1.PodReadinessGate{{ConditionType: kvv1.ConditionInTraffic}}
	}
	return d
}

// service selects the Deployment's pods that Kubervisor keeps in traffic: through kubervisor/traffic=yes in
// selector mode; in readinessGate mode the selector is the app's alone and the gate decides.
func service(mode kvv1.TrafficControl) *corev1.Service {
	sel := map[string]string{appLabel: appName, kvv1.LabelTraffic: kvv1.TrafficYes}
	if mode == kvv1.TrafficControlReadinessGate {
		delete(sel, kvv1.LabelTraffic)
	}
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: appName, Namespace: namespace},
		Spec: corev1.ServiceSpec{
			Selector: sel,
			Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
}

// kubervisorService ejects the pods whose share of non-200 answers over the query's window exceeds the
// tolerance, keeping half of the Ready pods in traffic, and retries them twice before pausing one.
func kubervisorService(prometheus string, period time.Duration, mode kvv1.TrafficControl) *kvv1.KubervisorService {
	return &kvv1.KubervisorService{
		ObjectMeta: metav1.ObjectMeta{Name: appName, Namespace: namespace},
		Spec: kvv1.KubervisorServiceSpec{
			Service:        appName,
			TrafficControl: mode,
			Breakers: []kvv1.BreakerStrategy{{
				Name:                  breakerName,
				EvaluationPeriod:      new(intstr.FromString(evaluationPeriod)),
				MinPodsAvailableRatio: ptr.To[int32](minAvailableRatio),
				DiscreteValueOutOfList: &kvv1.DiscreteValueOutOfList{
					PrometheusService: prometheus,
					PromQL:            fleet.DiscreteQuery(namespace),
					Key:               fleet.DiscreteKey,
					PodNameKey:        fleet.PodLabel,
					GoodValues:        fleet.DiscreteGoodValues,
					Tolerance:         ptr.To[int32](tolerancePercent),
					MinActivity:       ptr.To[int32](minActivity),
				},
			}},
			DefaultActivator: &kvv1.ActivatorStrategy{
				Mode:          kvv1.ActivatorModeRetryAndPause,
				Period:        new(intstr.FromString(period.String())),
				MaxRetryCount: ptr.To[int32](maxRetryCount),
				MaxPauseCount: ptr.To[int32](maxPauseCount),
			},
		},
	}
}
