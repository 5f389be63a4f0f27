package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
)

// ScrapeJob is one scrape job of the generated Prometheus configuration.
type ScrapeJob struct {
	// Name is the job name (the `job` label).
	Name string
	// Targets are host:port addresses, e.g. a demo fleet's Addr().
	Targets []string
	// MetricsPath defaults to /metrics.
	MetricsPath string
	// Files, instead of Targets, are file_sd_configs files (JSON lists of {"targets": [...], "labels": {...}})
	// that Prometheus reads again whenever they change: the real node's pods, whose addresses are known once
	// they run (Debian's Prometheus has no Kubernetes service discovery). The harness does not wait for them.
	Files []string
}

// PrometheusOptions configures a Prometheus child process.
type PrometheusOptions struct {
	// Binary is the prometheus executable; default what test/cluster/ensure-prometheus.sh prints
	// (bin/prometheus, else /usr/bin/prometheus, else it installs Debian's package).
	Binary string
	// Jobs are scraped from the start.
	Jobs []ScrapeJob
	// RuleFiles are loaded from the start (rule_files:), evaluated every EvaluationInterval.
	RuleFiles []string
	// ScrapeInterval and EvaluationInterval default to 1s.
	ScrapeInterval, EvaluationInterval time.Duration
	// Port on Host; default a free one. It is kept across restarts.
	Port int
	// Host is the address Prometheus listens on; default 127.0.0.1 (the real node's pods reach this host
	// on the bridge's address instead).
	Host string
	// Dir holds the configuration, the TSDB (kept across restarts) and the log; default a new
	// temporary directory, which Stop does not remove (the Cluster removes its own work directory).
	Dir string
	// ExtraArgs are added to prometheus's command line.
	ExtraArgs []string
	// StartTimeout bounds the wait for /-/ready and for every target to be up; default 60s.
	StartTimeout time.Duration
	// StopGracePeriod is how long Prometheus has to exit after SIGTERM; default 30s.
	StopGracePeriod time.Duration
	// Log receives progress lines; default none.
	Log io.Writer

	// WebConfig, when set, is the content of a web configuration file (TLS, basic auth: Prometheus's
	// --web.config.file), written beside prometheus.yml and passed to Prometheus. Files it names should
	// be absolute paths.
	WebConfig string
	// Scheme is how the harness reaches Prometheus: "http" (default), or "https" for a WebConfig with a
	// tls_server_config.
	Scheme string
	// Client sends the harness's requests to Prometheus (readiness, targets, API): with WebConfig, one
	// that trusts the server's certificate and presents the credentials it requires. Default a plain
	// client.
	Client *http.Client
}

// Prometheus is a Prometheus server running as a child process on 127.0.0.1, with a configuration the
// harness writes. It can be stopped and started again on the same port and data directory.
type Prometheus struct {
	opts PrometheusOptions

	mu        sync.Mutex
	proc      *Process
	jobs      []ScrapeJob
	ruleFiles []string
}

// StartPrometheus writes the configuration for opts.Jobs, starts Prometheus and waits until it is
// ready and every target is up.
func StartPrometheus(ctx context.Context, opts PrometheusOptions) (*Prometheus, error) {
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	if opts.ScrapeInterval <= 0 {
		opts.ScrapeInterval = time.Second
	}
	if opts.EvaluationInterval <= 0 {
		opts.EvaluationInterval = time.Second
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 60 * time.Second
	}
	if opts.StopGracePeriod <= 0 {
		opts.StopGracePeriod = 30 * time.Second
	}
	if opts.Scheme == "" {
		opts.Scheme = "http"
	}
	if opts.Binary == "" {
		bin, err := EnsurePrometheus(ctx)
		if err != nil {
			return nil, err
		}
		opts.Binary = bin
	}
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if opts.Port == 0 {
		port, err := FreePort()
		if err != nil {
			return nil, err
		}
		opts.Port = port
	}
	if opts.Dir == "" {
		dir, err := os.MkdirTemp("", "kubervisor-prometheus-")
		if err != nil {
			return nil, err
		}
		opts.Dir = dir
	}
	if err := os.MkdirAll(filepath.Join(opts.Dir, "data"), 0o755); err != nil {
		return nil, fmt.Errorf("creating the Prometheus data directory: %w", err)
	}
	p := &Prometheus{opts: opts, jobs: opts.Jobs, ruleFiles: opts.RuleFiles}
	if err := p.Start(ctx); err != nil {
		return nil, err
	}
	return p, nil
}

