package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/kubervisor/kubervisor/test/cluster"
)

// shardLabel is the label that assigns a KubervisorService to a shard when Config.Shards > 1.
const shardLabel = "kubervisor.io/shard"

// shardName is the value of shardLabel for group g.
func (b *bench) shardName(g int) string { return fmt.Sprintf("s%d", g%b.cfg.Shards) }

// managerProc is one manager process of the run: the only one, or one shard.
type managerProc struct {
	shard   string // "" without shards
	proc    *cluster.Process
	metrics string // its /metrics URL
}

// ShardResult is what one shard's manager evaluated, read from its own metrics after the steady window.
type ShardResult struct {
	Selector string `json:"selector"`
	// Evaluated are the KubervisorServices with a kubervisor_breaker_last_evaluation_timestamp_seconds
	// series on this manager; Foreign those of them that belong to another shard; Missing the shard's
	// own that have none.
	Evaluated int `json:"evaluated"`
	Foreign   int `json:"foreign"`
	Missing   int `json:"missing"`
}

// startManagers starts the manager, or one manager per shard (each with its own selector and
// leader-election Lease), and waits until each is ready and holds its lease.
func (b *bench) startManagers(ctx context.Context) error {
	shards := []string{""}
	if b.cfg.Shards > 1 {
		shards = make([]string, 0, b.cfg.Shards)
		for s := range b.cfg.Shards {
			shards = append(shards, b.shardName(s))
		}
	}
	for i, shard := range shards {
		var extra []string
		if shard != "" {
			extra = []string{"--kubervisorservice-selector=" + shardLabel + "=" + shard, "--leader-election-id=kubervisor-shard-" + shard}
		}
		if _, err := b.startManager(ctx, i, shard, extra); err != nil {
			return err
		}
	}
	return nil
}

// managersCPU is the CPU seconds every manager of the run used so far.
func (b *bench) managersCPU() (float64, error) { return b.sumOverManagers(cpuSeconds) }

// managersRSS is the resident memory of every manager of the run and its anonymous part, summed.
func (b *bench) managersRSS() (rss, anon float64, err error) {
	for _, m := range b.managers {
		r, a, err := rssMiB(m.proc.Pid())
		if err != nil {
			return 0, 0, err
		}
		rss, anon = rss+r, anon+a
	}
	return rss, anon, nil
}

// sumOverManagers sums a /proc figure of every manager process.
func (b *bench) sumOverManagers(figure func(pid int) (float64, error)) (float64, error) {
	var sum float64
	for _, m := range b.managers {
		v, err := figure(m.proc.Pid())
		if err != nil {
			return 0, err
		}
		sum += v
	}
	return sum, nil
}

// managersREST sums rest_client_requests_total by method over every manager.
func (b *bench) managersREST(ctx context.Context) (map[string]float64, error) {
	out := map[string]float64{}
	for _, m := range b.managers {
		r, err := scrapeRESTRequests(ctx, m.metrics)
		if err != nil {
			return nil, err
		}
		for k, v := range r {
			out[k] += v
		}
	}
	return out, nil
}

// exited returns an error naming the first manager that is not running, with the end of its log.
func (b *bench) exited() error {
	for _, m := range b.managers {
		if m.proc.Running() {
			continue
		}
		log, _ := os.ReadFile(m.proc.LogPath()) // best effort: the exit is the error
		return fmt.Errorf("the manager %q exited: %v\n%s", m.shard, m.proc.Err(), logTail(string(log)))
	}
	return nil
}

// shardResults reads from each shard's metrics which KubervisorServices it evaluated.
func (b *bench) shardResults(ctx context.Context) ([]ShardResult, error) {
	if b.cfg.Shards <= 1 {
		return nil, nil
	}
	var out []ShardResult
	for _, m := range b.managers {
		names, err := evaluatedKVS(ctx, m.metrics)
		if err != nil {
			return nil, err
		}
		r := ShardResult{Selector: shardLabel + "=" + m.shard, Evaluated: len(names)}
		for g := range b.cfg.KVS {
			mine := b.shardName(g) == m.shard
			_, evaluated := names[groupName(g)]
			switch {
			case evaluated && !mine:
				r.Foreign++
			case !evaluated && mine:
				r.Missing++
			}
		}
		out = append(out, r)
	}
	return out, nil
}

// evaluatedKVS returns the KubervisorServices of the bench namespace that have a last-evaluation series
// in the manager's metrics.
func evaluatedKVS(ctx context.Context, metricsURL string) (map[string]struct{}, error) {
	out := map[string]struct{}{}
	err := scrapeMetrics(ctx, metricsURL, 10*time.Second, func(body io.Reader) error {
		return metricLines(body, "kubervisor_breaker_last_evaluation_timestamp_seconds{", func(rest string) {
			labels := rest[:max(0, strings.LastIndexByte(rest, '}'))]
			if labelValue(labels, "namespace") == namespace {
				out[labelValue(labels, "kubervisorservice")] = struct{}{}
			}
		})
	})
	return out, err
}

// shardTable is the report's lines for the shards.
func shardTable(rs []ShardResult) string {
	var b strings.Builder
	for _, r := range rs {
		fmt.Fprintf(&b, "shard %s: %d KubervisorServices evaluated, %d of another shard, %d of its own missing\n",
			r.Selector, r.Evaluated, r.Foreign, r.Missing)
	}
	return b.String()
}
