// Command demo is `make demo`: Kubervisor live on a local cluster, as a user would see it.
//
// It starts the local cluster of test/cluster (etcd, kube-apiserver, kube-controller-manager, a fake
// kubelet restricted to the demo namespace), applies the CRD and the RBAC of config/default, creates
// a Deployment and a Service "pricer" in namespace demo, starts the demo fleet of test/fleet and a
// real Prometheus scraping it, creates a KubervisorService with a discreteValueOutOfList breaker, and
// starts the real manager binary (bin/manager) as the ServiceAccount of config/rbac. Then it injects
// faults on a script and shows, every two seconds, the KubervisorService's status, each pod's traffic
// label, retry count and EndpointSlice membership, and a log of what changed, taken from the
// manager's events.
//
// Ctrl-C (SIGINT or SIGTERM) stops every process and removes the temporary files. With --duration it
// stops by itself and exits 0 only if it saw an ejection and a restoration or a pause: the smoke test
// (demo_e2e_test.go) runs it that way.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/test/cluster"
	"github.com/kubervisor/kubervisor/test/fleet"
)

// The scripted faults, from the start of the live view.
const (
	firstFaultAfter  = 10 * time.Second
	secondFaultAfter = 25 * time.Second
	healAfterEject   = 3 * time.Second
	faultErrorRate   = 0.6
	refreshEvery     = 2 * time.Second
	logLinesShown    = 18
)

type config struct {
	duration time.Duration
	period   time.Duration
	quiet    bool
	noClear  bool
	keep     bool
	mode     string
}

func main() {
	var cfg config
	flag.DurationVar(&cfg.duration, "duration", 0,
		"stop after this long in the live view (0: until Ctrl-C); then exit 1 unless an ejection and a restoration or a pause were seen")
	flag.DurationVar(&cfg.period, "activator-period", defaultActivatorIn, "period of the retryAndPause activator")
	flag.BoolVar(&cfg.quiet, "quiet", false, "print the change log only, no status tables")
	flag.BoolVar(&cfg.noClear, "no-clear", false, "never clear the screen: print the status when it changes (the default when stdout is not a terminal)")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the work directory (kubeconfig, logs, Prometheus data) after stopping")
	flag.StringVar(&cfg.mode, "mode", string(kvv1.TrafficControlSelector), "how an ejection takes a pod out of traffic: "+
		"selector (the Service selects kubervisor/traffic=yes) or readinessGate (the pod condition kubervisor.io/in-traffic)")
	flag.Parse()
	if m := kvv1.TrafficControl(cfg.mode); m != kvv1.TrafficControlSelector && m != kvv1.TrafficControlReadinessGate {
		fmt.Fprintf(os.Stderr, "demo: --mode %q: want selector or readinessGate\n", cfg.mode)
		os.Exit(2)
	}
	os.Exit(run(cfg))
}

type demo struct {
	cfg     config
	out     io.Writer
	tty     bool
	root    string
	workDir string
	logFile *os.File

	cluster *cluster.Cluster
	fleet   *fleet.Fleet
	prom    *cluster.Prometheus
	kubectl string

	informers     informers.SharedInformerFactory
	stopInformers context.CancelFunc
	pods          corelisters.PodLister
	tracker       *tracker

	faultMu sync.Mutex // orders the script's fault changes and the poll that notices manual ones
}

func run(cfg config) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		cancel()
		for range sigs {
			fmt.Fprintln(os.Stderr, "Already stopping; the manager, Prometheus and the control plane are shutting down")
		}
	}()

	d := &demo{cfg: cfg, out: os.Stdout, tracker: newTracker()}
	if st, err := os.Stdout.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 && !cfg.noClear && !cfg.quiet {
		d.tty = true
	}
	err := d.setup(ctx)
	if err == nil {
		err = d.live(ctx)
	}
	summary, ok := d.tracker.Summary()
	stopErr := d.teardown()

	if stopErr != nil {
		fmt.Fprintf(os.Stderr, "demo: stopping: %v\n", stopErr)
	}
	switch {
	case err != nil && ctx.Err() != nil:
		d.printf("Interrupted during setup.\n")
		return 0
	case err != nil:
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		return 1
	case stopErr != nil:
		return 1
	}
	d.printf("\n%s", summary)
	if cfg.duration > 0 && !ok {
		fmt.Fprintf(os.Stderr, "demo: FAILED: no ejection followed by a restoration or a pause was seen in %s\n", cfg.duration)
		return 1
	}
	return 0
}

