package main

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/kubervisor/kubervisor/test/cluster"
)

// RestartResult is what a restart of kube-apiserver in steady state cost (Config.RestartAPIServer), from the
// audit log, the tracker's watch, the detector's calls and the manager's log. Times are in seconds from the
// SIGKILL of kube-apiserver.
type RestartResult struct {
	// AwaySeconds is how long kube-apiserver was away: from its SIGKILL until the new one was healthy.
	AwaySeconds float64 `json:"awaySeconds"`
	// ReconnectSeconds is when the new API server first answered a request of the manager with success (it may
	// answer before the harness sees it healthy).
	ReconnectSeconds float64 `json:"reconnectSeconds"`
	// Watched are the resources the manager watched before the restart; ResyncSeconds is when the last of them
	// was watched again (a watch or a list answered 200), and Resynced how many were within the window.
	Watched       []string `json:"watched"`
	Resynced      int      `json:"resynced"`
	ResyncSeconds float64  `json:"resyncSeconds"`
	// LeaseRenewedSeconds is when the manager's leader-election Lease was first updated after the SIGKILL, and
	// LeaseGapSeconds how long it went without an update then (the manager exits past its renew deadline,
	// controller-runtime's 10s by default).
	LeaseRenewedSeconds float64 `json:"leaseRenewedSeconds"`
	LeaseGapSeconds     float64 `json:"leaseGapSeconds"`
	// Refused counts the manager's requests the API server refused (a status >= 300) after the restart, by
	// "verb resource code", e.g. 403 while its authorizer loads the roles.
	Refused map[string]int `json:"refused,omitempty"`
	// WindowSeconds is the window observed after the restart, from the SIGKILL; Requests are the manager's
	// requests over it (leader election apart), as in steady state.
	WindowSeconds float64     `json:"windowSeconds"`
	Requests      auditCounts `json:"requests"`
	// TrafficChanges counts the pods whose kubervisor/traffic label changed over the window (ejections and
	// restorations); none is expected: the detector's answers did not change.
	TrafficChanges int `json:"trafficChanges"`
	// Evaluations: the breakers that called the detector over the window and the longest interval between two
	// calls of one breaker (evaluations go on from the cache while the API server is away).
	Breakers    int     `json:"breakersCalled"`
	MaxInterval float64 `json:"maxIntervalSeconds"`
	// Panics counts the lines of the managers' logs since the restart that report a panic; Exited says that a
	// manager exited (e.g. it lost its leader-election lease).
	Panics int     `json:"panics"`
	Exited string  `json:"exited,omitempty"`
	Load   loadAvg `json:"load"`
}

// restartAPIServer restarts kube-apiserver (SIGKILL, then the same port, certificates and etcd) and observes
// the window that follows (Config.Steady): when the manager is answered again, when it watches again every
// resource it watched before, what it sends, what changes on the pods, whether it panics or exits.
func (b *bench) restartAPIServer(ctx context.Context) error {
	r := &RestartResult{Refused: map[string]int{}}
	b.res.Restart = r
	logFrom := make([]int, len(b.managers))
	for i, m := range b.managers {
		logFrom[i] = len(readLog(m.proc.LogPath()))
	}
	changes0 := b.trk.trafficChanges()
	killed := time.Now()
	b.logf("restarting kube-apiserver")
	away, err := b.cl.RestartAPIServer()
	if err != nil {
		return err
	}
	r.AwaySeconds = away.Seconds()
	b.logf("kube-apiserver healthy again after %s; observing the manager for %s", away.Round(time.Millisecond), b.cfg.Steady)
	end := killed.Add(b.cfg.Steady)
	for time.Now().Before(end) {
		if err := b.exited(); err != nil {
			r.Exited = err.Error()
			break
		}
		if err := sleep(ctx, min(time.Second, time.Until(end))); err != nil {
			return err
		}
	}
	stop := time.Now()
	r.Load = readLoadAvg()
	r.WindowSeconds = stop.Sub(killed).Seconds()
	r.TrafficChanges = b.trk.trafficChanges() - changes0
	var intervals []float64
	_, intervals, r.Breakers, _ = b.det.callStats(killed, stop)
	if len(intervals) > 0 {
		r.MaxInterval = slices.Max(intervals)
	}
	for i, m := range b.managers {
		r.Panics += panicLines(readLog(m.proc.LogPath())[logFrom[i]:])
	}
	time.Sleep(2 * time.Second) // the audit log is written as requests complete
	if r.Requests, err = readAudit(b.auditLogPath(), killed, stop); err != nil {
		return err
	}
	if err := b.reconnection(r, killed); err != nil {
		return err
	}
	b.logf("manager answered %.1fs and resynced %.1fs after the SIGKILL; %d writes, %d traffic changes, %d panics",
		r.ReconnectSeconds, r.ResyncSeconds, r.Requests.Writes, r.TrafficChanges, r.Panics)
	if r.Exited != "" {
		return fmt.Errorf("after the API server restart: %s", r.Exited)
	}
	return nil
}

