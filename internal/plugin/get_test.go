package plugin_test

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
)

// pricer is a KubervisorService with two breakers of different activators, a defaultActivator that
// pauses, and a status as the controller writes it.
func pricer(mutate ...func(*kvv1.KubervisorService)) *kvv1.KubervisorService {
	k := kvs("shop", "pricer", "pricer", now.Add(-10*time.Minute), func(k *kvv1.KubervisorService) {
		k.Spec.Breakers = []kvv1.BreakerStrategy{
			{
				Name:          "http-errors",
				CustomService: &kvv1.CustomService{URL: "detector:8080/anomalies"},
				Activator:     activatorOf(kvv1.ActivatorModeRetryAndKill, 0, ptr.To[int32](2), nil),
			},
			{
				Name:          "latency",
				DryRun:        true,
				CustomService: &kvv1.CustomService{URL: "detector:8080/latency"},
				Activator:     activatorOf(kvv1.ActivatorModePeriodic, 20, nil, nil),
			},
		}
		k.Spec.DefaultActivator = activatorOf(kvv1.ActivatorModeRetryAndPause, 10, ptr.To[int32](1), ptr.To[int32](2))
		k.Status = kvv1.KubervisorServiceStatus{
			ObservedGeneration: 1,
			Conditions: []metav1.Condition{
				condition(kvv1.ConditionServiceFound, "True", kvv1.ReasonServiceFound, "Service pricer found"),
				condition(kvv1.ConditionTrafficControlled, "True", kvv1.ReasonSelectorHasTraffic,
					"Service pricer selects kubervisor/traffic=yes: ejections take effect"),
				condition(kvv1.ConditionConflict, "False", kvv1.ReasonNoConflict, "No other KubervisorService supervises these pods"),
				condition(kvv1.ConditionEjectionAllowed, "False", kvv1.ReasonFloorReached,
					"The floor keeps anomalous pods in traffic: http-errors withheld pricer-x"),
				condition(kvv1.ConditionReady, "False", kvv1.ReasonDetectorError,
					"breaker latency: Error: querying detector: connection refused"),
			},
			Pods: kvv1.PodCounts{Managed: 10, Ready: 8, InTraffic: 1, Ejected: 6, Paused: 1, Unknown: 2},
			Breakers: []kvv1.BreakerStatus{
				{
					Name: "http-errors", LastResult: "OK", LastEvaluationTime: new(metav1.NewTime(now.Add(-2 * time.Second))),
					AnomalousPods: []string{"pricer-c", "pricer-x"}, EjectedPods: []string{"pricer-c"}, WithheldPods: []string{"pricer-x"},
				},
				{
					Name: "latency", LastResult: "Error: querying detector: connection refused",
					LastEvaluationTime: new(metav1.NewTime(now.Add(-5 * time.Minute))),
				},
				{Name: "old-breaker", LastResult: "OK", LastEvaluationTime: new(metav1.NewTime(now.Add(-3 * time.Hour)))},
			},
		}
	})
	for _, m := range mutate {
		m(k)
	}
	return k
}

func owned(traffic, strategy string) map[string]string {
	l := map[string]string{"app": "pricer", kvv1.LabelName: "pricer"}
	if traffic != "" {
		l[kvv1.LabelTraffic] = traffic
	}
	if strategy != "" {
		l[kvv1.LabelStrategy] = strategy
	}
	return l
}

func ejection(breakAt, retryCount string) map[string]string {
	return map[string]string{kvv1.AnnotationBreakAt: breakAt, kvv1.AnnotationRetryCount: retryCount}
}

