package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/test/cluster"
)

// namespace holds every Service, pod and KubervisorService of the benchmark.
const namespace = "bench"

// Config is one benchmark run.
type Config struct {
	// Pods are split evenly over KVS groups of one Service and one KubervisorService each.
	Pods, KVS int
	// Period is every breaker's evaluationPeriod.
	Period time.Duration
	// Latency is how long the loopback detector takes to answer.
	Latency time.Duration
	// AnomalyRate is the share of groups whose detector names one pod (at least one group when > 0).
	AnomalyRate float64
	// Steady is how long the steady state is measured.
	Steady time.Duration
	// Settle is the pause between the last ejection and the steady window; default 2 periods + 5s.
	Settle time.Duration
	// Shards, when > 1, runs that many managers, each with its own --kubervisorservice-selector and
	// leader-election Lease; group g's KubervisorService is labelled kubervisor.io/shard=s<g%Shards>.
	// CPU, RSS and requests are then the sums over the managers.
	Shards int
	// Unsupervised pods are created in namespace bench-other, selected by no Service and never made
	// Running (the fake kubelet serves the bench namespace only): what a manager's pod cache holds
	// besides the supervised pods.
	Unsupervised int
	// Workers, when > 0, is passed as --max-concurrent-reconciles.
	Workers int
	// ManagerArgs are added to the manager's command line as they are.
	ManagerArgs []string
	// Manager is the manager binary; default <repo>/bin/manager, built when missing.
	Manager string
	// Timeout bounds each wait (pods running, adoption, ejections); default 10m.
	Timeout time.Duration
	// CPUProfile and AllocProfile, when set, are where a CPU profile and an allocation profile of the
	// (first) manager over the steady window are written (from its --pprof-bind-address; read them with
	// `go tool pprof bin/manager FILE`).
	CPUProfile, AllocProfile string
	// HeapProfile, when set, is where a heap profile of the (first) manager is written at the end of the
	// steady window, after a garbage collection (what it holds, by allocation site).
	HeapProfile string
	// AdoptionCPUProfile, when set, is where a CPU profile of the (first) manager over adoption is
	// written (from the creation of the KubervisorServices, for the adoption time of an earlier run:
	// AdoptionProfileSeconds).
	AdoptionCPUProfile     string
	AdoptionProfileSeconds int
	// APIServerAdoptionCPUProfile, when set, is where a CPU profile of kube-apiserver over adoption is
	// written (as long as AdoptionProfileSeconds): where the writes of adoption spend the control plane.
	APIServerAdoptionCPUProfile string
	// RestartAPIServer restarts kube-apiserver after the steady window and observes the Steady window that
	// follows (RestartResult).
	RestartAPIServer bool
	// KeepWorkDir keeps the work directory (audit log, manager log, kubeconfigs).
	KeepWorkDir bool
	// Log receives progress lines; default none.
	Log io.Writer
}

// appLabel is the label the bench Services select their pods by.
const appLabel = "app"

func (c *Config) complete() error {
	if c.Log == nil {
		c.Log = io.Discard
	}
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Minute
	}
	if c.Settle <= 0 {
		c.Settle = 2*c.Period + 5*time.Second
	}
	switch {
	case c.KVS < 1 || c.Pods < c.KVS:
		return fmt.Errorf("want at least one KubervisorService and one pod per KubervisorService (pods %d, kvs %d)", c.Pods, c.KVS)
	case c.Period <= 0 || c.Steady <= 0 || c.Latency < 0:
		return errors.New("period and steady must be positive, latency not negative")
	case c.AnomalyRate < 0 || c.AnomalyRate > 1:
		return fmt.Errorf("anomaly rate %v is not in [0, 1]", c.AnomalyRate)
	}
	return nil
}

// Result holds every figure of a run; durations are in seconds unless the name says otherwise.
type Result struct {
	Pods          int      `json:"pods"`
	Unsupervised  int      `json:"unsupervisedPods,omitempty"`
	KVS           int      `json:"kvs"`
	Period        string   `json:"period"`
	Latency       string   `json:"latency"`
	AnomalyGroups int      `json:"anomalyGroups"`
	ManagerArgs   []string `json:"managerArgs"`
	WorkDir       string   `json:"workDir,omitempty"`
	Warnings      []string `json:"warnings,omitempty"`

	Adoption AdoptionResult `json:"adoption"`
	Reaction ReactionResult `json:"reaction"`
	Steady   SteadyResult   `json:"steady"`
	Shards   []ShardResult  `json:"shards,omitempty"`
	Restart  *RestartResult `json:"restart,omitempty"`
}

