package breaker

import (
	"cmp"
	"slices"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
)

// Fail-open (SPEC §5 step 12). The floor limits new ejections (Plan), and it is also restored: when fewer
// pods serve than the floor for any reason (a Node lost, pods crashing, deleted, drained or replaced by a
// rollout), the pods Kubervisor's breakers ejected go back to traffic until the floor is met. Manual holds
// and paused pods are never restored here: a person decided those.

// Standing is how anomalous a pod is in the breakers' latest evaluations, for Restore's order.
type Standing struct {
	// Breakers is how many breakers flag the pod in their latest evaluation (0: none).
	Breakers int
	// Worst is the pod's place in the worst-first rankings of the breakers that flag it: the smallest
	// index among them (0 is the worst anomaly of some breaker). Meaningless when Breakers is 0.
	Worst int
}

// Standings reads the breakers' latest rankings (each worst first) into a Standing per flagged pod.
func Standings(rankings ...[]string) map[string]Standing {
	out := map[string]Standing{}
	for _, ranking := range rankings {
		seen := make(map[string]bool, len(ranking))
		for i, pod := range ranking {
			if seen[pod] {
				continue
			}
			seen[pod] = true
			s, ok := out[pod]
			if !ok || i < s.Worst {
				s.Worst = i
			}
			s.Breakers++
			out[pod] = s
		}
	}
	return out
}

// Restoration is what Restore decided.
type Restoration struct {
	// InTraffic and Floor are the serving pods before the restoration, and the floor.
	InTraffic, Floor int
	// Restore are the pods to put back in traffic, in order.
	Restore []string
	// Held and Paused are the pods out of traffic that Restore never puts back (manual holds, paused
	// pods), sorted; set only when the fleet is under the floor.
	Held, Paused []string
	// Short is how many pods the floor still misses once Restore is carried out (0: it is met).
	Short int
}

// Below reports whether the fleet was under the floor.
func (r Restoration) Below() bool { return r.InTraffic < r.Floor }

// Restorable reports whether a pod may be put back in traffic by a floor restoration: out of traffic by a
// breaker's ejection (not by hand, not paused), and able to serve once back (Ready, not terminating).
func (p Pod) Restorable() bool {
	return p.Traffic == kvv1.TrafficNo && !p.Manual && p.Ready && !p.Terminating
}

// Restore decides the floor restoration of one pass: when fewer pods serve than floor, the restorable pods
// go back, as many as the floor misses, in this order: pods no breaker flags first, then the least
// anomalous (flagged by fewer breakers, then further down their rankings), then the earliest break-at,
// then the name. Nothing is restored while the floor holds.
func Restore(pods []Pod, floor int, standing map[string]Standing) Restoration {
	r := Restoration{InTraffic: Count(pods).InTraffic, Floor: floor}
	if !r.Below() {
		return r
	}
	var candidates []Pod
	for _, p := range pods {
		switch {
		case p.Restorable():
			candidates = append(candidates, p)
		case p.Terminating:
		case p.Traffic == kvv1.TrafficNo && p.Manual:
			r.Held = append(r.Held, p.Name)
		case p.Traffic == kvv1.TrafficPause:
			r.Paused = append(r.Paused, p.Name)
		}
	}
	slices.Sort(r.Held)
	slices.Sort(r.Paused)
	slices.SortFunc(candidates, func(a, b Pod) int {
		sa, sb := standing[a.Name], standing[b.Name]
		if c := cmp.Compare(sa.Breakers, sb.Breakers); c != 0 {
			return c
		}
		if sa.Breakers > 0 {
			// Further down the rankings is less anomalous: the higher index first.
			if c := cmp.Compare(sb.Worst, sa.Worst); c != 0 {
				return c
			}
		}
		if c := a.BreakAt.Compare(b.BreakAt); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
	missing := r.Floor - r.InTraffic
	n := min(missing, len(candidates))
	for _, p := range candidates[:n] {
		r.Restore = append(r.Restore, p.Name)
	}
	r.Short = missing - n
	return r
}
