package podstate_test

import (
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/podstate"
)

func TestManagedSelector(t *testing.T) {
	cases := map[string]struct {
		selector map[string]string
		ok       bool
		matches  map[string]string
		misses   map[string]string
		pairs    []string // ManagedPairs
	}{
		"traffic key is ignored": {
			selector: map[string]string{"tier": "web", "app": "a", kvv1.LabelTraffic: kvv1.TrafficYes}, ok: true,
			pairs:   []string{"app=a", "tier=web"},
			matches: map[string]string{"app": "a", "tier": "web", kvv1.LabelTraffic: kvv1.TrafficNo},
			misses:  map[string]string{"app": "b"},
		},
		"plain selector": {
			selector: map[string]string{"app": "a"}, ok: true,
			matches: map[string]string{"app": "a"}, misses: map[string]string{}, pairs: []string{"app=a"},
		},
		"only the traffic key selects nothing": {
			selector: map[string]string{kvv1.LabelTraffic: kvv1.TrafficYes},
			misses:   map[string]string{kvv1.LabelTraffic: kvv1.TrafficYes},
		},
		"no selector selects nothing": {misses: map[string]string{"app": "a"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			sel, ok := podstate.ManagedSelector(tc.selector)
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v", ok, tc.ok)
			}
			if tc.matches != nil && !sel.Matches(labels.Set(tc.matches)) {
				t.Errorf("selector %v does not match %v", sel, tc.matches)
			}
			if sel.Matches(labels.Set(tc.misses)) {
				t.Errorf("selector %v matches %v", sel, tc.misses)
			}
			if got := podstate.ManagedPairs(tc.selector); !slices.Equal(got, tc.pairs) && len(got)+len(tc.pairs) > 0 {
				t.Errorf("ManagedPairs = %q, want %q", got, tc.pairs)
			}
		})
	}
}

func TestActivatorInactivity(t *testing.T) {
	svc := func(selector map[string]string) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "svc"}, Spec: corev1.ServiceSpec{Selector: selector}}
	}
	active := svc(map[string]string{"app": "a", kvv1.LabelTraffic: kvv1.TrafficYes})
	kvs := func(dryRun, deleting bool) *kvv1.KubervisorService {
		k := &kvv1.KubervisorService{Spec: kvv1.KubervisorServiceSpec{Service: "svc", DryRun: dryRun}}
		if deleting {
			now := metav1.Now()
			k.DeletionTimestamp = &now
		}
		return k
	}
	cases := map[string]struct {
		kvs  *kvv1.KubervisorService
		svc  *corev1.Service
		want podstate.Inactivity
	}{
		"active":                      {kvs: kvs(false, false), svc: active, want: podstate.Inactivity{}},
		"deleting wins over the rest": {kvs: kvs(true, true), svc: nil, want: podstate.Inactivity{Short: "deleting", Long: "the KubervisorService is being deleted"}},
		"dry run restores only":       {kvs: kvs(true, false), svc: active, want: podstate.Inactivity{Short: "dry run", Long: "dry run", RestoreOnly: true}},
		"no service":                  {kvs: kvs(false, false), svc: nil, want: podstate.Inactivity{Short: "no service", Long: "Service svc not found"}},
		"selector lacks the traffic key: restores only": {kvs: kvs(false, false), svc: svc(map[string]string{"app": "a"}),
			want: podstate.Inactivity{Short: "selector", Long: "the selector of Service svc lacks kubervisor/traffic=yes", RestoreOnly: true}},
		"selector has no other key": {kvs: kvs(false, false), svc: svc(map[string]string{kvv1.LabelTraffic: kvv1.TrafficYes}),
			want: podstate.Inactivity{Short: "selector", Long: "the selector of Service svc has no key besides kubervisor/traffic"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := podstate.ActivatorInactivity(tc.kvs, tc.svc)
			if got != tc.want {
				t.Errorf("ActivatorInactivity() = %+v, want %+v", got, tc.want)
			}
			if got.Active() != (tc.want == podstate.Inactivity{}) || got.Acts() != (got.Active() || tc.want.RestoreOnly) {
				t.Errorf("Active() = %t, Acts() = %t", got.Active(), got.Acts())
			}
		})
	}
}

func TestReadyStatus(t *testing.T) {
	pod := func(conds ...corev1.PodCondition) *corev1.Pod {
		return &corev1.Pod{Status: corev1.PodStatus{Conditions: conds}}
	}
	cases := map[string]struct {
		pod  *corev1.Pod
		want corev1.ConditionStatus
	}{
		"no condition is Unknown": {pod: pod(), want: corev1.ConditionUnknown},
		"Ready True":              {pod: pod(corev1.PodCondition{Type: corev1.ContainersReady, Status: corev1.ConditionFalse}, corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionTrue}), want: corev1.ConditionTrue},
		"Ready False":             {pod: pod(corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionFalse}), want: corev1.ConditionFalse},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := podstate.ReadyStatus(tc.pod); got != tc.want {
				t.Errorf("ReadyStatus() = %s, want %s", got, tc.want)
			}
			if podstate.Ready(tc.pod) != (tc.want == corev1.ConditionTrue) {
				t.Error("Ready() disagrees with ReadyStatus()")
			}
			if podstate.TrafficControlled(nil) {
				t.Error("a missing Service controls traffic")
			}
		})
	}
}