// AdoptionResult is the time from the creation of the KubervisorServices until every pod carries
// kubervisor/name and every KubervisorService was Ready=True.
type AdoptionResult struct {
	Seconds       float64 `json:"seconds"`
	CreateSeconds float64 `json:"createSeconds"`
	PodsNamed     int     `json:"podsNamed"`
	KVSReady      int     `json:"kvsReady"`
	CPUSeconds    float64 `json:"cpuSeconds"`
	// ProcessCPU is the CPU seconds of each process of the run over the adoption (by command name; the
	// harness is this process: tracker, fake kubelet, clients).
	ProcessCPU map[string]float64 `json:"processCPUSeconds"`
	Requests   auditCounts        `json:"requests"`
	Load       loadAvg            `json:"load"`
}

// ReactionResult is the time from the detector's first answer naming a pod until a watch saw the
// pod's kubervisor/traffic=no, in milliseconds.
type ReactionResult struct {
	Ms       quantiles `json:"ms"`
	Ejected  int       `json:"ejected"`
	Expected int       `json:"expected"`
	Load     loadAvg   `json:"load"`
}

// SteadyResult are the figures of the steady window.
type SteadyResult struct {
	Seconds  float64     `json:"seconds"`
	Requests auditCounts `json:"requests"`
	// RESTPerMin is the manager's rest_client_requests_total by method, per minute (leases included).
	RESTPerMin map[string]float64 `json:"restPerMin"`
	CPUPerMin  float64            `json:"cpuSecondsPerMin"`
	RSSMiBMax  float64            `json:"rssMiBMax"`
	RSSMiBEnd  float64            `json:"rssMiBEnd"`
	// RSSAnonMiBEnd is the anonymous part of RSSMiBEnd (heap, stacks, runtime), the rest being file pages.
	RSSAnonMiBEnd float64   `json:"rssAnonMiBEnd"`
	Interval      quantiles `json:"intervalSeconds"`
	Lateness      quantiles `json:"latenessSeconds"`
	LateShare     float64   `json:"lateShare"`
	Calls         int       `json:"calls"`
	CallsPerSec   float64   `json:"callsPerSec"`
	ExpectedRate  float64   `json:"expectedCallsPerSec"`
	Breakers      int       `json:"breakersCalled"`
	BadCalls      int       `json:"badCalls"`
	Load          loadAvg   `json:"load"`
}

type bench struct {
	cfg      Config
	res      *Result
	root     string
	workDir  string
	cl       *cluster.Cluster
	c        client.Client
	det      *detector
	trk      *tracker
	stopTrk  context.CancelFunc
	managers []*managerProc
	pprof    string // the first manager's pprof address, when a profile is asked for
	sizes    []int  // pods per group
}