// pricerPods covers every traffic state and every activator outcome.
func pricerPods() []client.Object {
	terminating := pod("shop", "pricer-k", yes, owned(kvv1.TrafficNo, "http-errors"), ejection(ago(time.Hour), "1"))
	terminating.DeletionTimestamp = new(metav1.NewTime(now.Add(-time.Second)))
	terminating.Finalizers = []string{"example.com/hold"}
	return []client.Object{
		// In traffic, with the annotations of an old ejection it came back from.
		pod("shop", "pricer-a", yes, owned(kvv1.TrafficYes, "http-errors"), ejection(ago(time.Hour), "1")),
		// periodic (latency, 20s), ejected 5s ago: back in 15s whatever its retry count.
		pod("shop", "pricer-b", yes, owned(kvv1.TrafficNo, "latency"), ejection(ago(5*time.Second), "4")),
		// retryAndKill (http-errors, maxRetryCount 2), third ejection: killed.
		pod("shop", "pricer-c", yes, owned(kvv1.TrafficNo, "http-errors"), ejection(ago(time.Minute), "3")),
		// Paused: never touched again.
		pod("shop", "pricer-d", yes, owned(kvv1.TrafficPause, "http-errors"), ejection(ago(time.Hour), "3")),
		// Breaker since removed: defaultActivator (retryAndPause, maxRetryCount 1, maxPauseCount 2, one
		// paused already): paused.
		pod("shop", "pricer-e", no, owned(kvv1.TrafficNo, "old-breaker"), ejection(ago(time.Minute), "2")),
		// Malformed annotations: treated as just ejected, retry 1 of retryAndKill: back after 1 × 10s.
		pod("shop", "pricer-f", yes, owned(kvv1.TrafficNo, "http-errors"), ejection("yesterday", "x")),
		// retryAndKill, second ejection 30s ago: due after 2 × 10s, so now.
		pod("shop", "pricer-g", yes, owned(kvv1.TrafficNo, "http-errors"), ejection(ago(30*time.Second), "2")),
		// No traffic label, no Ready condition: unknown, left alone.
		pod("shop", "pricer-h", nil, owned("", ""), nil),
		// A traffic value nobody writes: unknown, left alone.
		pod("shop", "pricer-i", yes, owned("maybe", ""), nil),
		// No strategy label, break-at an hour ahead, no retry count: defaultActivator, treated as just
		// ejected: back after 1 × 10s.
		pod("shop", "pricer-j", yes, owned(kvv1.TrafficNo, ""), map[string]string{kvv1.AnnotationBreakAt: ago(-time.Hour)}),
		terminating,
		// A usable break-at a minute ago with an unusable retry count: the pair is not trusted, the pod is
		// treated as just ejected, and BREAK-AT shows the time the activator counts from (now).
		pod("shop", "pricer-l", yes, owned(kvv1.TrafficNo, "http-errors"), ejection(ago(time.Minute), "0")),
		// Another KubervisorService's pod, and an unsupervised pod: not shown.
		pod("shop", "search-1", yes, map[string]string{kvv1.LabelName: "search", kvv1.LabelTraffic: kvv1.TrafficNo}, nil),
		pod("shop", "pricer-unmanaged", yes, map[string]string{"app": "pricer"}, nil),
	}
}