// EnsurePrometheus runs test/cluster/ensure-prometheus.sh of the repository and returns the path it
// prints.
func EnsurePrometheus(ctx context.Context) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, filepath.Join(root, "test", "cluster", "ensure-prometheus.sh"))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("obtaining a prometheus binary (test/cluster/ensure-prometheus.sh): %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// Start starts Prometheus (again, after Stop) on the same port and data directory, and waits until it
// is ready and every target is up. It does nothing if Prometheus runs.
func (p *Prometheus) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc != nil && p.proc.Running() {
		return nil
	}
	if err := p.writeConfig(); err != nil {
		return err
	}
	args := []string{
		"--config.file=" + p.configPath(),
		"--storage.tsdb.path=" + filepath.Join(p.opts.Dir, "data"),
		"--storage.tsdb.retention.time=6h",
		"--web.listen-address=" + p.Addr(),
		"--log.level=info",
	}
	if p.opts.WebConfig != "" {
		web := filepath.Join(p.opts.Dir, "web.yml")
		if err := os.WriteFile(web, []byte(p.opts.WebConfig), 0o600); err != nil {
			return fmt.Errorf("writing the Prometheus web configuration: %w", err)
		}
		args = append(args, "--web.config.file="+web)
	}
	args = slices.Concat(args, p.opts.ExtraArgs)
	_, _ = fmt.Fprintf(p.opts.Log, "prometheus: starting on %s\n", p.Addr()) // progress lines are best effort
	proc, err := StartProcess("prometheus", p.opts.Binary, args, p.LogPath(), nil)
	if err != nil {
		return err
	}
	p.proc = proc
	if err := p.waitUp(ctx, p.jobs); err != nil {
		_ = proc.Stop(p.opts.StopGracePeriod)
		return fmt.Errorf("starting Prometheus: %w; end of its log:\n%s", err, logTail(p.LogPath()))
	}
	if len(p.ruleFiles) > 0 {
		return p.waitRules(ctx, p.ruleFiles)
	}
	return nil
}

// Stop stops Prometheus (SIGTERM, then SIGKILL after the grace period); its data is kept.
func (p *Prometheus) Stop() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc == nil {
		return nil
	}
	return p.proc.Stop(p.opts.StopGracePeriod)
}

// Kill kills Prometheus with SIGKILL, as a crash would.
func (p *Prometheus) Kill() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc == nil {
		return nil
	}
	return p.proc.Kill()
}

// Running reports whether the Prometheus process runs.
func (p *Prometheus) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.proc != nil && p.proc.Running()
}

// Process is the current Prometheus process.
func (p *Prometheus) Process() *Process {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.proc
}

// SetJobs replaces the scrape jobs: it rewrites the configuration, makes a running Prometheus reload
// it (SIGHUP) and waits until every target is up.
func (p *Prometheus) SetJobs(ctx context.Context, jobs []ScrapeJob) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.jobs = jobs
	return p.reload(ctx)
}

// SetRuleFiles replaces the rule files: it rewrites the configuration, makes a running Prometheus
// reload it (SIGHUP) and waits until its rules API lists a group of every file.
func (p *Prometheus) SetRuleFiles(ctx context.Context, files []string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ruleFiles = files
	if err := p.reload(ctx); err != nil {
		return err
	}
	return p.waitRules(ctx, files)
}

// reload rewrites the configuration and, if Prometheus runs, makes it reload and waits for the targets.
func (p *Prometheus) reload(ctx context.Context) error {
	if err := p.writeConfig(); err != nil {
		return err
	}
	if p.proc == nil || !p.proc.Running() {
		return nil
	}
	if err := syscall.Kill(p.proc.Pid(), syscall.SIGHUP); err != nil {
		return fmt.Errorf("reloading Prometheus: %w", err)
	}
	return p.waitUp(ctx, p.jobs)
}

