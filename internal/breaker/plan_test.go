package breaker

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
)

func TestFloor(t *testing.T) {
	cases := map[string]struct {
		count, ratio int32
		ready        int
		want         int
	}{
		"count only":                {count: 3, ratio: 0, ready: 10, want: 3},
		"ratio rounds up":           {count: 0, ratio: 50, ready: 5, want: 3},
		"ratio exact":               {count: 0, ratio: 50, ready: 10, want: 5},
		"ratio 1% of 1 pod is 1":    {count: 0, ratio: 1, ready: 1, want: 1},
		"ratio 33% of 3 is 1":       {count: 0, ratio: 33, ready: 3, want: 1},
		"ratio 34% of 3 is 2":       {count: 0, ratio: 34, ready: 3, want: 2},
		"ratio 100%":                {count: 0, ratio: 100, ready: 7, want: 7},
		"count wins over ratio":     {count: 6, ratio: 50, ready: 10, want: 6},
		"ratio wins over count":     {count: 1, ratio: 80, ready: 10, want: 8},
		"empty fleet keeps count":   {count: 2, ratio: 90, ready: 0, want: 2},
		"negative count is zero":    {count: -4, ratio: 0, ready: 10, want: 0},
		"count above fleet is kept": {count: 20, ratio: 0, ready: 10, want: 20},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := Floor(tc.count, tc.ratio, tc.ready); got != tc.want {
				t.Errorf("Floor(%d, %d, %d) = %d, want %d", tc.count, tc.ratio, tc.ready, got, tc.want)
			}
		})
	}
}

func TestFloorOf(t *testing.T) {
	ptr := func(v int32) *int32 { return &v }
	spec := &kvv1.KubervisorServiceSpec{Breakers: []kvv1.BreakerStrategy{
		{Name: "a", MinPodsAvailableCount: ptr(2)},
		{Name: "b", MinPodsAvailableCount: ptr(1), MinPodsAvailableRatio: ptr(60)},
		{Name: "c"}, // defaults: count 1
	}}
	if got := FloorOf(spec, 10); got != 6 {
		t.Errorf("FloorOf(10 ready) = %d, want 6 (breaker b's 60%%)", got)
	}
	if got := FloorOf(spec, 2); got != 2 {
		t.Errorf("FloorOf(2 ready) = %d, want 2 (breaker a's count)", got)
	}
}

func names(as []Anomaly) []string {
	var out []string
	for _, a := range as {
		out = append(out, a.Pod)
	}
	return out
}

func fleet(spec string) []Pod {
	// One letter per pod: Y ready in traffic, N ready ejected, P ready paused, y not ready in traffic.
	var pods []Pod
	for i, c := range spec {
		p := Pod{Name: fmt.Sprintf("p%d", i)}
		switch c {
		case 'Y':
			p.Ready, p.Traffic = true, kvv1.TrafficYes
		case 'N':
			p.Ready, p.Traffic = true, kvv1.TrafficNo
		case 'P':
			p.Ready, p.Traffic = true, kvv1.TrafficPause
		case 'y':
			p.Traffic = kvv1.TrafficYes
		}
		pods = append(pods, p)
	}
	return pods
}

func anomalies(pods ...string) []Anomaly {
	out := make([]Anomaly, len(pods))
	for i, p := range pods {
		out[i] = Anomaly{Pod: p, Reason: "r-" + p}
	}
	return out
}

