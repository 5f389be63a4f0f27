package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kubervisor/kubervisor/test/cluster"
)

// auditPolicy logs every request of the manager's identity at level Metadata (no bodies), nothing else.
func auditPolicy(user string) string {
	return `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
  users: [` + strconv.Quote(user) + `]
- level: None
`
}

// auditEvent holds the fields of an audit.k8s.io/v1 Event the benchmark counts.
type auditEvent struct {
	AuditID    string `json:"auditID"`
	Stage      string `json:"stage"`
	Verb       string `json:"verb"`
	RequestURI string `json:"requestURI"`
	ObjectRef  *struct {
		Resource    string `json:"resource"`
		Subresource string `json:"subresource"`
	} `json:"objectRef"`
	RequestReceived time.Time `json:"requestReceivedTimestamp"`
}

// writeVerbs are the verbs that change something.
var writeVerbs = []string{"create", "update", "patch", "delete", "deletecollection"}

// requestCount is the number of requests of one verb on one resource in a window.
type requestCount struct {
	Verb     string  `json:"verb"`
	Resource string  `json:"resource"`
	Count    int     `json:"count"`
	PerMin   float64 `json:"perMin"`
	Write    bool    `json:"write"`
}

// auditCounts are the requests of a window read from the audit log.
type auditCounts struct {
	// Requests besides leader election, most frequent first.
	Requests []requestCount `json:"requests"`
	// Total and Writes besides leader election; LeaderElection is every request on leases.
	Total                int     `json:"total"`
	Writes               int     `json:"writes"`
	LeaderElection       int     `json:"leaderElection"`
	TotalPerMin          float64 `json:"totalPerMin"`
	WritesPerMin         float64 `json:"writesPerMin"`
	LeaderElectionPerMin float64 `json:"leaderElectionPerMin"`
}

// readAudit counts the requests received in [from, to) in the audit log at path, by verb and resource
// (resource/subresource; the request URI for non-resource requests). Each request counts once, whatever
// the number of its stages (a watch has ResponseStarted and ResponseComplete).
func readAudit(path string, from, to time.Time) (auditCounts, error) {
	f, err := os.Open(path)
	if err != nil {
		return auditCounts{}, fmt.Errorf("reading the audit log: %w", err)
	}
	defer func() { _ = f.Close() }() // read only
	seen := map[string]bool{}
	counts := map[[2]string]int{}
	var out auditCounts
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var ev auditEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			continue // a line cut by a write in progress
		}
		if ev.RequestReceived.Before(from) || !ev.RequestReceived.Before(to) || seen[ev.AuditID] {
			continue
		}
		seen[ev.AuditID] = true
		resource := ev.RequestURI
		if ev.ObjectRef != nil {
			resource = ev.ObjectRef.Resource
			if ev.ObjectRef.Subresource != "" {
				resource += "/" + ev.ObjectRef.Subresource
			}
		} else if i := strings.IndexByte(resource, '?'); i >= 0 {
			resource = resource[:i]
		}
		if resource == "leases" {
			out.LeaderElection++
			continue
		}
		counts[[2]string{ev.Verb, resource}]++
	}
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("reading the audit log: %w", err)
	}
	minutes := to.Sub(from).Minutes()
	for k, n := range counts {
		w := slices.Contains(writeVerbs, k[0])
		out.Requests = append(out.Requests, requestCount{Verb: k[0], Resource: k[1], Count: n, PerMin: float64(n) / minutes, Write: w})
		out.Total += n
		if w {
			out.Writes += n
		}
	}
	slices.SortFunc(out.Requests, func(a, b requestCount) int {
		if a.Count != b.Count {
			return b.Count - a.Count
		}
		return strings.Compare(a.Verb+" "+a.Resource, b.Verb+" "+b.Resource)
	})
	out.TotalPerMin = float64(out.Total) / minutes
	out.WritesPerMin = float64(out.Writes) / minutes
	out.LeaderElectionPerMin = float64(out.LeaderElection) / minutes
	return out, nil
}

// scrapeRESTRequests returns the manager's rest_client_requests_total summed by method (controller-
// runtime's client-go adapter labels it by code, host and method only: no resource).
func scrapeRESTRequests(ctx context.Context, metricsURL string) (out map[string]float64, err error) {
	err = scrapeMetrics(ctx, metricsURL, 10*time.Second, func(body io.Reader) error {
		out, err = parseRESTRequests(body)
		return err
	})
	return out, err
}

// scrapeMetrics GETs the manager's metrics within timeout and hands the body to read.
func scrapeMetrics(ctx context.Context, metricsURL string, timeout time.Duration, read func(io.Reader) error) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Timeout: timeout}).Do(req)
	if err != nil {
		return fmt.Errorf("scraping the manager's metrics: %w", err)
	}
	defer func() { _ = resp.Body.Close() }() // read only
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("scraping the manager's metrics: %s", resp.Status)
	}
	return read(resp.Body)
}