// waitRules waits until the rules API names every file as the file of a loaded group (a file Prometheus
// refused to load is in its log, not in the API).
func (p *Prometheus) waitRules(ctx context.Context, files []string) error {
	ctx, cancel := context.WithTimeout(ctx, p.opts.StartTimeout)
	defer cancel()
	for {
		rules, err := p.API().Rules(ctx, nil)
		loaded := map[string]bool{}
		if err == nil {
			for _, g := range rules.Groups {
				loaded[g.File] = true
			}
		}
		missing := slices.DeleteFunc(slices.Clone(files), func(f string) bool { return loaded[f] })
		if err == nil && len(missing) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for Prometheus to load rule files %v (last error: %v); end of its log:\n%s", missing, err, logTail(p.LogPath()))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Addr is host:port of Prometheus, the form a breaker's prometheusService takes.
func (p *Prometheus) Addr() string { return net.JoinHostPort(p.opts.Host, strconv.Itoa(p.opts.Port)) }

// URL is the base URL of Prometheus (https:// with PrometheusOptions.Scheme "https").
func (p *Prometheus) URL() string { return p.opts.Scheme + "://" + p.Addr() }

// Client is the HTTP client of the harness's requests to Prometheus (PrometheusOptions.Client, else a
// plain one).
func (p *Prometheus) Client() *http.Client {
	if p.opts.Client != nil {
		return p.opts.Client
	}
	return &http.Client{Timeout: 2 * time.Second}
}

// API is a client of Prometheus's HTTP API, through Client.
func (p *Prometheus) API() promv1.API {
	c, err := promapi.NewClient(promapi.Config{Address: p.URL(), Client: p.opts.Client})
	if err != nil {
		panic(err) // only an unparsable address fails, and Addr is always valid
	}
	return promv1.NewAPI(c)
}

// Dir is the directory of the configuration, the TSDB and the log.
func (p *Prometheus) Dir() string { return p.opts.Dir }

// LogPath is the file receiving Prometheus's output (all runs).
func (p *Prometheus) LogPath() string { return filepath.Join(p.opts.Dir, "prometheus.log") }

func (p *Prometheus) configPath() string { return filepath.Join(p.opts.Dir, "prometheus.yml") }

func (p *Prometheus) writeConfig() error {
	var b strings.Builder
	fmt.Fprintf(&b, "global:\n  scrape_interval: %s\n  scrape_timeout: %s\n  evaluation_interval: %s\n",
		promDuration(p.opts.ScrapeInterval), promDuration(p.opts.ScrapeInterval), promDuration(p.opts.EvaluationInterval))
	if len(p.ruleFiles) > 0 {
		b.WriteString("rule_files:\n")
		for _, f := range p.ruleFiles {
			fmt.Fprintf(&b, "- %s\n", strconv.Quote(f))
		}
	}
	b.WriteString("scrape_configs:\n")
	for _, j := range p.jobs {
		path := j.MetricsPath
		if path == "" {
			path = "/metrics"
		}
		fmt.Fprintf(&b, "- job_name: %s\n  metrics_path: %s\n", strconv.Quote(j.Name), strconv.Quote(path))
		if len(j.Files) > 0 {
			fmt.Fprintf(&b, "  file_sd_configs:\n  - refresh_interval: 1s\n    files: [%s]\n", quoted(j.Files))
		} else {
			fmt.Fprintf(&b, "  static_configs:\n  - targets: [%s]\n", quoted(j.Targets))
		}
	}
	if err := os.WriteFile(p.configPath(), []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("writing the Prometheus configuration: %w", err)
	}
	return nil
}

// quoted renders strings as the items of a YAML flow sequence.
func quoted(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}

// promDuration renders d in Prometheus's duration syntax (integer units only).
func promDuration(d time.Duration) string {
	if d%time.Second == 0 {
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	}
	return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
}

// waitUp waits for /-/ready, then for every target of jobs to be scraped successfully.
func (p *Prometheus) waitUp(ctx context.Context, jobs []ScrapeJob) error {
	ctx, cancel := context.WithTimeout(ctx, p.opts.StartTimeout)
	defer cancel()
	if err := p.waitReady(ctx); err != nil {
		return err
	}
	api := p.API()
	want := map[string]bool{}
	for _, j := range jobs {
		for _, t := range j.Targets {
			want[j.Name+" "+t] = true
		}
	}
	var missing []string
	for {
		if !p.proc.Running() {
			return fmt.Errorf("prometheus exited: %v", p.proc.Err())
		}
		missing = missing[:0]
		res, err := api.Targets(ctx)
		if err == nil {
			up := map[string]bool{}
			for _, t := range res.Active {
				if t.Health == promv1.HealthGood {
					up[t.ScrapePool+" "+string(t.Labels["instance"])] = true
				}
			}
			for k := range want {
				if !up[k] {
					missing = append(missing, k)
				}
			}
			if len(missing) == 0 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = fmt.Errorf("targets not up: %v", missing)
			}
			return fmt.Errorf("waiting for Prometheus's targets: %w", errors.Join(ctx.Err(), err))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// waitReady polls /-/ready (through Client when set) until it answers 200.
func (p *Prometheus) waitReady(ctx context.Context) error {
	if p.opts.Client == nil {
		return WaitForHTTP(ctx, p.URL()+"/-/ready", p.opts.StartTimeout)
	}
	return waitForHTTP(ctx, p.opts.Client, p.URL()+"/-/ready", p.opts.StartTimeout)
}

// StartPrometheus starts a Prometheus whose data and log are in the cluster's work directory and
// that Stop stops; see the package-level StartPrometheus. Only one per cluster.
func (c *Cluster) StartPrometheus(ctx context.Context, opts PrometheusOptions) (*Prometheus, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.prometheus != nil {
		return nil, errors.New("the cluster already has a Prometheus; use its Start, Stop and SetJobs")
	}
	if opts.Dir == "" {
		opts.Dir = filepath.Join(c.workDir, "prometheus")
	}
	if opts.Log == nil {
		opts.Log = c.opts.Log
	}
	p, err := StartPrometheus(ctx, opts)
	if err != nil {
		return nil, err
	}
	c.prometheus = p
	return p, nil
}

// Prometheus is the cluster's Prometheus, nil before StartPrometheus.
func (c *Cluster) Prometheus() *Prometheus {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.prometheus
}