func TestGet(t *testing.T) {
	active := service("shop", "pricer", map[string]string{"app": "pricer", kvv1.LabelTraffic: kvv1.TrafficYes})
	tests := map[string]struct {
		objs []client.Object
		want string
	}{
		"every traffic state and activator outcome": {
			objs: append([]client.Object{pricer(), active}, pricerPods()...),
			want: `Name:                pricer
Namespace:           shop
Service:             pricer (selector app=pricer,kubervisor/traffic=yes)
Dry run:             false
Activator:           active
Default activator:   retryAndPause, period 10s, maxRetryCount 1, maxPauseCount 2
Pods:                managed 10, ready 8, in traffic 1, ejected 6, paused 1, unknown 2
Age:                 10m

Conditions:
  TYPE                STATUS   REASON                  MESSAGE
  ServiceFound        True     ServiceFound            Service pricer found
  TrafficControlled   True     SelectorHasTrafficKey   Service pricer selects kubervisor/traffic=yes: ejections take effect
  Conflict            False    NoConflict              No other KubervisorService supervises these pods
  EjectionAllowed     False    FloorReached            The floor keeps anomalous pods in traffic: http-errors withheld pricer-x
  Ready               False    DetectorError           breaker latency: Error: querying detector: connection refused

Breakers:
  http-errors:
    Activator:          retryAndKill, period 10s, maxRetryCount 2
    Last result:        OK
    Last evaluation:    2026-03-01T11:59:58Z (2s ago)
    Anomalous pods:     pricer-c, pricer-x
    Ejected pods:       pricer-c
    Withheld pods:      pricer-x
    Would-eject pods:   <none>
  latency (dry run):
    Activator:          periodic, period 20s
    Last result:        Error: querying detector: connection refused
    Last evaluation:    2026-03-01T11:55:00Z (5m ago)
    Anomalous pods:     <none>
    Ejected pods:       <none>
    Withheld pods:      <none>
    Would-eject pods:   <none>
  old-breaker (no longer in spec):
    Last result:        OK
    Last evaluation:    2026-03-01T09:00:00Z (3h ago)
    Anomalous pods:     <none>
    Ejected pods:       <none>
    Withheld pods:      <none>
    Would-eject pods:   <none>

Manual holds:
  <none>

POD        READY     TRAFFIC   BREAKER       RETRIES   BREAK-AT   NEXT
pricer-a   True      yes       http-errors   1         60m        <none>
pricer-b   True      no        latency       4         5s         restore in 15s
pricer-c   True      no        http-errors   3         60s        kill now
pricer-d   True      pause     http-errors   3         60m        <none>
pricer-e   False     no        old-breaker   2         60s        pause now
pricer-f   True      no        http-errors   invalid   invalid    restore in 10s
pricer-g   True      no        http-errors   2         30s        restore now
pricer-h   Unknown   <none>    <none>        <none>    <none>     <none>
pricer-i   True      maybe     <none>        <none>    <none>     <none>
pricer-j   True      no        <none>        <none>    invalid    restore in 10s
pricer-k   True      no        http-errors   1         60m        terminating
pricer-l   True      no        http-errors   invalid   0s         restore in 10s

Warnings:
  pricer-f: annotation kubervisor/break-at "yesterday" is not an RFC 3339 time and annotation kubervisor/retry-count "x" is not a number; treating the pod as just ejected with retry count 1
  pricer-j: label kubervisor/strategy is missing; using defaultActivator; annotation kubervisor/break-at "2026-03-01T13:00:00Z" is 1h0m0s in the future and annotation kubervisor/retry-count is missing; treating the pod as just ejected with retry count 1
  pricer-l: annotation kubervisor/retry-count "0" is less than 1; treating the pod as just ejected with retry count 1
`,
		},
		"dry run: the activator restores only, never pauses or kills": {
			objs: []client.Object{
				dryRun(), active,
				pod("shop", "pricer-a", yes, owned(kvv1.TrafficYes, ""), nil),
				pod("shop", "pricer-b", yes, owned(kvv1.TrafficNo, "http-errors"), ejection(ago(5*time.Second), "1")),
			},
			want: `Name:                pricer
Namespace:           shop
Service:             pricer (selector app=pricer,kubervisor/traffic=yes)
Dry run:             true
Activator:           restores only, never pauses or kills: dry run
Default activator:   periodic, period 10s
Pods:                managed 2, ready 2, in traffic 2, ejected 0, paused 0, unknown 0
Age:                 10m

Conditions:
  TYPE                STATUS   REASON                  MESSAGE
  TrafficControlled   True     SelectorHasTrafficKey   Service pricer selects kubervisor/traffic=yes: ejections take effect
  Ready               True     BreakersHealthy         Service found and every breaker's last evaluation succeeded

Breakers:
  http-errors:
    Activator:          periodic, period 10s
    Last result:        OK
    Last evaluation:    2026-03-01T11:59:59Z (1s ago)
    Anomalous pods:     pricer-a
    Ejected pods:       <none>
    Withheld pods:      <none>
    Would-eject pods:   pricer-a

Manual holds:
  <none>

POD        READY   TRAFFIC   BREAKER       RETRIES   BREAK-AT   NEXT
pricer-a   True    yes       <none>        <none>    <none>     <none>
pricer-b   True    no        http-errors   1         5s         restore in 5s
`,
		},
		"dry run: a pod pending is shown as such, as when the breaker acts": {
			objs: []client.Object{
				func() *kvv1.KubervisorService {
					k := dryRun()
					k.Status.Breakers[0].Anomalies = []kvv1.PodDecision{{Pod: "pricer-a", Decision: kvv1.DecisionPending,
						Reason: "pending: anomalous in 1 of 2 consecutive evaluations"}}
					return k
				}(),
				active,
				pod("shop", "pricer-a", yes, owned(kvv1.TrafficYes, ""), nil),
			},
			want: `Name:                pricer
Namespace:           shop
Service:             pricer (selector app=pricer,kubervisor/traffic=yes)
Dry run:             true
Activator:           restores only, never pauses or kills: dry run
Default activator:   periodic, period 10s
Pods:                managed 2, ready 2, in traffic 2, ejected 0, paused 0, unknown 0
Age:                 10m

Conditions:
  TYPE                STATUS   REASON                  MESSAGE
  TrafficControlled   True     SelectorHasTrafficKey   Service pricer selects kubervisor/traffic=yes: ejections take effect
  Ready               True     BreakersHealthy         Service found and every breaker's last evaluation succeeded

Breakers:
  http-errors:
    Activator:          periodic, period 10s
    Last result:        OK
    Last evaluation:    2026-03-01T11:59:59Z (1s ago)
    Anomalous pods:     pricer-a
    Ejected pods:       <none>
    Withheld pods:      <none>
    Would-eject pods:   pricer-a

Manual holds:
  <none>

POD        READY   TRAFFIC   BREAKER   RETRIES   BREAK-AT   NEXT
pricer-a   True    yes       <none>    <none>    <none>     pending (breaker http-errors)
`,
		},
		"selector without kubervisor/traffic: the activator restores only": {
			objs: []client.Object{
				kvs("shop", "pricer", "pricer", now.Add(-time.Minute)),
				service("shop", "pricer", map[string]string{"app": "pricer"}),
				pod("shop", "pricer-b", yes, owned(kvv1.TrafficNo, "http-errors"), ejection(ago(time.Minute), "1")),
			},
			want: `Name:                pricer
Namespace:           shop
Service:             pricer (selector app=pricer)
Dry run:             false
Activator:           restores only, never pauses or kills: the selector of Service pricer lacks kubervisor/traffic=yes
Default activator:   periodic, period 10s
Pods:                managed 0, ready 0, in traffic 0, ejected 0, paused 0, unknown 0
Age:                 60s

Conditions:
  <none>

Breakers:
  http-errors:
    Activator:     periodic, period 10s
    Last result:   <none> (not evaluated yet)

Manual holds:
  <none>

POD        READY   TRAFFIC   BREAKER       RETRIES   BREAK-AT   NEXT
pricer-b   True    no        http-errors   1         60s        restore now
`,
		},
		"manual holds: status.manual[] listed, held pods shown as such, the activator for the others": {
			objs: append([]client.Object{manualHolds(), active}, manualPods()...),
			want: `Name:                pricer
Namespace:           shop
Service:             pricer (selector app=pricer,kubervisor/traffic=yes)
Dry run:             false
Activator:           active
Default activator:   periodic, period 10s
Pods:                managed 5, ready 5, in traffic 1, ejected 4, paused 0, unknown 0
Age:                 10m

Conditions:
  <none>

Breakers:
  http-errors:
    Activator:     periodic, period 10s
    Last result:   <none> (not evaluated yet)

Manual holds:
  POD        BY      REASON                 SINCE                           UNTIL
  pricer-m   alice   bad node, see INC-42   2026-03-01T11:55:00Z (5m ago)   2026-03-01T13:00:00Z (in 60m)
  pricer-n   bob     <none>                 2026-03-01T11:58:00Z (2m ago)   until restored

POD        READY   TRAFFIC   BREAKER                RETRIES   BREAK-AT   NEXT
pricer-m   True    no        manual.kubervisor.io   1         5m         manual by alice until 2026-03-01T13:00:00Z
pricer-n   True    no        manual.kubervisor.io   2         2m         manual by bob until restored
pricer-o   True    no        http-errors            1         5s         restore in 5s
pricer-p   True    yes       manual.kubervisor.io   1         60m        <none>
pricer-q   True    no        http-errors            1         5s         restore in 5s
`,
		},
		"pods in traffic flagged but not ejected yet: pending (failureThreshold), warming up (warmup)": {
			objs: append([]client.Object{judging(), active}, judgingPods()...),
			want: `Name:                pricer
Namespace:           shop
Service:             pricer (selector app=pricer,kubervisor/traffic=yes)
Dry run:             false
Activator:           active
Default activator:   periodic, period 10s
Pods:                managed 9, ready 9, in traffic 7, ejected 1, paused 0, unknown 0
Age:                 10m

Conditions:
  <none>

Breakers:
  http-errors:
    Activator:          periodic, period 10s
    Last result:        OK
    Last evaluation:    2026-03-01T11:59:55Z (5s ago)
    Anomalous pods:     pricer-a, pricer-c, pricer-d, pricer-e, pricer-f, pricer-g
    Ejected pods:       <none>
    Withheld pods:      <none>
    Would-eject pods:   <none>
  latency:
    Activator:          periodic, period 10s
    Last result:        OK
    Last evaluation:    2026-03-01T11:59:55Z (5s ago)
    Anomalous pods:     pricer-b, pricer-c, pricer-d, pricer-h
    Ejected pods:       <none>
    Withheld pods:      <none>
    Would-eject pods:   <none>
  old-breaker (no longer in spec):
    Last result:        OK
    Last evaluation:    2026-03-01T11:00:00Z (60m ago)
    Anomalous pods:     pricer-i
    Ejected pods:       <none>
    Withheld pods:      <none>
    Would-eject pods:   <none>

Manual holds:
  <none>

POD        READY   TRAFFIC   BREAKER       RETRIES   BREAK-AT   NEXT
pricer-a   True    yes       <none>        <none>    <none>     pending (breaker http-errors)
pricer-b   True    yes       <none>        <none>    <none>     warming up (breaker latency)
pricer-c   True    yes       http-errors   1         60m        pending (breakers http-errors, latency)
pricer-d   True    yes       <none>        <none>    <none>     pending (breaker http-errors); warming up (breaker latency)
pricer-e   True    no        http-errors   1         5s         restore in 5s
pricer-f   True    yes       <none>        <none>    <none>     terminating
pricer-g   True    yes       http-errors   1         60s        <none>
pricer-h   True    yes       <none>        <none>    <none>     <none>
pricer-i   True    yes       <none>        <none>    <none>     <none>
`,
		},
		"Service not found, no pod": {
			objs: []client.Object{kvs("shop", "pricer", "gone", now.Add(-time.Minute))},
			want: `Name:                pricer
Namespace:           shop
Service:             gone (not found)
Dry run:             false
Activator:           inactive: Service gone not found
Default activator:   periodic, period 10s
Pods:                managed 0, ready 0, in traffic 0, ejected 0, paused 0, unknown 0
Age:                 60s

Conditions:
  <none>

Breakers:
  http-errors:
    Activator:     periodic, period 10s
    Last result:   <none> (not evaluated yet)

Manual holds:
  <none>

No pods labelled kubervisor/name=pricer.
`,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, tc.objs)
			if err := e.plugin.Get(context.Background(), "shop", "pricer"); err != nil {
				t.Fatalf("Get: %v", err)
			}
			checkOutput(t, e.out.String(), tc.want)
			if len(e.writes) != 0 {
				t.Errorf("Get wrote to the API server: %+v", e.writes)
			}
		})
	}
}

