package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
)

// Table renders the results as a plain-text table: figure, measured, goal (SPEC §9 and issue 12) and
// the load average read when the figure was measured.
func (r *Result) Table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "\nbench-scale: %d pods under %d KubervisorServices, evaluationPeriod %s, detector latency %s, %d anomaly groups\n",
		r.Pods, r.KVS, r.Period, r.Latency, r.AnomalyGroups)
	if r.Unsupervised > 0 {
		fmt.Fprintf(&b, "and %d unsupervised pods in namespace %s\n", r.Unsupervised, otherNamespace)
	}
	fmt.Fprintf(&b, "manager args: %s\n\n", strings.Join(r.ManagerArgs, " "))
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	row := func(figure, measured, goal string, load loadAvg) {
		_, _ = fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", figure, measured, goal, load) // into a buffer
	}
	_, _ = fmt.Fprintln(w, "figure\tmeasured\tgoal\tload avg 1/5/15m") // into a buffer
	a, s, x := r.Adoption, r.Steady, r.Reaction
	row(fmt.Sprintf("adoption of %d pods", r.Pods),
		fmt.Sprintf("%.1f s (%d/%d pods named, %d/%d KVS Ready; KVS created in %.1f s), %.1f CPU s, %d writes",
			a.Seconds, a.PodsNamed, r.Pods, a.KVSReady, r.KVS, a.CreateSeconds, a.CPUSeconds, a.Requests.Writes),
		"<= 30 s", a.Load)
	procs := make([]string, 0, len(a.ProcessCPU))
	for _, name := range slices.Sorted(maps.Keys(a.ProcessCPU)) {
		procs = append(procs, fmt.Sprintf("%s %.1f", name, a.ProcessCPU[name]))
	}
	row("  adoption: CPU s by process", orNone(strings.Join(procs, ", ")), "", a.Load)
	for _, q := range top(a.Requests.Requests, 6) {
		row("  adoption: "+q.Verb+" "+q.Resource, fmt.Sprintf("%d", q.Count), "", a.Load)
	}
	row("steady requests/min besides leader election (audit)",
		fmt.Sprintf("%.0f (%.0f writes)", s.Requests.TotalPerMin, s.Requests.WritesPerMin), "0", s.Load)
	for _, q := range top(s.Requests.Requests, 8) {
		row("  steady: "+q.Verb+" "+q.Resource, fmt.Sprintf("%.1f/min", q.PerMin), "", s.Load)
	}
	row("  steady: leader election (leases)", fmt.Sprintf("%.1f/min", s.Requests.LeaderElectionPerMin), "", s.Load)
	methods := make([]string, 0, len(s.RESTPerMin))
	for _, m := range slices.Sorted(maps.Keys(s.RESTPerMin)) {
		methods = append(methods, fmt.Sprintf("%s %.1f", m, s.RESTPerMin[m]))
	}
	row("steady rest_client_requests_total/min by method (leases included)", orNone(strings.Join(methods, ", ")), "", s.Load)
	row("manager CPU in steady state", fmt.Sprintf("%.2f CPU s/min", s.CPUPerMin), "<= 6 CPU s/min", s.Load)
	rss := fmt.Sprintf("%.0f MiB (max %.0f MiB; %.0f MiB anonymous)", s.RSSMiBEnd, s.RSSMiBMax, s.RSSAnonMiBEnd)
	row("manager RSS in steady state", rss, "<= 200 MiB", s.Load)
	row(fmt.Sprintf("interval between evaluations, p50/p99/max (period %s)", r.Period),
		fmt.Sprintf("%.2f / %.2f / %.2f s (%d intervals)", s.Interval.P50, s.Interval.P99, s.Interval.Max, s.Interval.N),
		"p99 <= 1.05 x period", s.Load)
	row("lateness vs period, p50/p99/max",
		fmt.Sprintf("%.2f / %.2f / %.2f s", s.Lateness.P50, s.Lateness.P99, s.Lateness.Max), "", s.Load)
	row("evaluations more than 1 s late", fmt.Sprintf("%.1f %%", 100*s.LateShare), "0", s.Load)
	row("detector calls/s", fmt.Sprintf("%.1f (expected %.1f; %d breakers called)", s.CallsPerSec, s.ExpectedRate, s.Breakers),
		fmt.Sprintf("%.0f", s.ExpectedRate), s.Load)
	row("detector answer -> pod traffic=no, p50/p99/max",
		fmt.Sprintf("%.0f / %.0f / %.0f ms (%d/%d pods)", x.Ms.P50, x.Ms.P99, x.Ms.Max, x.Ejected, x.Expected), "p99 <= 100 ms", x.Load)
	_ = w.Flush()
	b.WriteString(shardTable(r.Shards))
	b.WriteString(restartTable(r.Restart))
	for _, warn := range r.Warnings {
		fmt.Fprintf(&b, "WARNING: %s\n", warn)
	}
	if r.WorkDir != "" {
		fmt.Fprintf(&b, "work directory (audit.log, manager.log): %s\n", r.WorkDir)
	}
	return b.String()
}

func top(r []requestCount, n int) []requestCount { return r[:min(n, len(r))] }

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