// reconnection reads from the audit log when the manager was first answered after the restart, when it
// watched again each resource it watched before it, and what was refused.
func (b *bench) reconnection(r *RestartResult, killed time.Time) error {
	user := cluster.ManagerUser().Name
	entries, err := b.cl.Audited(func(e cluster.AuditEntry) bool { return e.User.Username == user && e.ObjectRef != nil })
	if err != nil {
		return err
	}
	watched := map[string]bool{}
	rewatched := map[string]time.Time{}
	var reconnected, renewedBefore, renewed time.Time
	for _, e := range entries {
		resource := e.ObjectRef.Resource
		leaseRenewal := resource == "leases" && e.Verb == "update" && e.Code() == 200
		if e.StageTimestamp.Before(killed) {
			if e.Verb == "watch" {
				watched[resource] = true
			}
			if leaseRenewal && e.StageTimestamp.After(renewedBefore) {
				renewedBefore = e.StageTimestamp
			}
			continue
		}
		if leaseRenewal && (renewed.IsZero() || e.StageTimestamp.Before(renewed)) {
			renewed = e.StageTimestamp
		}
		if e.Code() >= 300 {
			r.Refused[fmt.Sprintf("%s %s %d", e.Verb, resource, e.Code())]++
		}
		if e.Code() >= 300 || e.Code() == 0 {
			continue
		}
		if reconnected.IsZero() || e.StageTimestamp.Before(reconnected) {
			reconnected = e.StageTimestamp
		}
		if (e.Verb == "watch" || e.Verb == "list") && (rewatched[resource].IsZero() || e.StageTimestamp.Before(rewatched[resource])) {
			rewatched[resource] = e.StageTimestamp
		}
	}
	if !reconnected.IsZero() {
		r.ReconnectSeconds = reconnected.Sub(killed).Seconds()
	}
	if !renewed.IsZero() && !renewedBefore.IsZero() {
		r.LeaseRenewedSeconds, r.LeaseGapSeconds = renewed.Sub(killed).Seconds(), renewed.Sub(renewedBefore).Seconds()
	}
	for resource := range watched {
		r.Watched = append(r.Watched, resource)
		if at, ok := rewatched[resource]; ok {
			r.Resynced++
			r.ResyncSeconds = max(r.ResyncSeconds, at.Sub(killed).Seconds())
		}
	}
	slices.Sort(r.Watched)
	if r.Resynced < len(r.Watched) {
		b.warnf("the manager watched again %d of the %d resources it watched before the API server restart", r.Resynced, len(r.Watched))
	}
	return nil
}

// readLog is a log file's content, "" when it cannot be read (the figures built on it are best effort).
func readLog(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return string(data)
}

// panicLines counts the lines of log that report a panic (controller-runtime recovers one in a reconciler and
// logs it; an unrecovered one ends the process with its stack).
func panicLines(log string) int {
	n := 0
	for line := range strings.SplitSeq(log, "\n") {
		if strings.Contains(strings.ToLower(line), "panic") {
			n++
		}
	}
	return n
}

// restartTable is the report's lines for the API server restart.
func restartTable(r *RestartResult) string {
	if r == nil {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nkube-apiserver restarted in steady state (load avg %s):\n", r.Load)
	fmt.Fprintf(&b, "  away (SIGKILL to healthy): %.1f s\n", r.AwaySeconds)
	fmt.Fprintf(&b, "  manager answered again: %.1f s after the SIGKILL; watches of %d/%d resources (%s) re-established %.1f s after the SIGKILL\n",
		r.ReconnectSeconds, r.Resynced, len(r.Watched), strings.Join(r.Watched, ", "), r.ResyncSeconds)
	fmt.Fprintf(&b, "  leader-election Lease renewed %.1f s after the SIGKILL, %.1f s after its previous renewal\n",
		r.LeaseRenewedSeconds, r.LeaseGapSeconds)
	fmt.Fprintf(&b, "  over %.0f s from the SIGKILL: %d requests besides leader election, %d writes; %d leader-election requests\n",
		r.WindowSeconds, r.Requests.Total, r.Requests.Writes, r.Requests.LeaderElection)
	for _, q := range top(r.Requests.Requests, 8) {
		fmt.Fprintf(&b, "    %s %s: %d\n", q.Verb, q.Resource, q.Count)
	}
	for _, k := range slices.Sorted(maps.Keys(r.Refused)) {
		fmt.Fprintf(&b, "    refused: %s: %d\n", k, r.Refused[k])
	}
	fmt.Fprintf(&b, "  pods whose traffic label changed: %d; breakers evaluated: %d, longest interval between two evaluations %.1f s\n",
		r.TrafficChanges, r.Breakers, r.MaxInterval)
	fmt.Fprintf(&b, "  panics in the manager's log: %d", r.Panics)
	if r.Exited != "" {
		fmt.Fprintf(&b, "; EXITED: %s", r.Exited)
	}
	b.WriteString("\n")
	return b.String()
}