func dryRun() *kvv1.KubervisorService {
	return kvs("shop", "pricer", "pricer", now.Add(-10*time.Minute), func(k *kvv1.KubervisorService) {
		k.Spec.DryRun = true
		k.Status = kvv1.KubervisorServiceStatus{
			Conditions: []metav1.Condition{
				condition(kvv1.ConditionTrafficControlled, "True", kvv1.ReasonSelectorHasTraffic,
					"Service pricer selects kubervisor/traffic=yes: ejections take effect"),
				// A line break or a tab in a message must not break the table.
				condition(kvv1.ConditionReady, "True", kvv1.ReasonAllBreakersOK,
					"Service found and every breaker's\nlast evaluation\tsucceeded"),
			},
			Pods: kvv1.PodCounts{Managed: 2, Ready: 2, InTraffic: 2},
			Breakers: []kvv1.BreakerStatus{{
				Name: "http-errors", LastResult: "OK", LastEvaluationTime: new(metav1.NewTime(now.Add(-time.Second))),
				AnomalousPods: []string{"pricer-a"}, WouldEjectPods: []string{"pricer-a"},
			}},
		}
	})
}

func TestGetErrors(t *testing.T) {
	e := newEnv(t, []client.Object{kvs("shop", "pricer", "pricer", now)})
	err := e.plugin.Get(context.Background(), "shop", "cart")
	if err == nil || err.Error() != `KubervisorService "cart" not found in namespace "shop"` {
		t.Errorf("Get of a missing KubervisorService: got error %v", err)
	}
	checkOutput(t, e.out.String(), "")
}

