// Package breaker decides, without any API access, which anomalous pods a pass ejects: the floor (SPEC §5.3)
// and one shared ejection quota for all the breakers of a KubervisorService.
package breaker

import (
	"time"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/podstate"
)

// Pod is what the plan needs to know of a managed pod.
type Pod struct {
	Name  string
	Ready bool
	// Terminating is a pod with a deletionTimestamp: the EndpointSlice controller already marks it
	// terminating, so it serves no new traffic whatever its Ready condition says (SPEC §5 step 7).
	Terminating bool
	Traffic     string // kubervisor/traffic: yes, no, pause, or anything else (unknown)
	// Locked is a serving pod that cannot be taken out of traffic (readinessGate mode, no gate): it counts
	// in traffic for the floor but is never ejected.
	Locked bool
	// Manual is a pod held out of traffic by hand (kubervisor/strategy is the manual strategy): a floor
	// restoration leaves it out (Restore).
	Manual bool
	// BreakAt is when a pod out of traffic was ejected (kubervisor/break-at; zero when unknown): Restore's
	// last tie-break. Only read for pods with Traffic no.
	BreakAt time.Time
}

// Serving reports whether the pod is in traffic (podstate.Serving): Ready, not terminating, labelled
// traffic=yes.
func (p Pod) Serving() bool {
	return podstate.Serves(p.Traffic, p.Ready, p.Terminating)
}

// Anomaly is a pod flagged by a detector, with the detector's explanation.
type Anomaly struct {
	Pod    string
	Reason string
}

// Input is one breaker's evaluation in this pass.
type Input struct {
	Name string
	// Anomalies are ranked worst first, as the detector returned them.
	Anomalies []Anomaly
	// DryRun breakers report what they would eject and eject nothing.
	DryRun bool
	// Hold, when set, says why the breaker ejects nobody in this pass (a guard: storm suspected): its
	// anomalies in traffic are withheld without using the quota.
	Hold string
	// Spared are the pods this breaker judges but does not eject (warming up, on probation, pending), with
	// why; they use no quota.
	Spared map[string]string
}

// Outcome is what the plan decided for one breaker.
type Outcome struct {
	Name string
	// Anomalous are the flagged pods that are managed, worst first.
	Anomalous []Anomaly
	// Eject are the pods to take out of traffic now, worst first (never in dry run).
	Eject []Anomaly
	// WouldEject are the pods a dry run would have ejected.
	WouldEject []Anomaly
	// Withheld are the anomalous pods in traffic kept in traffic because of the floor, or because of the
	// input's Hold.
	Withheld []Anomaly
	// Spared are the anomalous pods in traffic the input spares (Input.Spared).
	Spared []Anomaly
}

// Fleet counts the managed pods the floor is computed from.
type Fleet struct {
	// Base is every managed pod that is not terminating, Ready or not, in traffic or not: the base of the
	// ratio (SPEC §5 step 7), as a PodDisruptionBudget counts expected pods. A fleet already degraded by
	// crashing pods is not thinned further, a killed pod's NotReady replacement keeps its place, and the
	// ratio does not erode from pass to pass as pods are ejected.
	Base int
	// Ready is every Ready managed pod that is not terminating: what the guards judge shares of.
	Ready int
	// InTraffic is every serving pod (Pod.Serving): Ready, not terminating, traffic=yes.
	InTraffic int
}

// Count returns the fleet of pods.
func Count(pods []Pod) Fleet {
	var f Fleet
	for _, p := range pods {
		if p.Terminating {
			continue
		}
		f.Base++
		if p.Ready {
			f.Ready++
		}
		if p.Serving() {
			f.InTraffic++
		}
	}
	return f
}

// Floor returns the number of pods kept in traffic whatever the detectors say:
// max(minCount, ceil(minRatio × base / 100)), base being Fleet.Base. Negative inputs count as zero.
func Floor(minCount, minRatio int32, base int) int {
	byRatio := 0
	if minRatio > 0 && base > 0 {
		// Integer form of ceil(ratio × n / 100), exact for every int32 ratio and fleet size.
		byRatio = int((int64(minRatio)*int64(base) + 99) / 100)
	}
	return max(int(max(minCount, 0)), byRatio)
}

// FloorOf returns the KubervisorService's floor: the highest of its breakers' floors. NOTE: one floor, and so
// one quota, for the whole KubervisorService: every breaker's floor holds whatever the other breakers do,
// and breakers never race each other for the last pods.
func FloorOf(spec *kvv1.KubervisorServiceSpec, base int) int {
	floor := 0
	if len(spec.Breakers) == 0 {
		return Floor(kvv1.DefaultMinPodsAvailable, 0, base)
	}
	for i := range spec.Breakers {
		c, r := spec.Breakers[i].Floor()
		floor = max(floor, Floor(c, r, base))
	}
	return floor
}

// Quota is how many more pods may leave traffic: inTraffic − floor, never negative.
func Quota(f Fleet, floor int) int {
	return max(0, f.InTraffic-floor)
}

// Plan decides one pass. Enforced breakers run first, in the given order, sharing the quota; each takes its
// anomalies worst first. Dry-run breakers then simulate, in order, on what the enforced ones left: they share
// a copy of the remaining quota, so a KubervisorService entirely in dry run reports exactly what it would
// have done. Anomalies about pods that are not managed are dropped; pods that are not serving (not Ready,
// terminating, already out of traffic) are reported as anomalous but are neither ejected nor withheld. A
// held input withholds its serving anomalies without using the quota.
func Plan(pods []Pod, floor int, inputs []Input) []Outcome {
	byName := make(map[string]Pod, len(pods))
	for _, p := range pods {
		byName[p.Name] = p
	}
	quota := Quota(Count(pods), floor)
	out := make([]Outcome, len(inputs))
	taken := make(map[string]bool, quota)
	run := func(i int, quota *int, record func(o *Outcome, a Anomaly)) {
		in := inputs[i]
		o := &out[i]
		o.Name = in.Name
		seen := make(map[string]bool, len(in.Anomalies))
		for _, a := range in.Anomalies {
			p, ok := byName[a.Pod]
			if !ok || seen[a.Pod] {
				continue
			}
			seen[a.Pod] = true
			o.Anomalous = append(o.Anomalous, a)
			if !p.Serving() || p.Locked || taken[a.Pod] {
				continue
			}
			if _, ok := in.Spared[a.Pod]; ok {
				o.Spared = append(o.Spared, a)
				continue
			}
			if in.Hold == "" && *quota > 0 {
				*quota--
				taken[a.Pod] = true
				record(o, a)
			} else {
				o.Withheld = append(o.Withheld, a)
			}
		}
	}
	for i := range inputs {
		if !inputs[i].DryRun {
			run(i, &quota, func(o *Outcome, a Anomaly) { o.Eject = append(o.Eject, a) })
		}
	}
	simulated := quota
	for i := range inputs {
		if inputs[i].DryRun {
			run(i, &simulated, func(o *Outcome, a Anomaly) { o.WouldEject = append(o.WouldEject, a) })
		}
	}
	return out
}
