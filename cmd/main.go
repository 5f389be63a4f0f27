// Command manager runs Kubervisor's controllers: the breaker loop, Service ownership and the activator.
package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"os"
	"time"

	// Import all Kubernetes client auth plugins (e.g. Azure, GCP, OIDC, etc.)
	// to ensure that exec-entrypoint and run can make use of them.
	_ "k8s.io/client-go/plugin/pkg/client/auth"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/controller"
	"github.com/kubervisor/kubervisor/internal/endpoints"
	"github.com/kubervisor/kubervisor/internal/logging"
	"github.com/kubervisor/kubervisor/internal/memlimit"
	"github.com/kubervisor/kubervisor/internal/metricsauth"
	// +kubebuilder:scaffold:imports
)

var (
	scheme   = runtime.NewScheme()
	setupLog = ctrl.Log.WithName("setup")
)

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(kvv1.AddToScheme(scheme))
	// +kubebuilder:scaffold:scheme
}

func main() {
	var metricsAddr, probeAddr, pprofAddr, watchNamespace, leaderElectionNamespace, leaderElectionID string
	var enableLeaderElection, secureMetrics, enableHTTP2 bool
	var workers, evaluations int
	var kvsSelector, podSelector, endpointsFile string
	var qps float64
	var burst int
	var leaseDuration, renewDeadline, retryPeriod time.Duration
	flag.StringVar(&metricsAddr, "metrics-bind-address", "0", "The address the metrics endpoint binds to. "+
		"Use :8443 for HTTPS or :8080 for HTTP, or leave as 0 to disable the metrics service.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "The address the probe endpoint binds to.")
	flag.StringVar(&pprofAddr, "pprof-bind-address", "", "The address Go's pprof profiles are served on "+
		"(e.g. 127.0.0.1:6060; unauthenticated, bind it to loopback). Empty disables them.")
	flag.BoolVar(&enableLeaderElection, "leader-elect", true,
		"Leader election: one replica is active, the others wait on the Lease and take over when it goes "+
			"(highly available by default). --leader-elect=false runs without a Lease: never with two replicas.")
	flag.StringVar(&leaderElectionNamespace, "leader-election-namespace", "",
		"Namespace of the leader election Lease; empty means the namespace the manager runs in.")
	flag.BoolVar(&secureMetrics, "metrics-secure", true,
		"If set, the metrics endpoint is served securely via HTTPS, behind authentication and authorization.")
	flag.BoolVar(&enableHTTP2, "enable-http2", false,
		"If set, HTTP/2 will be enabled for the metrics server")
	flag.StringVar(&watchNamespace, "watch-namespace", "",
		"Restrict the cache, and so Kubervisor, to one namespace (namespaced install). Empty watches all namespaces.")
	flag.IntVar(&workers, "max-concurrent-reconciles", 4, "Workers of the Service and Pod controllers.")
	flag.IntVar(&evaluations, "max-concurrent-evaluations", controller.DefaultMaxConcurrentEvaluations,
		"Workers of the KubervisorService controller: breaker passes, and so detector queries, in flight at once.")
	// NOTE: the manager writes nothing in steady state (SPEC §9); the limit binds when it adopts a fleet,
	// one patch per pod: 10,000 pods in 30 s need more than 333 writes a second (docs/scaling.md). The API
	// server's priority and fairness queues what its share cannot take.
	flag.Float64Var(&qps, "kube-api-qps", 500, "Requests per second the manager sends to the API server at most, on average, per resource.")
	flag.IntVar(&burst, "kube-api-burst", 1000, "Requests the manager may send to the API server in a burst, per resource.")
	flag.StringVar(&kvsSelector, "kubervisorservice-selector", "",
		"A label selector: this manager supervises only the KubervisorServices it selects (a shard; run one manager per shard, "+
			"each with its own --leader-election-id). Empty supervises all.")
	flag.StringVar(&podSelector, "pod-selector", "",
		"A label selector: the manager caches, and so sees and supervises, only the pods it selects (e.g. kubervisor/traffic, "+
			"which every supervised pod carries once adopted, when the pod templates carry it too). Memory then grows with these "+
			"pods only; pods outside it are never adopted. Empty caches every pod (the others as small stubs).")
	flag.StringVar(&leaderElectionID, "leader-election-id", "kubervisor.breaker.kubervisor.io",
		"Name of the leader election Lease; give each shard its own.")
	// NOTE: the defaults are client-go's. A leader that cannot renew within the renew deadline exits (and its
	// Pod restarts); an API server away for longer than that, a restart under load, costs the leader one
	// restart and the standby takes over. A longer deadline rides out longer outages and delays a takeover
	// after a crash by as much (docs/deploying.md).
	flag.DurationVar(&leaseDuration, "leader-elect-lease-duration", 15*time.Second,
		"How long a standby waits, after the last renewal it saw, before it takes the leader election Lease.")
	flag.DurationVar(&renewDeadline, "leader-elect-renew-deadline", 10*time.Second,
		"How long the leader keeps trying to renew the Lease before it gives up leadership and exits; less than the lease duration.")
	flag.DurationVar(&retryPeriod, "leader-elect-retry-period", 2*time.Second,
		"How often the candidates try to take or renew the Lease.")
	flag.StringVar(&endpointsFile, "detector-endpoints", "",
		"File of named detector endpoints (URL, TLS, credentials, headers: docs/detector-endpoints.md), re-read when it "+
			"changes; a file that does not exist defines none. Empty: no named endpoints.")
	opts := zap.Options{Development: false}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()

	// Lazy: a reconcile that logs nothing does not encode its logger's values (internal/logging).
	ctrl.SetLogger(logging.Lazy(zap.New(zap.UseFlagOptions(&opts))))
	shardSelector, err := labels.Parse(kvsSelector)
	if err != nil {
		setupLog.Error(err, "Invalid --kubervisorservice-selector", "selector", kvsSelector)
		os.Exit(1)
	}
	if err := checkLeaderElection(leaseDuration, renewDeadline, retryPeriod); err != nil {
		setupLog.Error(err, "Invalid leader election timings",
			"leaseDuration", leaseDuration, "renewDeadline", renewDeadline, "retryPeriod", retryPeriod)
		os.Exit(1)
	}
	pods, err := labels.Parse(podSelector)
	if err != nil {
		setupLog.Error(err, "Invalid --pod-selector", "selector", podSelector)
		os.Exit(1)
	}

	// NOTE: HTTP/2 is disabled by default because of the HTTP/2 Stream Cancellation and Rapid Reset CVEs.
	var tlsOpts []func(*tls.Config)
	if !enableHTTP2 {
		tlsOpts = append(tlsOpts, func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} })
	}
	metricsServerOptions := metricsserver.Options{
		BindAddress:   metricsAddr,
		SecureServing: secureMetrics,
		TLSOpts:       tlsOpts,
	}
	if secureMetrics {
		// Metrics are served behind authentication (TokenReview) and authorization (SubjectAccessReview).
		metricsServerOptions.FilterProvider = metricsauth.FilterProvider
	}

	cfg := ctrl.GetConfigOrDie()
	cfg.QPS, cfg.Burst = float32(qps), burst
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsServerOptions,
		HealthProbeBindAddress:  probeAddr,
		PprofBindAddress:        pprofAddr,
		LeaderElection:          enableLeaderElection,
		LeaderElectionID:        leaderElectionID,
		LeaderElectionNamespace: leaderElectionNamespace,
		// The manager exits at once when it loses the lease, so the next leader starts clean.
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 &leaseDuration,
		RenewDeadline:                 &renewDeadline,
		RetryPeriod:                   &retryPeriod,
		Cache:                         controller.CacheOptions(watchNamespace, shardSelector, pods),
	})
	if err != nil {
		setupLog.Error(err, "Unable to create manager")
		os.Exit(1)
	}

	ctx := ctrl.SetupSignalHandler()
	// The endpoints are read before the controllers start; a file that does not parse leaves none defined
	// (the breakers naming one report it) until it is fixed: it is re-read on change.
	detectorEndpoints := endpoints.NewRegistry(endpointsFile, ctrl.Log.WithName("endpoints"))
	if err := detectorEndpoints.Load(); err != nil {
		setupLog.Error(err, "Detector endpoints not loaded; will retry when the file changes")
	}
	if err := mgr.Add(detectorEndpoints); err != nil {
		setupLog.Error(err, "Unable to watch the detector endpoints file")
		os.Exit(1)
	}
	if err := controller.SetupWithManager(ctx, mgr, controller.Options{MaxConcurrentReconciles: workers,
		MaxConcurrentEvaluations: evaluations, KubervisorServiceSelector: shardSelector, Endpoints: detectorEndpoints}); err != nil {
		setupLog.Error(err, "Unable to set up controllers")
		os.Exit(1)
	}
	// +kubebuilder:scaffold:builder

	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		setupLog.Error(err, "Unable to set up health check")
		os.Exit(1)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		setupLog.Error(err, "Unable to set up ready check")
		os.Exit(1)
	}

	// The Go runtime's memory limit from the container's (unless GOMEMLIMIT is set): 90 % of it.
	memoryLimit := memlimit.Set("/")
	setupLog.Info("Starting manager", "watchNamespace", watchNamespace, "podSelector", podSelector, "goMemoryLimit", memoryLimit)
	if err := mgr.Start(ctx); err != nil {
		setupLog.Error(err, "Problem running manager")
		os.Exit(1)
	}
}

// checkLeaderElection refuses timings client-go's leader election cannot keep: a leader must retry its
// renewal at least once before its deadline, and give up before a standby may take the Lease.
func checkLeaderElection(leaseDuration, renewDeadline, retryPeriod time.Duration) error {
	if retryPeriod <= 0 || renewDeadline <= retryPeriod || leaseDuration <= renewDeadline {
		return errors.New("want 0 < --leader-elect-retry-period < --leader-elect-renew-deadline < --leader-elect-lease-duration")
	}
	return nil
}