// Run runs one benchmark: it starts the local cluster (from $KUBEBUILDER_ASSETS) with the API server
// auditing the manager's identity, creates the pods, Services and KubervisorServices, runs the
// manager binary under the RBAC of config/default, and measures. Everything it started is stopped
// before it returns.
func Run(ctx context.Context, cfg Config) (res *Result, err error) {
	if err := cfg.complete(); err != nil {
		return nil, err
	}
	b := &bench{cfg: cfg, res: &Result{
		Pods: cfg.Pods, Unsupervised: cfg.Unsupervised, KVS: cfg.KVS, Period: cfg.Period.String(), Latency: cfg.Latency.String(),
		ManagerArgs: cfg.ManagerArgs,
	}}
	for g := range cfg.KVS {
		b.sizes = append(b.sizes, cfg.Pods/cfg.KVS+boolInt(g < cfg.Pods%cfg.KVS))
	}
	if b.root, err = cluster.RepoRoot(); err != nil {
		return nil, err
	}
	if err := b.ensureManager(ctx); err != nil {
		return nil, err
	}
	if b.workDir, err = os.MkdirTemp("", "kubervisor-bench-scale-"); err != nil {
		return nil, err
	}
	if cfg.KeepWorkDir {
		b.res.WorkDir = b.workDir
	} else {
		defer func() { _ = os.RemoveAll(b.workDir) }() // a temporary directory: nothing to lose
	}
	defer func() {
		// NOTE: the watches of the tracker go first: the API server waits for open watches when it stops.
		if b.stopTrk != nil {
			b.stopTrk()
		}
		if b.det != nil {
			b.det.close()
		}
		for _, m := range b.managers[min(1, len(b.managers)):] { // the first is the harness's: cl.Stop stops it
			if stopErr := m.proc.Stop(10 * time.Second); stopErr != nil && err == nil {
				err = stopErr
			}
		}
		if b.cl != nil {
			if stopErr := b.cl.Stop(); stopErr != nil && err == nil {
				err = stopErr
			}
		}
	}()
	if err := b.startCluster(ctx); err != nil {
		return nil, err
	}
	if err := b.createFleet(ctx); err != nil {
		return nil, err
	}
	if err := b.startManagers(ctx); err != nil {
		return nil, err
	}
	if err := b.adopt(ctx); err != nil {
		return b.res, err
	}
	if err := b.react(ctx); err != nil {
		return b.res, err
	}
	b.logf("settling for %s", cfg.Settle)
	if err := sleep(ctx, cfg.Settle); err != nil {
		return b.res, err
	}
	if err := b.steady(ctx); err != nil {
		return b.res, err
	}
	if b.res.Shards, err = b.shardResults(ctx); err != nil {
		return b.res, err
	}
	if cfg.RestartAPIServer {
		err = b.restartAPIServer(ctx)
	}
	return b.res, err
}

func (b *bench) logf(format string, args ...any) {
	_, _ = fmt.Fprintf(b.cfg.Log, "bench-scale: "+format+"\n", args...) // progress lines are best effort
}

func (b *bench) warnf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	b.res.Warnings = append(b.res.Warnings, msg)
	b.logf("WARNING: %s", msg)
}

// ensureManager builds <repo>/bin/manager when no manager binary is given and it is missing.
func (b *bench) ensureManager(ctx context.Context) error {
	if b.cfg.Manager == "" {
		b.cfg.Manager = filepath.Join(b.root, "bin", "manager")
	}
	if _, err := os.Stat(b.cfg.Manager); err == nil {
		return nil
	}
	b.logf("building %s", b.cfg.Manager)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", b.cfg.Manager, "./cmd/")
	cmd.Dir = b.root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build -o %s ./cmd/: %w\n%s", b.cfg.Manager, err, out)
	}
	return nil
}

func (b *bench) auditLogPath() string { return filepath.Join(b.workDir, "audit.log") }

func (b *bench) startCluster(ctx context.Context) error {
	user := cluster.ManagerUser()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := kvv1.AddToScheme(scheme); err != nil {
		return err
	}
	b.logf("starting the local cluster (work directory %s)", b.workDir)
	var err error
	b.cl, err = cluster.Start(ctx, cluster.Options{
		WorkDir: b.workDir,
		Scheme:  scheme,
		// NOTE: nothing here needs EndpointSlices, but the harness proves kube-controller-manager works
		// with its EndpointSlice controller: that one controller runs, and nothing else (no Deployment,
		// ReplicaSet or garbage collector to compete with the manager for the two cores).
		Controllers: []string{"endpointslice-controller"},
		// The audit log is the work directory's audit.log (auditLogPath), which Cluster.Audited reads too.
		AuditPolicy: auditPolicy(user.Name),
		Kubelet:     cluster.KubeletOptions{Namespace: namespace, Workers: 16},
		ManagerUser: &user,
		Log:         b.cfg.Log,
	})
	if err != nil {
		return err
	}
	b.c = b.cl.Client()
	out, err := exec.CommandContext(ctx, filepath.Join(b.root, "bin", "kustomize"), "build", filepath.Join(b.root, "config", "default")).Output()
	if err != nil {
		return fmt.Errorf("kustomize build config/default (make bench-scale installs bin/kustomize): %w", err)
	}
	if _, err := b.cl.Apply(ctx, out, cluster.ApplyOptions{Kinds: cluster.RBACKinds}); err != nil {
		return err
	}
	if err := b.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}); err != nil {
		return err
	}
	if b.det, err = startDetector(b.cfg.Latency); err != nil {
		return err
	}
	var trkCtx context.Context
	trkCtx, b.stopTrk = context.WithCancel(ctx)
	b.trk, err = startTracker(trkCtx, b.cl.Config(), scheme)
	return err
}