// manualHolds is a KubervisorService whose status lists two pods ejected by hand, one for an hour, one until
// restored.
func manualHolds() *kvv1.KubervisorService {
	return kvs("shop", "pricer", "pricer", now.Add(-10*time.Minute), func(k *kvv1.KubervisorService) {
		k.Status.Pods = kvv1.PodCounts{Managed: 5, Ready: 5, InTraffic: 1, Ejected: 4}
		k.Status.Manual = []kvv1.ManualHold{
			{Pod: "pricer-m", By: "alice", Reason: "bad node,\tsee INC-42", Since: new(metav1.NewTime(now.Add(-5 * time.Minute))),
				Until: new(metav1.NewTime(now.Add(time.Hour)))},
			{Pod: "pricer-n", By: "bob", Since: new(metav1.NewTime(now.Add(-2 * time.Minute)))},
		}
	})
}

// manualPods are the pods of manualHolds, a pod with a manual-by annotation under a breaker's strategy, a
// pod restored from a hold, and a pod ejected by a breaker.
func manualPods() []client.Object {
	held := func(name, by, until string, breakAt time.Duration, retries string) *corev1.Pod {
		a := ejection(ago(breakAt), retries)
		a[kvv1.AnnotationManualBy] = by
		if until != "" {
			a[kvv1.AnnotationManualUntil] = until
		}
		return pod("shop", name, yes, owned(kvv1.TrafficNo, kvv1.ManualStrategy), a)
	}
	byHand := ejection(ago(5*time.Second), "1")
	byHand[kvv1.AnnotationManualBy] = "carol"
	return []client.Object{
		held("pricer-m", "alice", ago(-time.Hour), 5*time.Minute, "1"),
		held("pricer-n", "bob", "", 2*time.Minute, "2"),
		// The manual-by annotation alone, without the manual strategy, is no hold: the activator of the
		// breaker applies (as in the controller).
		pod("shop", "pricer-o", yes, owned(kvv1.TrafficNo, "http-errors"), byHand),
		// Restored from a hold: the strategy stays for the record, the activator has nothing to do.
		pod("shop", "pricer-p", yes, owned(kvv1.TrafficYes, kvv1.ManualStrategy), ejection(ago(time.Hour), "1")),
		pod("shop", "pricer-q", yes, owned(kvv1.TrafficNo, "http-errors"), ejection(ago(5*time.Second), "1")),
	}
}