func TestActivatorInactivityForADryRunBreaker(t *testing.T) {
	kvs := &kvv1.KubervisorService{Spec: kvv1.KubervisorServiceSpec{Service: "svc",
		Breakers: []kvv1.BreakerStrategy{{Name: "dry", DryRun: true}, {Name: "live"}}}}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "svc"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "a", kvv1.LabelTraffic: kvv1.TrafficYes}}}
	if got := podstate.ActivatorInactivityFor(kvs, svc, "dry"); got != (podstate.Inactivity{Short: "dry run", Long: "breaker dry is in dry run", RestoreOnly: true}) {
		t.Errorf("dry-run breaker: %+v", got)
	}
	if got := podstate.ActivatorInactivityFor(kvs, svc, "live"); !got.Active() {
		t.Errorf("enforced breaker: %+v", got)
	}
}

// TestLabelReadersAgreeWithParse guards the cheap readers against drifting from the parser.
func TestLabelReadersAgreeWithParse(t *testing.T) {
	for _, l := range []map[string]string{nil, {kvv1.LabelName: "kvs", kvv1.LabelTraffic: kvv1.TrafficNo, kvv1.LabelStrategy: "errors"},
		{kvv1.LabelTraffic: "maybe"}, {kvv1.LabelName: ""}} {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: l}}
		s := podstate.Of(pod, time.Time{})
		if podstate.TrafficOf(pod) != s.Traffic || podstate.OwnerOf(pod) != s.Owner || podstate.StrategyOf(pod) != s.Strategy {
			t.Errorf("labels %v: TrafficOf %q OwnerOf %q StrategyOf %q, Parse %q %q %q", l, podstate.TrafficOf(pod), podstate.OwnerOf(pod),
				podstate.StrategyOf(pod), s.Traffic, s.Owner, s.Strategy)
		}
		_, present := l[kvv1.LabelName]
		if name, ok := podstate.OwnerLabel(l); name != s.Owner || ok != present {
			t.Errorf("labels %v: OwnerLabel = %q, %t; want %q, %t", l, name, ok, s.Owner, present)
		}
	}
}

func TestReadySince(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	cond := func(typ corev1.PodConditionType, s corev1.ConditionStatus, at time.Time) corev1.PodCondition {
		return corev1.PodCondition{Type: typ, Status: s, LastTransitionTime: metav1.NewTime(at)}
	}
	pod := func(cs ...corev1.PodCondition) *corev1.Pod {
		return &corev1.Pod{Status: corev1.PodStatus{Conditions: cs}}
	}
	cases := map[string]struct {
		pod      *corev1.Pod
		gateMode bool
		want     time.Time
	}{
		"Ready since t0":     {pod: pod(cond(corev1.PodReady, corev1.ConditionTrue, t0)), want: t0},
		"not Ready: zero":    {pod: pod(cond(corev1.PodReady, corev1.ConditionFalse, t0))},
		"no condition: zero": {pod: pod()},
		"gate mode reads ContainersReady": {
			pod:      pod(cond(corev1.PodReady, corev1.ConditionFalse, t0), cond(corev1.ContainersReady, corev1.ConditionTrue, t0.Add(time.Minute))),
			gateMode: true, want: t0.Add(time.Minute),
		},
		"selector mode ignores ContainersReady": {
			pod:  pod(cond(corev1.PodReady, corev1.ConditionTrue, t0), cond(corev1.ContainersReady, corev1.ConditionTrue, t0.Add(time.Minute))),
			want: t0,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := podstate.ReadySince(tc.pod, tc.gateMode); !got.Equal(tc.want) {
				t.Errorf("ReadySince = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestServing(t *testing.T) {
	// A pod whose ContainersReady is True and Ready False is ready but for a readiness gate (Kubervisor's).
	pod := func(traffic string, ready, containersReady corev1.ConditionStatus, terminating bool) *corev1.Pod {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{kvv1.LabelTraffic: traffic}},
			Status: corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: ready},
				{Type: corev1.ContainersReady, Status: containersReady}}},
		}
		if terminating {
			p.DeletionTimestamp = new(metav1.NewTime(now))
		}
		return p
	}
	const yes, no = corev1.ConditionTrue, corev1.ConditionFalse
	cases := map[string]struct {
		pod                  *corev1.Pod
		selectorMode, inGate bool
	}{
		"ready, in traffic":             {pod: pod(kvv1.TrafficYes, yes, yes, false), selectorMode: true, inGate: true},
		"ready, ejected":                {pod: pod(kvv1.TrafficNo, yes, yes, false)},
		"ready, paused":                 {pod: pod(kvv1.TrafficPause, yes, yes, false)},
		"ready, no traffic label":       {pod: pod("", yes, yes, false)},
		"ready, terminating":            {pod: pod(kvv1.TrafficYes, yes, yes, true)},
		"not ready":                     {pod: pod(kvv1.TrafficYes, no, no, false)},
		"held by a gate: ready in gate": {pod: pod(kvv1.TrafficYes, no, yes, false), inGate: true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := podstate.Serving(tc.pod, false); got != tc.selectorMode {
				t.Errorf("Serving(selector mode) = %t, want %t", got, tc.selectorMode)
			}
			if got := podstate.Serving(tc.pod, true); got != tc.inGate {
				t.Errorf("Serving(readinessGate mode) = %t, want %t", got, tc.inGate)
			}
		})
	}
}