func (d *demo) printf(format string, args ...any) {
	_, _ = fmt.Fprintf(d.out, format, args...)
}

// step runs one setup step, printing what it does and how long it took.
func (d *demo) step(what string, fn func() error) error {
	start := time.Now()
	d.printf("==> %s ... ", what)
	if err := fn(); err != nil {
		d.printf("failed\n")
		return err
	}
	d.printf("%s\n", time.Since(start).Round(100*time.Millisecond))
	return nil
}

func (d *demo) setup(ctx context.Context) error {
	var err error
	if d.root, err = cluster.RepoRoot(); err != nil {
		return err
	}
	manager := filepath.Join(d.root, "bin", "manager")
	kustomize := filepath.Join(d.root, "bin", "kustomize")
	for _, bin := range []string{manager, kustomize} {
		if _, err := os.Stat(bin); err != nil {
			return fmt.Errorf("%s is missing: run `make demo` (it builds the manager and fetches the tools)", bin)
		}
	}
	if d.workDir, err = os.MkdirTemp("", "kubervisor-demo-"); err != nil {
		return err
	}
	// client-go and controller-runtime log to a file: the terminal is the demo's.
	if d.logFile, err = os.Create(filepath.Join(d.workDir, "demo.log")); err != nil {
		return err
	}
	logger := zap.New(zap.WriteTo(d.logFile), zap.UseDevMode(true))
	klog.SetLogger(logger)
	logf.SetLogger(logger)

	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := kvv1.AddToScheme(scheme); err != nil {
		return err
	}
	err = d.step("Starting the local cluster (etcd, kube-apiserver, kube-controller-manager, fake kubelet)", func() error {
		d.cluster, err = cluster.Start(ctx, cluster.Options{
			WorkDir: d.workDir,
			Scheme:  scheme,
			// NOTE: the fake kubelet keeps to the demo namespace, so that the manager Deployment of
			// config/default is never "run": the real binary runs as a process instead.
			Kubelet: cluster.KubeletOptions{Namespace: namespace},
			Log:     d.logFile,
		})
		return err
	})
	if err != nil {
		return err
	}
	d.kubectl = filepath.Join(d.cluster.AssetsDir(), "kubectl")
	if cwd, err := os.Getwd(); err == nil {
		if rel, err := filepath.Rel(cwd, d.kubectl); err == nil && !strings.HasPrefix(rel, "..") {
			d.kubectl = rel
		}
	}
	d.printf("    kubeconfig: %s\n", d.cluster.KubeconfigPath())

	if err := d.step("Applying the CRD and the RBAC of `kustomize build config/default`", func() error {
		cmd := exec.CommandContext(ctx, kustomize, "build", filepath.Join(d.root, "config", "default"))
		cmd.Stderr = d.logFile
		manifests, err := cmd.Output()
		if err != nil {
			return fmt.Errorf("kustomize build config/default: %w", err)
		}
		_, err = d.cluster.Apply(ctx, manifests, cluster.ApplyOptions{Kinds: cluster.RBACKinds})
		return err
	}); err != nil {
		return err
	}
	if err := d.step(fmt.Sprintf("Creating namespace %s, Deployment %s (%d pods) and Service %s", namespace, appName, replicas, appName),
		func() error { return d.createApp(ctx) }); err != nil {
		return err
	}
	if err := d.step("Starting the demo fleet and Prometheus", func() error { return d.startFleet(ctx) }); err != nil {
		return err
	}
	if err := d.step("Creating KubervisorService pricer and starting bin/manager as the ServiceAccount of config/rbac",
		func() error { return d.startManager(ctx, manager) }); err != nil {
		return err
	}
	if d.gateMode() {
		if err := d.step("Waiting for the gated pods to become Ready (the manager sets kubervisor.io/in-traffic True)",
			func() error { return d.fleet.WaitForPods(ctx, replicas, 60*time.Second) }); err != nil {
			return err
		}
	}
	return d.step("Waiting for the manager to adopt the pods and evaluate its breaker", func() error { return d.waitAdopted(ctx) })
}

func (d *demo) gateMode() bool {
	return kvv1.TrafficControl(d.cfg.mode) == kvv1.TrafficControlReadinessGate
}