func groupName(g int) string                 { return fmt.Sprintf("svc-%04d", g) }
func podName(g, i int) string                { return fmt.Sprintf("svc-%04d-%d", g, i) }
func groupKey(g int) string                  { return namespace + "/" + groupName(g) }
func boolInt(v bool) int                     { return map[bool]int{true: 1}[v] }
func intstrPtr(s string) *intstr.IntOrString { v := intstr.FromString(s); return &v }

// createFleet creates the Services and the bare pods, and waits until the fake kubelet made every
// pod Running and Ready.
func (b *bench) createFleet(ctx context.Context) error {
	start := time.Now()
	b.logf("creating %d Services and %d pods", b.cfg.KVS, b.cfg.Pods)
	err := parallel(ctx, 16, b.cfg.KVS, func(ctx context.Context, g int) error {
		return b.c.Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: groupName(g)},
			Spec: corev1.ServiceSpec{
				Selector: map[string]string{appLabel: groupName(g), kvv1.LabelTraffic: kvv1.TrafficYes},
				Ports:    []corev1.ServicePort{{Name: "http", Port: 80}},
			},
		})
	})
	if err != nil {
		return err
	}
	type podRef struct{ g, i int }
	var refs []podRef
	for g, n := range b.sizes {
		for i := range n {
			refs = append(refs, podRef{g, i})
		}
	}
	err = parallel(ctx, 48, len(refs), func(ctx context.Context, k int) error {
		r := refs[k]
		return b.c.Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: podName(r.g, r.i), Labels: map[string]string{
				appLabel: groupName(r.g), kvv1.LabelTraffic: kvv1.TrafficYes,
			}},
			// NOTE: created on the Node already, so the fake kubelet writes only the status (no binding).
			Spec: corev1.PodSpec{
				NodeName:                      b.cl.NodeName(),
				Containers:                    []corev1.Container{{Name: "app", Image: "bench:1"}},
				TerminationGracePeriodSeconds: new(int64),
			},
		})
	})
	if err != nil {
		return err
	}
	if err := b.createUnsupervised(ctx); err != nil {
		return err
	}
	b.logf("created in %s; waiting for every pod to be Running and Ready", time.Since(start).Round(100*time.Millisecond))
	if err := b.waitFor(ctx, "every pod Running and Ready", func() (bool, string) {
		n := b.trk.counts().ready
		return n >= b.cfg.Pods, fmt.Sprintf("%d/%d pods ready", n, b.cfg.Pods)
	}, false); err != nil {
		return err
	}
	b.logf("%d pods Running and Ready %s after the first was created", b.cfg.Pods, time.Since(start).Round(100*time.Millisecond))
	return nil
}