func TestCountPaused(t *testing.T) {
	var pods []corev1.Pod
	for _, traffic := range []string{kvv1.TrafficPause, kvv1.TrafficNo, kvv1.TrafficYes, "", kvv1.TrafficPause, "Pause"} {
		pods = append(pods, corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{kvv1.LabelTraffic: traffic}}})
	}
	pods = append(pods, corev1.Pod{})
	if got := podstate.CountPaused(pods, ""); got != 2 {
		t.Errorf("CountPaused = %d, want 2", got)
	}
	pods[0].Labels[kvv1.LabelStrategy] = "latency"
	if got := podstate.CountPaused(pods, "latency"); got != 1 {
		t.Errorf("CountPaused of breaker latency = %d, want 1 (the other paused pod is another breaker's)", got)
	}
	if got := podstate.CountPaused(nil, ""); got != 0 {
		t.Errorf("CountPaused(nil) = %d, want 0", got)
	}
	if !podstate.IsPaused(&pods[0]) || podstate.IsPaused(&pods[1]) || podstate.IsPaused(&pods[6]) {
		t.Error("IsPaused: want only traffic=pause")
	}
}

func TestGateReason(t *testing.T) {
	pod := func(owner, traffic, strategy string) *corev1.Pod {
		l := map[string]string{}
		for k, v := range map[string]string{kvv1.LabelName: owner, kvv1.LabelTraffic: traffic, kvv1.LabelStrategy: strategy} {
			if v != "" {
				l[k] = v
			}
		}
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: l}}
	}
	cases := map[string]struct {
		pod      *corev1.Pod
		gateMode bool
		want     corev1.ConditionStatus
		reason   string
		message  string
	}{
		"ejected in gate mode": {pod: pod("kvs", kvv1.TrafficNo, "errors"), gateMode: true, want: corev1.ConditionFalse,
			reason: kvv1.GateReasonEjected, message: "Taken out of traffic by Kubervisor, breaker errors"},
		"ejected without a strategy": {pod: pod("kvs", kvv1.TrafficNo, ""), gateMode: true, want: corev1.ConditionFalse,
			reason: kvv1.GateReasonEjected, message: "Taken out of traffic by Kubervisor, breaker (none)"},
		"paused in gate mode": {pod: pod("kvs", kvv1.TrafficPause, "errors"), gateMode: true, want: corev1.ConditionFalse,
			reason: kvv1.GateReasonPaused, message: "Paused by Kubervisor for investigation (kubervisor/traffic=pause)"},
		"in traffic in gate mode": {pod: pod("kvs", kvv1.TrafficYes, ""), gateMode: true, want: corev1.ConditionTrue,
			reason: kvv1.GateReasonInTraffic, message: "Kubervisor keeps the pod in traffic"},
		"ejected in selector mode": {pod: pod("kvs", kvv1.TrafficNo, "errors"), want: corev1.ConditionTrue,
			reason: kvv1.GateReasonSelectorMode, message: "The KubervisorService controls traffic through the Service selector"},
		"not supervised, out by hand": {pod: pod("", kvv1.TrafficNo, ""), gateMode: true, want: corev1.ConditionTrue,
			reason: kvv1.GateReasonNotSupervised, message: "No KubervisorService supervises the pod"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := podstate.WantedGate(tc.pod, tc.gateMode); got != tc.want {
				t.Errorf("WantedGate = %s, want %s", got, tc.want)
			}
			if reason, message := podstate.GateReason(tc.pod, tc.gateMode); reason != tc.reason || message != tc.message {
				t.Errorf("GateReason = %q, %q; want %q, %q", reason, message, tc.reason, tc.message)
			}
		})
	}
}