func (d *demo) createApp(ctx context.Context) error {
	c := d.cluster.Client()
	for _, obj := range []client.Object{namespaceObject(), deployment(kvv1.TrafficControl(d.cfg.mode)), service(kvv1.TrafficControl(d.cfg.mode))} {
		if err := c.Create(ctx, obj); err != nil {
			return fmt.Errorf("creating %T %s: %w", obj, obj.GetName(), err)
		}
	}
	return nil
}

func (d *demo) startFleet(ctx context.Context) error {
	var err error
	d.fleet, err = fleet.Start(ctx, d.cluster.Clientset(), fleet.Options{
		Namespace: namespace, Deployment: appName, Service: appName, Kubelet: d.cluster.Kubelet(),
	})
	if err != nil {
		return err
	}
	// NOTE: in readinessGate mode the pods become Ready only once the manager sets their gate True: the
	// wait comes after the manager starts (the caveat docs/traffic-modes.md documents: a rollout waits for it).
	if !d.gateMode() {
		if err := d.fleet.WaitForPods(ctx, replicas, 60*time.Second); err != nil {
			return err
		}
	}
	d.prom, err = d.cluster.StartPrometheus(ctx, cluster.PrometheusOptions{
		Jobs: []cluster.ScrapeJob{{Name: "demo-fleet", Targets: []string{d.fleet.Addr()}}},
	})
	return err
}

func (d *demo) startManager(ctx context.Context, manager string) error {
	if err := d.cluster.Client().Create(ctx, kubervisorService(d.prom.Addr(), d.cfg.period, kvv1.TrafficControl(d.cfg.mode))); err != nil {
		return fmt.Errorf("creating KubervisorService %s/%s: %w", namespace, appName, err)
	}
	metricsAddr, err := cluster.FreeAddr()
	if err != nil {
		return err
	}
	probeAddr, err := cluster.FreeAddr()
	if err != nil {
		return err
	}
	if err := d.cluster.StartManager(manager, []string{
		"--metrics-bind-address=" + metricsAddr,
		"--metrics-secure=false",
		"--health-probe-bind-address=" + probeAddr,
		"--leader-elect",
		"--leader-election-namespace=" + cluster.ManagerNamespace,
	}); err != nil {
		return err
	}
	if err := cluster.WaitForHTTP(ctx, "http://"+probeAddr+"/readyz", 60*time.Second); err != nil {
		return fmt.Errorf("the manager is not ready: %w; end of its log:\n%s", err, tail(d.cluster.ManagerLog(), 3000))
	}
	return nil
}

// waitAdopted waits until every pod carries kubervisor/name and the breaker was evaluated, so that the
// scripted faults start from a supervised fleet.
func (d *demo) waitAdopted(ctx context.Context) error {
	c := d.cluster.Client()
	return wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		if !d.cluster.Manager().Running() {
			return false, fmt.Errorf("the manager exited: %v; end of its log:\n%s", d.cluster.Manager().Err(), tail(d.cluster.ManagerLog(), 3000))
		}
		var pods corev1.PodList
		if err := c.List(ctx, &pods, client.InNamespace(namespace), client.MatchingLabels{kvv1.LabelName: appName}); err != nil {
			return false, nil //nolint:nilerr // retried until the timeout
		}
		var kvs kvv1.KubervisorService
		if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: appName}, &kvs); err != nil {
			return false, nil //nolint:nilerr // retried until the timeout
		}
		return len(pods.Items) == replicas && meta.IsStatusConditionTrue(kvs.Status.Conditions, kvv1.ConditionReady), nil
	})
}