// startManager starts manager i (the harness's manager for the first, a process of its own with the
// same identity for the other shards) with leader election and metrics over HTTP, and waits until it is
// ready and holds its lease.
func (b *bench) startManager(ctx context.Context, i int, shard string, extra []string) (*managerProc, error) {
	var addrs [2]string // metrics, probes
	for i := range addrs {
		var err error
		if addrs[i], err = cluster.FreeAddr(); err != nil {
			return nil, err
		}
	}
	metricsAddr, probeAddr := addrs[0], addrs[1]
	args := []string{
		"--metrics-bind-address=" + metricsAddr, "--metrics-secure=false", "--health-probe-bind-address=" + probeAddr,
		"--leader-elect", "--leader-election-namespace=" + cluster.ManagerNamespace,
	}
	if b.cfg.Workers > 0 {
		args = append(args, "--max-concurrent-reconciles="+strconv.Itoa(b.cfg.Workers))
	}
	if b.profiling() && i == 0 {
		var err error
		if b.pprof, err = cluster.FreeAddr(); err != nil {
			return nil, err
		}
		args = append(args, "--pprof-bind-address="+b.pprof)
	}
	args = append(append(args, extra...), b.cfg.ManagerArgs...)
	if i == 0 {
		b.res.ManagerArgs = args
	}
	m := &managerProc{shard: shard, metrics: "http://" + metricsAddr + "/metrics"}
	b.logf("starting %s %v", b.cfg.Manager, args)
	if i == 0 {
		if err := b.cl.StartManager(b.cfg.Manager, args); err != nil {
			return nil, err
		}
		m.proc = b.cl.Manager()
	} else {
		kubeconfig := b.cl.ManagerKubeconfigPath()
		var err error
		m.proc, err = cluster.StartProcess("manager-"+shard, b.cfg.Manager, append(args, "--kubeconfig="+kubeconfig),
			b.cl.LogPath("manager-"+shard), []string{"KUBECONFIG=" + kubeconfig})
		if err != nil {
			return nil, err
		}
	}
	b.managers = append(b.managers, m)
	if err := cluster.WaitForHTTP(ctx, "http://"+probeAddr+"/readyz", time.Minute); err != nil {
		log, _ := os.ReadFile(m.proc.LogPath()) // best effort: the wait's error is the one to report
		return nil, fmt.Errorf("the manager is not ready: %w\n%s", err, logTail(string(log)))
	}
	return m, b.waitFor(ctx, "the manager to hold the leader-election lease", func() (bool, string) {
		return leaderStatus(ctx, m.metrics), "not leader yet"
	}, true)
}

// kvs is the KubervisorService of group g: one customService breaker asking the loopback detector, a
// floor low enough that one ejection per group is allowed, and an activator period long enough that
// ejected pods stay out for the whole run.
func (b *bench) kvs(g int) *kvv1.KubervisorService {
	floor := int32(min(1, b.sizes[g]-1))
	var labels map[string]string
	if b.cfg.Shards > 1 {
		labels = map[string]string{shardLabel: b.shardName(g)}
	}
	return &kvv1.KubervisorService{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: groupName(g), Labels: labels},
		Spec: kvv1.KubervisorServiceSpec{
			Service: groupName(g),
			Breakers: []kvv1.BreakerStrategy{{
				Name:                  "custom",
				EvaluationPeriod:      intstrPtr(b.cfg.Period.String()),
				MinPodsAvailableCount: &floor,
				MaxAnomalousPercent:   new(int32(100)),
				CustomService:         &kvv1.CustomService{URL: b.det.URL()},
			}},
			DefaultActivator: &kvv1.ActivatorStrategy{Mode: kvv1.ActivatorModePeriodic, Period: intstrPtr("1h")},
		},
	}
}

// adopt creates the KubervisorServices and waits until every pod is named and every
// KubervisorService was Ready.
func (b *bench) adopt(ctx context.Context) error {
	cpu0, _ := b.managersCPU()
	procs0 := processCPU()
	start := time.Now()
	path := fmt.Sprintf("profile?seconds=%d", b.cfg.AdoptionProfileSeconds)
	defer b.startProfiles(
		profileJob{b.cfg.AdoptionCPUProfile, func(file string) error { return b.profile(ctx, path, file, "adoption") }},
		profileJob{b.cfg.APIServerAdoptionCPUProfile, func(file string) error { return b.apiServerProfile(ctx, path, file, "adoption") }},
	)()
	b.logf("creating %d KubervisorServices", b.cfg.KVS)
	if err := parallel(ctx, 16, b.cfg.KVS, func(ctx context.Context, g int) error { return b.c.Create(ctx, b.kvs(g)) }); err != nil {
		return err
	}
	a := &b.res.Adoption
	a.CreateSeconds = time.Since(start).Seconds()
	err := b.waitFor(ctx, "adoption (every pod labelled kubervisor/name, every KubervisorService Ready)", func() (bool, string) {
		c := b.trk.counts()
		return c.named >= b.cfg.Pods && c.kvsReady >= b.cfg.KVS,
			fmt.Sprintf("%d/%d pods named, %d/%d KubervisorServices Ready", c.named, b.cfg.Pods, c.kvsReady, b.cfg.KVS)
	}, true)
	cpu1, _ := b.managersCPU()
	a.ProcessCPU = cpuSince(procs0, processCPU())
	a.Load = readLoadAvg()
	c := b.trk.counts()
	a.PodsNamed, a.KVSReady = c.named, c.kvsReady
	a.CPUSeconds = cpu1 - cpu0
	end := c.lastAdoption
	if err != nil {
		if !errors.Is(err, errTimeout) {
			return err
		}
		b.warnf("adoption incomplete after %s: %d/%d pods named, %d/%d KubervisorServices Ready", b.cfg.Timeout, c.named, b.cfg.Pods, c.kvsReady, b.cfg.KVS)
		end = time.Now()
	}
	a.Seconds = end.Sub(start).Seconds()
	time.Sleep(time.Second) // the audit log is written as requests complete
	a.Requests, err = readAudit(b.auditLogPath(), start, end)
	if err != nil {
		return err
	}
	b.logf("adopted in %.1fs (%.1f CPU s, %d requests, %d writes)", a.Seconds, a.CPUSeconds, a.Requests.Total, a.Requests.Writes)
	return nil
}