// judging is a KubervisorService whose two breakers flag pods they do not eject yet: decisions Pending
// (failureThreshold not reached) and WarmingUp (Ready for less than warmup), beside decisions that hold
// nobody back, and a breaker since removed from the spec that still has entries in status.
func judging() *kvv1.KubervisorService {
	decision := func(pod string, d kvv1.Decision, reason string) kvv1.PodDecision {
		return kvv1.PodDecision{Pod: pod, Decision: d, Reason: reason, Since: metav1.NewTime(now.Add(-5 * time.Second))}
	}
	return kvs("shop", "pricer", "pricer", now.Add(-10*time.Minute), func(k *kvv1.KubervisorService) {
		k.Spec.Breakers = append(k.Spec.Breakers, kvv1.BreakerStrategy{
			Name: "latency", CustomService: &kvv1.CustomService{URL: "detector:8080/latency"}})
		k.Status.Pods = kvv1.PodCounts{Managed: 9, Ready: 9, InTraffic: 7, Ejected: 1}
		k.Status.Breakers = []kvv1.BreakerStatus{
			{
				Name: "http-errors", LastResult: "OK", LastEvaluationTime: new(metav1.NewTime(now.Add(-5 * time.Second))),
				AnomalousPods: []string{"pricer-a", "pricer-c", "pricer-d", "pricer-e", "pricer-f", "pricer-g"},
				Anomalies: []kvv1.PodDecision{
					decision("pricer-a", kvv1.DecisionPending, "bad ratio 0.40 > tolerance 0.05 over 100 events; pending: anomalous in 1 of 3 consecutive evaluations"),
					decision("pricer-c", kvv1.DecisionPending, "bad ratio 0.30 > tolerance 0.05 over 100 events; pending: anomalous in 2 of 3 consecutive evaluations"),
					decision("pricer-d", kvv1.DecisionPending, "bad ratio 0.20 > tolerance 0.05 over 100 events; pending: anomalous in 1 of 3 consecutive evaluations"),
					// Out of traffic since that entry was written: the traffic label decides.
					decision("pricer-e", kvv1.DecisionPending, "bad ratio 0.10 > tolerance 0.05 over 100 events; pending: anomalous in 2 of 3 consecutive evaluations"),
					decision("pricer-f", kvv1.DecisionPending, "bad ratio 0.10 > tolerance 0.05 over 100 events; pending: anomalous in 1 of 3 consecutive evaluations"),
					decision("pricer-g", kvv1.DecisionProbation, "bad ratio 0.10 > tolerance 0.05 over 100 events; on probation: restored 10s ago, probation 1m0s"),
				},
			},
			{
				Name: "latency", LastResult: "OK", LastEvaluationTime: new(metav1.NewTime(now.Add(-5 * time.Second))),
				AnomalousPods: []string{"pricer-b", "pricer-c", "pricer-d", "pricer-h"},
				Anomalies: []kvv1.PodDecision{
					decision("pricer-b", kvv1.DecisionWarmingUp, "robust z-score 4.1 > threshold 3; warming up: Ready for 10s, warmup 30s"),
					decision("pricer-c", kvv1.DecisionPending, "robust z-score 3.5 > threshold 3; pending: anomalous in 1 of 2 consecutive evaluations"),
					decision("pricer-d", kvv1.DecisionWarmingUp, "robust z-score 3.2 > threshold 3; warming up: Ready for 10s, warmup 30s"),
					decision("pricer-h", kvv1.DecisionWithheld, "robust z-score 3.1 > threshold 3; withheld: the floor keeps 6 pods in traffic"),
				},
			},
			{
				Name: "old-breaker", LastResult: "OK", LastEvaluationTime: new(metav1.NewTime(now.Add(-time.Hour))),
				AnomalousPods: []string{"pricer-i"},
				Anomalies:     []kvv1.PodDecision{decision("pricer-i", kvv1.DecisionPending, "pending: anomalous in 1 of 2 consecutive evaluations")},
			},
		}
	})
}