// watch starts the informers that feed the tracker: the pods, the Service's EndpointSlices and the
// events of the namespace.
func (d *demo) watch(ctx context.Context) error {
	ctx, d.stopInformers = context.WithCancel(ctx)
	d.informers = informers.NewSharedInformerFactoryWithOptions(d.cluster.Clientset(), 0, informers.WithNamespace(namespace))
	podInformer := d.informers.Core().V1().Pods()
	d.pods = podInformer.Lister()
	sliceInformer := d.informers.Discovery().V1().EndpointSlices()
	eventInformer := d.informers.Events().V1().Events()
	t := d.tracker
	slicesChanged := func(any) {
		list, _ := sliceInformer.Lister().EndpointSlices(namespace).List(labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: appName}))
		t.SlicesChanged(list)
	}
	handlers := []struct {
		informer cache.SharedIndexInformer
		h        cache.ResourceEventHandlerFuncs
	}{
		{podInformer.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { t.PodChanged(obj.(*corev1.Pod)) },
			UpdateFunc: func(_, obj any) { t.PodChanged(obj.(*corev1.Pod)) },
			DeleteFunc: func(obj any) {
				if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
					_, name, _ := cache.SplitMetaNamespaceKey(key)
					t.PodDeleted(name)
				}
			},
		}},
		{sliceInformer.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc: slicesChanged, UpdateFunc: func(_, obj any) { slicesChanged(obj) }, DeleteFunc: slicesChanged,
		}},
		{eventInformer.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { t.EventChanged(obj.(*eventsv1.Event)) },
			UpdateFunc: func(_, obj any) { t.EventChanged(obj.(*eventsv1.Event)) },
		}},
	}
	for _, h := range handlers {
		if _, err := h.informer.AddEventHandler(h.h); err != nil {
			return err
		}
	}
	d.informers.Start(ctx.Done())
	for typ, ok := range d.informers.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("syncing the cache of %v", typ)
		}
	}
	slicesChanged(nil)
	t.goLive()
	return nil
}

// live shows the demo until ctx is done or the duration is over, running the scripted faults.
func (d *demo) live(ctx context.Context) error {
	if err := d.watch(ctx); err != nil {
		return err
	}
	pods := d.fleet.Pods()
	if len(pods) < 2 {
		return fmt.Errorf("the fleet serves %d pods, want %d", len(pods), replicas)
	}
	first, second := pods[0].Name, pods[1].Name
	d.printf("%s", d.header(first, second))
	start := time.Now()
	go d.script(ctx, start, first, second)

	var deadline <-chan time.Time
	if d.cfg.duration > 0 {
		timer := time.NewTimer(d.cfg.duration)
		defer timer.Stop()
		deadline = timer.C
	}
	tick := time.NewTicker(refreshEvery)
	defer tick.Stop()
	lastState := ""
	for {
		d.pollFaults()
		d.tracker.Flush()
		s := d.takeSnapshot(ctx)
		switch {
		case d.tty:
			d.printf("\033[H\033[2J%s\n%s\nChanges:\n", d.header(first, second), d.render(s, true))
			for _, l := range d.tracker.Last(logLinesShown) {
				d.printf("  %s\n", l)
			}
		default:
			for _, l := range d.tracker.Take(time.Second) {
				d.printf("%s\n", l)
			}
			if state := d.render(s, false); !d.cfg.quiet && state != lastState {
				d.printf("---- %s\n%s", time.Now().Format("15:04:05"), state)
				lastState = state
			}
		}
		select {
		case <-ctx.Done():
			d.flushLines()
			return nil
		case <-deadline:
			d.flushLines()
			d.printf("---- %s: --duration %s is over\n", time.Now().Format("15:04:05"), d.cfg.duration)
			return nil
		case <-d.cluster.Manager().Done():
			d.flushLines()
			return fmt.Errorf("the manager exited (%v); end of its log:\n%s", d.cluster.Manager().Err(), tail(d.cluster.ManagerLog(), 3000))
		case <-tick.C:
		}
	}
}

// flushLines prints the change-log lines not printed yet (the screen shows them already on a terminal).
func (d *demo) flushLines() {
	if d.tty {
		return
	}
	for _, l := range d.tracker.Take(0) {
		d.printf("%s\n", l)
	}
}

func (d *demo) header(first, second string) string {
	var b strings.Builder
	kubeconfig := d.cluster.KubeconfigPath()
	fmt.Fprintf(&b, "Kubervisor demo: namespace %s, Deployment and Service %s (%d pods), KubervisorService %s\n", namespace, appName, replicas, appName)
	fmt.Fprintf(&b, "  kubeconfig: %s\n", kubeconfig)
	fmt.Fprintf(&b, "  watch:      %s --kubeconfig %s get kvs -n %s -w\n", d.kubectl, kubeconfig, namespace)
	fmt.Fprintf(&b, "  script:     +%s %s fails %.0f%% of its requests; +%s %s too, healed %s after its ejection;\n",
		firstFaultAfter, first, faultErrorRate*100, secondFaultAfter, second, healAfterEject)
	fmt.Fprintf(&b, "              %s keeps failing: restored after %s, then %s (period x retry count), ejected again each time, then paused\n",
		first, d.cfg.period, 2*d.cfg.period)
	fmt.Fprintf(&b, "  faults:     curl -XPOST '%s/fault?pod=NAME&errors=0.8'   heal: curl -XPOST '%s/heal?pod=NAME' (or /heal for all)\n",
		d.fleet.URL(), d.fleet.URL())
	fmt.Fprintf(&b, "  logs:       manager %s\n", d.cluster.LogPath("manager"))
	fmt.Fprintf(&b, "              Prometheus %s (UI %s)\n", d.prom.LogPath(), d.prom.URL())
	fmt.Fprintf(&b, "              kube-controller-manager, control plane, demo: %s/*.log\n", d.workDir)
	keep := "removes it"
	if d.cfg.keep {
		keep = "keeps it (--keep)"
	}
	fmt.Fprintf(&b, "  Ctrl-C stops everything and %s\n", keep)
	return b.String()
}