// react makes the detector name one pod in a share of the groups and measures how long after its
// answer each pod was seen out of traffic.
func (b *bench) react(ctx context.Context) error {
	n := int(math.Round(b.cfg.AnomalyRate * float64(b.cfg.KVS)))
	if n == 0 && b.cfg.AnomalyRate > 0 {
		n = 1
	}
	anomalies := map[string]string{}
	pods := map[string]string{} // pod -> group key
	for i := range n {
		g := i * b.cfg.KVS / n
		anomalies[groupKey(g)] = podName(g, 0)
		pods[podName(g, 0)] = groupKey(g)
	}
	r := &b.res.Reaction
	r.Expected = n
	b.res.AnomalyGroups = n
	if n == 0 {
		return nil
	}
	b.logf("the detector names one pod in %d groups", n)
	b.det.flag(anomalies)
	err := b.waitFor(ctx, "the flagged pods out of traffic", func() (bool, string) {
		got := b.trk.ejectedOf(pods)
		return len(got) >= n, fmt.Sprintf("%d/%d flagged pods out of traffic", len(got), n)
	}, true)
	if err != nil && !errors.Is(err, errTimeout) {
		return err
	}
	r.Load = readLoadAvg()
	var ms []float64
	for pod, at := range b.trk.ejectedOf(pods) {
		if named, ok := b.det.firstNamedAt(pods[pod]); ok {
			ms = append(ms, float64(at.Sub(named).Microseconds())/1000)
		}
	}
	r.Ejected, r.Ms = len(ms), quantilesOf(ms)
	if r.Ejected < n {
		b.warnf("only %d of %d flagged pods were seen out of traffic", r.Ejected, n)
	}
	b.logf("reaction p50 %.0fms, max %.0fms", r.Ms.P50, r.Ms.Max)
	return nil
}

