// Package breaker decides, without any API access, which anomalous pods a pass ejects: the floor (SPEC §5.3)
// and one shared ejection quota for all the breakers of a KubervisorService.
package breaker

import (
	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
)

// Pod is what the plan needs to know of a managed pod.
type Pod struct {
	Name    string
	Ready   bool
	Traffic string // kubervisor/traffic: yes, no, pause, or anything else (unknown)
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
	// Withheld are the anomalous Ready pods in traffic kept in traffic because of the floor.
	Withheld []Anomaly
}

// Fleet counts the managed pods the floor is computed from.
type Fleet struct {
	// ReadyManaged is every Ready managed pod, in traffic or not: the base of the ratio, so that the ratio
	// does not erode from pass to pass as pods are ejected.
	ReadyManaged int
	// InTraffic is every Ready managed pod labelled kubervisor/traffic=yes.
	InTraffic int
}

// Count returns the fleet of pods.
func Count(pods []Pod) Fleet {
	var f Fleet
	for _, p := range pods {
		if !p.Ready {
			continue
		}
		f.ReadyManaged++
		if p.Traffic == kvv1.TrafficYes {
			f.InTraffic++
		}
	}
	return f
}

// Floor returns the number of pods kept in traffic whatever the detectors say:
// max(minCount, ceil(minRatio × readyManaged / 100)). Negative inputs count as zero.
func Floor(minCount, minRatio int32, readyManaged int) int {
	byRatio := 0
	if minRatio > 0 && readyManaged > 0 {
		// Integer form of ceil(ratio × n / 100), exact for every int32 ratio and fleet size.
		byRatio = int((int64(minRatio)*int64(readyManaged) + 99) / 100)
	}
	return max(int(max(minCount, 0)), byRatio)
}

// FloorOf returns the KubervisorService's floor: the highest of its breakers' floors. NOTE: one floor, and so
// one quota, for the whole KubervisorService: every breaker's floor holds whatever the other breakers do,
// and breakers never race each other for the last pods.
func FloorOf(spec *kvv1.KubervisorServiceSpec, readyManaged int) int {
	floor := 0
	if len(spec.Breakers) == 0 {
		return Floor(kvv1.DefaultMinPodsAvailable, 0, readyManaged)
	}
	for i := range spec.Breakers {
		c, r := spec.Breakers[i].Floor()
		floor = max(floor, Floor(c, r, readyManaged))
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
// have done. Anomalies about pods that are not managed are dropped; pods that are not Ready or already out of
// traffic are reported as anomalous but are neither ejected nor withheld.
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
			if !p.Ready || p.Traffic != kvv1.TrafficYes || taken[a.Pod] {
				continue
			}
			if *quota > 0 {
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