func TestPlan(t *testing.T) {
	type want struct{ anomalous, eject, would, withheld []string }
	cases := map[string]struct {
		pods   string
		floor  int
		inputs []Input
		want   []want
	}{
		"worst first under quota": {
			pods: "YYYYYY", floor: 4,
			inputs: []Input{{Name: "a", Anomalies: anomalies("p3", "p1", "p5")}},
			want:   []want{{anomalous: []string{"p3", "p1", "p5"}, eject: []string{"p3", "p1"}, withheld: []string{"p5"}}},
		},
		"already ejected pods count as out": {
			pods: "YYYNNY", floor: 3,
			inputs: []Input{{Name: "a", Anomalies: anomalies("p0", "p1")}},
			want:   []want{{anomalous: []string{"p0", "p1"}, eject: []string{"p0"}, withheld: []string{"p1"}}},
		},
		"paused pods count as out": {
			pods: "YYPP", floor: 2,
			inputs: []Input{{Name: "a", Anomalies: anomalies("p0")}},
			want:   []want{{anomalous: []string{"p0"}, withheld: []string{"p0"}}},
		},
		"not ready and out of traffic pods are neither ejected nor withheld": {
			pods: "YYYyN", floor: 1,
			inputs: []Input{{Name: "a", Anomalies: anomalies("p3", "p4", "p0")}},
			want:   []want{{anomalous: []string{"p3", "p4", "p0"}, eject: []string{"p0"}}},
		},
		"unmanaged and duplicate names are dropped": {
			pods: "YYYY", floor: 1,
			inputs: []Input{{Name: "a", Anomalies: anomalies("ghost", "p2", "p2")}},
			want:   []want{{anomalous: []string{"p2"}, eject: []string{"p2"}}},
		},
		"two breakers share one quota in order": {
			pods: "YYYYY", floor: 3,
			inputs: []Input{
				{Name: "a", Anomalies: anomalies("p0")},
				{Name: "b", Anomalies: anomalies("p0", "p1", "p2")},
			},
			want: []want{
				{anomalous: []string{"p0"}, eject: []string{"p0"}},
				{anomalous: []string{"p0", "p1", "p2"}, eject: []string{"p1"}, withheld: []string{"p2"}},
			},
		},
		"dry run simulates on what enforced breakers left": {
			pods: "YYYYY", floor: 3,
			inputs: []Input{
				{Name: "dry", DryRun: true, Anomalies: anomalies("p3", "p4")},
				{Name: "real", Anomalies: anomalies("p0")},
			},
			want: []want{
				{anomalous: []string{"p3", "p4"}, would: []string{"p3"}, withheld: []string{"p4"}},
				{anomalous: []string{"p0"}, eject: []string{"p0"}},
			},
		},
		"floor above the fleet withholds everything": {
			pods: "YY", floor: 5,
			inputs: []Input{{Name: "a", Anomalies: anomalies("p0", "p1")}},
			want:   []want{{anomalous: []string{"p0", "p1"}, withheld: []string{"p0", "p1"}}},
		},
		"no anomalies": {
			pods: "YYY", floor: 1,
			inputs: []Input{{Name: "a"}},
			want:   []want{{}},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := Plan(fleet(tc.pods), tc.floor, tc.inputs)
			var gotW []want
			for _, o := range got {
				gotW = append(gotW, want{names(o.Anomalous), names(o.Eject), names(o.WouldEject), names(o.Withheld)})
			}
			if d := cmp.Diff(tc.want, gotW, cmp.AllowUnexported(want{})); d != "" {
				t.Errorf("Plan() mismatch (-want +got):\n%s", d)
			}
			for i, o := range got {
				if o.Name != tc.inputs[i].Name {
					t.Errorf("outcome %d named %q, want %q", i, o.Name, tc.inputs[i].Name)
				}
			}
		})
	}
}