// steady measures requests, CPU, RSS and the evaluations' timing over the steady window.
func (b *bench) steady(ctx context.Context) error {
	s := &b.res.Steady
	rest0, err := b.managersREST(ctx)
	if err != nil {
		return err
	}
	cpu0, err := b.managersCPU()
	if err != nil {
		return err
	}
	start := time.Now()
	end := start.Add(b.cfg.Steady)
	b.logf("measuring the steady state for %s", b.cfg.Steady)
	steadyProfile := func(kind string) func(file string) error {
		path := fmt.Sprintf("%s?seconds=%d", kind, int(b.cfg.Steady.Seconds()))
		return func(file string) error { return b.profile(ctx, path, file, "the steady window") }
	}
	waitProfiles := b.startProfiles(profileJob{b.cfg.CPUProfile, steadyProfile("profile")}, profileJob{b.cfg.AllocProfile, steadyProfile("allocs")})
	for now := time.Now(); now.Before(end); now = time.Now() {
		if rss, anon, err := b.managersRSS(); err == nil {
			s.RSSMiBMax = max(s.RSSMiBMax, rss)
			s.RSSMiBEnd, s.RSSAnonMiBEnd = rss, anon
		}
		if err := b.exited(); err != nil {
			return err
		}
		if err := sleep(ctx, min(time.Second, time.Until(end))); err != nil {
			return err
		}
	}
	stop := time.Now()
	cpu1, err := b.managersCPU()
	if err != nil {
		return err
	}
	waitProfiles()
	if b.cfg.HeapProfile != "" {
		if err := b.profile(ctx, "heap?gc=1", b.cfg.HeapProfile, "the end of the steady window"); err != nil {
			b.warnf("profile: %v", err)
		}
	}
	rest1, err := b.managersREST(ctx)
	if err != nil {
		return err
	}
	s.Load = readLoadAvg()
	window := stop.Sub(start)
	s.Seconds = window.Seconds()
	s.CPUPerMin = (cpu1 - cpu0) / window.Minutes()
	s.RESTPerMin = map[string]float64{}
	for method, v := range rest1 {
		if d := v - rest0[method]; d > 0 {
			s.RESTPerMin[method] = d / window.Minutes()
		}
	}
	var intervals []float64
	s.Calls, intervals, s.Breakers, s.BadCalls = b.det.callStats(start, stop)
	s.CallsPerSec = float64(s.Calls) / window.Seconds()
	s.ExpectedRate = float64(b.cfg.KVS) / b.cfg.Period.Seconds()
	s.Interval = quantilesOf(intervals)
	lateness := make([]float64, len(intervals))
	late := 0
	for i, v := range intervals {
		lateness[i] = v - b.cfg.Period.Seconds()
		if lateness[i] > 1 {
			late++
		}
	}
	s.Lateness = quantilesOf(lateness)
	if len(intervals) > 0 {
		s.LateShare = float64(late) / float64(len(intervals))
	}
	time.Sleep(2 * time.Second) // the audit log is written as requests complete
	s.Requests, err = readAudit(b.auditLogPath(), start, stop)
	return err
}

// errTimeout is returned by waitFor when Config.Timeout passed.
var errTimeout = errors.New("timed out")

// waitFor polls done every 200ms until it holds, Config.Timeout passes (errTimeout) or, when
// manager, the manager exits.
func (b *bench) waitFor(ctx context.Context, what string, done func() (bool, string), manager bool) error {
	deadline := time.Now().Add(b.cfg.Timeout)
	lastLog := time.Now()
	for {
		ok, progress := done()
		if ok {
			return nil
		}
		if manager {
			if err := b.exited(); err != nil {
				return fmt.Errorf("waiting for %s: %w", what, err)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("waiting for %s (%s): %w", what, progress, errTimeout)
		}
		if time.Since(lastLog) >= 10*time.Second {
			b.logf("waiting for %s: %s", what, progress)
			lastLog = time.Now()
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// parallel runs fn(0..n-1) on workers goroutines; objects that already exist are not an error. It
// returns the first error.
func parallel(ctx context.Context, workers, n int, fn func(context.Context, int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	next := make(chan int)
	var once sync.Once
	var first error
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				if err := fn(ctx, i); err != nil && !apierrors.IsAlreadyExists(err) {
					once.Do(func() { first = err; cancel() })
				}
			}
		})
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

// logTail is the end of a log, for an error message.
func logTail(log string) string {
	const n = 3000
	if len(log) > n {
		return log[len(log)-n:]
	}
	return log
}

// profiling reports whether a profile of the first manager is asked for (it then serves pprof).
func (b *bench) profiling() bool {
	return b.cfg.CPUProfile != "" || b.cfg.AllocProfile != "" || b.cfg.HeapProfile != "" || b.cfg.AdoptionCPUProfile != ""
}

// profile fetches the manager's pprof profile at path (e.g. "profile?seconds=60", "heap?gc=1") into file;
// what names the window it covers, for the log.
func (b *bench) profile(ctx context.Context, path, file, what string) error {
	return b.fetchProfile(ctx, http.DefaultClient, fmt.Sprintf("http://%s/debug/pprof/%s", b.pprof, path), file, what)
}

// apiServerProfile fetches kube-apiserver's pprof profile at path (as the administrator) into file.
func (b *bench) apiServerProfile(ctx context.Context, path, file, what string) error {
	cfg := b.cl.Config()
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return err
	}
	return b.fetchProfile(ctx, hc, strings.TrimSuffix(cfg.Host, "/")+"/debug/pprof/"+path, file, "kube-apiserver, "+what)
}

// profileJob is a profile to fetch in the background into file (none when file is empty).
type profileJob struct {
	file  string
	fetch func(file string) error
}

// startProfiles fetches the jobs' profiles in the background; the function it returns waits for them
// and warns of those that failed.
func (b *bench) startProfiles(jobs ...profileJob) (wait func()) {
	done := make(chan error, len(jobs))
	for _, j := range jobs {
		if j.file == "" {
			done <- nil
			continue
		}
		go func() { done <- j.fetch(j.file) }()
	}
	return func() {
		for range jobs {
			if err := <-done; err != nil {
				b.warnf("profile: %v", err)
			}
		}
	}
}

func (b *bench) fetchProfile(ctx context.Context, hc *http.Client, url, file, what string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }() // read to the end below
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		_ = f.Close() // the copy's error is the one to report
		return err
	}
	b.logf("profile of %s in %s", what, file)
	return f.Close()
}