// judgingPods are the pods of judging.
func judgingPods() []client.Object {
	terminating := pod("shop", "pricer-f", yes, owned(kvv1.TrafficYes, ""), nil)
	terminating.DeletionTimestamp = new(metav1.NewTime(now.Add(-time.Second)))
	terminating.Finalizers = []string{"example.com/hold"}
	return []client.Object{
		pod("shop", "pricer-a", yes, owned(kvv1.TrafficYes, ""), nil),
		pod("shop", "pricer-b", yes, owned(kvv1.TrafficYes, ""), nil),
		// Back from an old ejection: the breaker it names is history, the decisions in status apply.
		pod("shop", "pricer-c", yes, owned(kvv1.TrafficYes, "http-errors"), ejection(ago(time.Hour), "1")),
		pod("shop", "pricer-d", yes, owned(kvv1.TrafficYes, ""), nil),
		pod("shop", "pricer-e", yes, owned(kvv1.TrafficNo, "http-errors"), ejection(ago(5*time.Second), "1")),
		terminating,
		pod("shop", "pricer-g", yes, owned(kvv1.TrafficYes, "http-errors"), ejection(ago(time.Minute), "1")),
		pod("shop", "pricer-h", yes, owned(kvv1.TrafficYes, ""), nil),
		pod("shop", "pricer-i", yes, owned(kvv1.TrafficYes, ""), nil),
	}
}