// TestPlanNeverBreaksTheFloor generates 10,000 random fleets (0–200 pods, random readiness and traffic
// labels, random anomaly sets, random count/ratio, 1–4 breakers, some in dry run) and checks the promises of
// SPEC §5.3 on each: pods in traffic never fall under the floor because of an ejection, no more than
// inTraffic − floor pods are ejected, only Ready in-traffic anomalous pods of enforced breakers are ejected,
// each at most once, dry-run breakers eject nothing, and every breaker takes its anomalies worst first.
//
// Terminating pods never count as serving, the ratio's base is every pod that is not terminating (SPEC §5
// step 7), and no breaker ejects while its anomalous share is above its storm threshold (§5 step 9).
//
// Mutations this test catches (each was tried and made it fail): rounding the ratio down
// ((ratio×n)/100 instead of the ceiling) in Floor; counting ejected or paused pods as in traffic in Count;
// computing the ratio on pods in traffic instead of every Ready managed pod; giving each breaker its own
// quota instead of one shared quota; letting dry-run breakers eject.
func TestPlanNeverBreaksTheFloor(t *testing.T) {
	rng := rand.New(rand.NewPCG(2026, 11))
	traffic := []string{kvv1.TrafficYes, kvv1.TrafficYes, kvv1.TrafficYes, kvv1.TrafficNo, kvv1.TrafficPause, ""}
	for iter := range 10000 {
		n := rng.IntN(201)
		pods := make([]Pod, n)
		for i := range pods {
			pods[i] = Pod{Name: fmt.Sprintf("p%d", i), Ready: rng.IntN(10) > 1, Terminating: rng.IntN(8) == 0,
				Traffic: traffic[rng.IntN(len(traffic))]}
		}
		spec := &kvv1.KubervisorServiceSpec{}
		var inputs []Input
		var stormPct []int32
		for b := range 1 + rng.IntN(4) {
			count, ratio := int32(rng.IntN(12)), int32(rng.IntN(101))
			spec.Breakers = append(spec.Breakers, kvv1.BreakerStrategy{Name: fmt.Sprintf("b%d", b), MinPodsAvailableCount: &count, MinPodsAvailableRatio: &ratio})
			in := Input{Name: fmt.Sprintf("b%d", b), DryRun: rng.IntN(4) == 0}
			for range rng.IntN(n + 5) {
				name := fmt.Sprintf("p%d", rng.IntN(n+3)) // a few names are not managed pods
				in.Anomalies = append(in.Anomalies, Anomaly{Pod: name})
			}
			// The storm guard, as the controller applies it: a held breaker ejects nobody.
			pct := int32(rng.IntN(101))
			if g := Guard(kvv1.Guards{MaxAnomalousPercent: pct}, pods, in.Anomalies, time.Time{}, time.Time{}); g.Verdict == Storm {
				in.Hold = g.Why
			}
			stormPct = append(stormPct, pct)
			inputs = append(inputs, in)
		}

		// The oracle counts from scratch, without Count or Floor: the ratio's base is every pod that is not
		// terminating, and only serving pods (Ready, not terminating, traffic=yes) are in traffic.
		base, ready, inTraffic := 0, 0, 0
		byName := map[string]Pod{}
		for _, p := range pods {
			byName[p.Name] = p
			if p.Terminating {
				continue
			}
			base++
			if p.Ready {
				ready++
				if p.Traffic == kvv1.TrafficYes {
					inTraffic++
				}
			}
		}
		floor := 0
		for _, b := range spec.Breakers {
			r := float64(*b.MinPodsAvailableRatio) * float64(base) / 100
			f := int(*b.MinPodsAvailableCount)
			if c := int(r); float64(c) < r {
				f = max(f, c+1)
			} else {
				f = max(f, c)
			}
			floor = max(floor, f)
		}

		out := Plan(pods, FloorOf(spec, Count(pods).Base), inputs)
		ejected := map[string]bool{}
		for i, o := range out {
			if inputs[i].DryRun && len(o.Eject) > 0 {
				t.Fatalf("iteration %d: dry-run breaker %s ejected %v", iter, o.Name, names(o.Eject))
			}
			rank := map[string]int{}
			for r, a := range inputs[i].Anomalies {
				if _, ok := rank[a.Pod]; !ok {
					rank[a.Pod] = r
				}
			}
			last := -1
			for _, a := range o.Eject {
				p, ok := byName[a.Pod]
				if !ok || !p.Ready || p.Terminating || p.Traffic != kvv1.TrafficYes {
					t.Fatalf("iteration %d: breaker %s ejected %s which is not a serving managed pod (%+v)", iter, o.Name, a.Pod, p)
				}
				if ejected[a.Pod] {
					t.Fatalf("iteration %d: %s ejected twice", iter, a.Pod)
				}
				ejected[a.Pod] = true
				if rank[a.Pod] < last {
					t.Fatalf("iteration %d: breaker %s did not eject worst first: %v", iter, o.Name, names(o.Eject))
				}
				last = rank[a.Pod]
			}
			// Worst first also means no withheld pod ranks before an ejected one of the same breaker.
			for _, w := range o.Withheld {
				if !inputs[i].DryRun && len(o.Eject) > 0 && rank[w.Pod] < rank[o.Eject[len(o.Eject)-1].Pod] {
					t.Fatalf("iteration %d: breaker %s withheld %s but ejected a less anomalous pod", iter, o.Name, w.Pod)
				}
			}
		}
		allowed := max(0, inTraffic-floor)
		if len(ejected) > allowed {
			t.Fatalf("iteration %d: ejected %d pods, allowed %d (inTraffic %d, floor %d)", iter, len(ejected), allowed, inTraffic, floor)
		}
		if after := inTraffic - len(ejected); len(ejected) > 0 && after < floor {
			t.Fatalf("iteration %d: %d pods left in traffic, under the floor %d", iter, after, floor)
		}
		// No breaker ejects while its anomalous share of the Ready pods is above its threshold.
		for i, o := range out {
			anomalousReady := map[string]bool{}
			for _, a := range inputs[i].Anomalies {
				if p, ok := byName[a.Pod]; ok && p.Ready && !p.Terminating {
					anomalousReady[a.Pod] = true
				}
			}
			if len(o.Eject)+len(o.WouldEject) > 0 && stormPct[i] < 100 && ready > 0 && len(anomalousReady)*100 > int(stormPct[i])*ready {
				t.Fatalf("iteration %d: breaker %s ejected with %d of %d Ready pods anomalous, above %d%%", iter, o.Name,
					len(anomalousReady), ready, stormPct[i])
			}
		}
		// The quota is used: an enforced anomaly is withheld only when the quota is exhausted or it is held.
		for i, o := range out {
			if !inputs[i].DryRun && inputs[i].Hold == "" && len(o.Withheld) > 0 && len(ejected) < allowed {
				t.Fatalf("iteration %d: breaker %s withheld %v with quota left (%d of %d used)", iter, o.Name, names(o.Withheld), len(ejected), allowed)
			}
		}
	}
}