// script injects the faults: one pod fails for good (retried, then paused), a second one fails and is
// healed once ejected (it comes back and stays).
func (d *demo) script(ctx context.Context, start time.Time, first, second string) {
	if !sleepUntil(ctx, start.Add(firstFaultAfter)) {
		return
	}
	d.inject(first)
	if !sleepUntil(ctx, start.Add(secondFaultAfter)) {
		return
	}
	d.inject(second)
	for d.tracker.Traffic(second) != kvv1.TrafficNo {
		if !sleepUntil(ctx, time.Now().Add(200*time.Millisecond)) {
			return
		}
	}
	if !sleepUntil(ctx, time.Now().Add(healAfterEject)) {
		return
	}
	d.faultMu.Lock()
	defer d.faultMu.Unlock()
	if err := d.fleet.Heal(second); err != nil {
		d.tracker.Log("script: healing %s: %v", second, err)
		return
	}
	d.tracker.FaultHealed(second)
	d.tracker.Log("script: %s healed; it comes back when its activator restores it, and stays", second)
}

func (d *demo) inject(pod string) {
	d.faultMu.Lock()
	defer d.faultMu.Unlock()
	if err := d.fleet.SetErrorRate(pod, faultErrorRate); err != nil {
		d.tracker.Log("script: injecting a fault on %s: %v", pod, err)
		return
	}
	d.tracker.FaultInjected(pod, time.Now())
	d.tracker.Log("script: %s now answers %.0f%% of its requests with HTTP 500", pod, faultErrorRate*100)
}

// pollFaults notices the faults injected and healed by hand (curl to the fleet).
func (d *demo) pollFaults() {
	d.faultMu.Lock()
	defer d.faultMu.Unlock()
	for _, p := range d.fleet.Pods() {
		faulty := p.ErrorRate > 0 || p.Deviation != 1
		switch known := d.tracker.HasFault(p.Name); {
		case faulty && !known:
			d.tracker.FaultInjected(p.Name, time.Now())
			d.tracker.Log("%s has a fault injected by hand: %s", p.Name, fault(p))
		case !faulty && known:
			d.tracker.FaultHealed(p.Name)
			d.tracker.Log("%s healed by hand", p.Name)
		}
	}
}

// teardown stops everything the demo started, in reverse order, and checks that no child process
// survived.
func (d *demo) teardown() error {
	var errs []error
	if d.cluster != nil || d.workDir != "" {
		d.printf("\n==> Stopping the manager, Prometheus, the fleet, kube-controller-manager, kube-apiserver and etcd ... ")
	}
	start := time.Now()
	if d.stopInformers != nil {
		d.stopInformers()
		d.informers.Shutdown()
	}
	if d.fleet != nil {
		d.fleet.Stop()
	}
	if d.cluster != nil {
		if err := d.cluster.Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	if d.logFile != nil {
		_ = d.logFile.Close() // the log is removed with the work directory, or kept as is
	}
	if d.workDir != "" {
		if d.cfg.keep {
			d.printf("%s; kept %s\n", time.Since(start).Round(100*time.Millisecond), d.workDir)
		} else if err := os.RemoveAll(d.workDir); err != nil {
			errs = append(errs, err)
		} else {
			d.printf("%s; removed %s\n", time.Since(start).Round(100*time.Millisecond), d.workDir)
		}
	}
	if left := cluster.LiveChildren(os.Getpid()); len(left) > 0 {
		errs = append(errs, fmt.Errorf("child processes %v survived", left))
	}
	return errors.Join(errs...)
}

func sleepUntil(ctx context.Context, at time.Time) bool {
	t := time.NewTimer(time.Until(at))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}