// metricLines calls each for every line of body that starts with prefix, with the rest of the line.
func metricLines(body io.Reader, prefix string, each func(rest string)) error {
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			each(rest)
		}
	}
	return sc.Err()
}

func parseRESTRequests(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	err := metricLines(r, "rest_client_requests_total{", func(rest string) {
		end := strings.LastIndexByte(rest, '}')
		if end < 0 {
			return
		}
		value, err := strconv.ParseFloat(strings.TrimSpace(rest[end+1:]), 64)
		if err != nil {
			return
		}
		out[labelValue(rest[:end], "method")] += value
	})
	return out, err
}

// labelValue returns the value of label in a Prometheus text-format label set (a="x",b="y"); the
// values of rest_client_requests_total hold no comma.
func labelValue(labels, label string) string {
	for part := range strings.SplitSeq(labels, ",") {
		if k, v, ok := strings.Cut(part, "="); ok && k == label {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

// leaderStatus reports whether the manager's metrics say it holds the leader-election lease.
func leaderStatus(ctx context.Context, metricsURL string) bool {
	leader := false
	_ = scrapeMetrics(ctx, metricsURL, 5*time.Second, func(body io.Reader) error { // not yet: false
		return metricLines(body, "leader_election_master_status{", func(rest string) {
			leader = leader || strings.HasSuffix(rest, " 1")
		})
	})
	return leader
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat (100 on every Linux ABI Go
// supports).
const clockTicks = 100

// cpuSeconds is the user and system CPU time pid has used so far.
func cpuSeconds(pid int) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	// Fields from the third on (state ppid pgrp ...): utime and stime are fields 14 and 15.
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	utime, err1 := strconv.ParseFloat(f[11], 64)
	stime, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad utime or stime", pid)
	}
	return (utime + stime) / clockTicks, nil
}

// rssMiB is pid's resident set size (VmRSS) and its anonymous part (RssAnon: heap, stacks, the Go
// runtime's own; the part that grows with what the manager holds, the rest being mostly the binary's
// pages), in MiB, from one read of /proc/<pid>/status.
func rssMiB(pid int) (rss, anon float64, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	if rss, err = statusMiB(pid, string(data), "VmRSS"); err != nil {
		return 0, 0, err
	}
	anon, err = statusMiB(pid, string(data), "RssAnon")
	return rss, anon, err
}

// statusMiB is field of pid's /proc/<pid>/status text, given there in kB, in MiB.
func statusMiB(pid int, status, field string) (float64, error) {
	for line := range strings.SplitSeq(status, "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/status: %s %q", pid, field, rest)
			}
			return kb / 1024, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no %s", pid, field)
}

// loadAvg is the machine's load average (1, 5 and 15 minutes) as /proc/loadavg gives it.
type loadAvg [3]float64

func readLoadAvg() loadAvg {
	var l loadAvg
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return l
	}
	f := strings.Fields(string(data))
	for i := 0; i < 3 && i < len(f); i++ {
		l[i], _ = strconv.ParseFloat(f[i], 64)
	}
	return l
}

func (l loadAvg) String() string { return fmt.Sprintf("%.2f %.2f %.2f", l[0], l[1], l[2]) }

// quantiles are p50, p99 and max of a sample.
type quantiles struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// quantilesOf computes nearest-rank quantiles; a zero value for an empty sample.
func quantilesOf(v []float64) quantiles {
	if len(v) == 0 {
		return quantiles{}
	}
	s := slices.Clone(v)
	slices.Sort(s)
	rank := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return s[max(0, min(i, len(s)-1))]
	}
	return quantiles{N: len(s), P50: rank(0.50), P99: rank(0.99), Max: s[len(s)-1]}
}

// processCPU is the CPU time used so far by this process (the harness: tracker, fake kubelet, clients)
// and by each of its live children (kube-apiserver, etcd, kube-controller-manager, managers), by
// command name, summed over processes of the same name. It shows where a window's CPU went, and so
// which process bounds it.
func processCPU() map[string]float64 {
	out := map[string]float64{}
	self := os.Getpid()
	for _, pid := range append([]int{self}, cluster.LiveChildren(self)...) {
		name := "harness"
		if pid != self {
			comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			if err != nil {
				continue // gone since the scan
			}
			name = strings.TrimSpace(string(comm))
		}
		if s, err := cpuSeconds(pid); err == nil {
			out[name] += s
		}
	}
	return out
}

// cpuSince is the CPU each process of now used since before (processes that started in between count
// from zero).
func cpuSince(before, now map[string]float64) map[string]float64 {
	out := make(map[string]float64, len(now))
	for name, s := range now {
		out[name] = s - before[name]
	}
	return out
}