// otherNamespace holds the unsupervised pods.
const otherNamespace = "bench-other"

// createUnsupervised creates Config.Unsupervised pods that no Service selects, in otherNamespace, shaped
// like a ReplicaSet's pods in a real cluster: an owner reference, the annotations a mesh and a rollout
// restart leave, and a status with conditions and IPs (written by the benchmark: no kubelet serves this
// namespace).
func (b *bench) createUnsupervised(ctx context.Context) error {
	if b.cfg.Unsupervised <= 0 {
		return nil
	}
	b.logf("creating %d unsupervised pods in namespace %s", b.cfg.Unsupervised, otherNamespace)
	if err := b.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: otherNamespace}}); err != nil {
		return err
	}
	now := metav1.Now()
	return parallel(ctx, 48, b.cfg.Unsupervised, func(ctx context.Context, i int) error {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: otherNamespace, Name: fmt.Sprintf("other-5d8c7f9b6d-%05d", i), Labels: map[string]string{
				appLabel: "other", "pod-template-hash": "5d8c7f9b6d", "app.kubernetes.io/part-of": "shop",
			}, Annotations: map[string]string{
				"kubectl.kubernetes.io/restartedAt": "2026-11-30T10:00:00Z",
				"sidecar.istio.io/status": `{"initContainers":["istio-init"],"containers":["istio-proxy"],` +
					`"volumes":["workload-socket","credential-socket","workload-certs","istio-envoy","istio-data","istio-podinfo","istio-token","istiod-ca-cert"],` +
					`"imagePullSecrets":null,"revision":"default"}`,
				"prometheus.io/scrape": "true", "prometheus.io/port": "15020", "prometheus.io/path": "/stats/prometheus",
			}, OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "other-5d8c7f9b6d",
				UID: "6f1c2b8e-3d4a-4f5b-9c6d-7e8f9a0b1c2d", Controller: new(true), BlockOwnerDeletion: new(true)}}},
			Spec: corev1.PodSpec{
				NodeName:                      b.cl.NodeName(),
				Containers:                    []corev1.Container{{Name: "main", Image: "registry.example/other:1.0"}},
				TerminationGracePeriodSeconds: new(int64),
			},
		}
		if err := b.c.Create(ctx, pod); err != nil {
			return err
		}
		pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.1.0.1", PodIPs: []corev1.PodIP{{IP: "10.1.0.1"}},
			HostIP: "10.0.0.1", StartTime: &now, QOSClass: corev1.PodQOSBestEffort}
		conds := []corev1.PodConditionType{"PodReadyToStartContainers", corev1.PodInitialized, corev1.PodReady, corev1.ContainersReady, corev1.PodScheduled}
		for _, t := range conds {
			pod.Status.Conditions = append(pod.Status.Conditions, corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: now})
		}
		pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "main", Ready: true, Started: new(true), Image: "registry.example/other:1.0",
			ImageID:     "registry.example/other@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
			ContainerID: "containerd://0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
			State:       corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}}}
		return b.c.Status().Update(ctx, pod)
	})
}
