// Package cluster is the local cluster the end-to-end tests, the demo and the benchmarks run
// against: envtest's etcd and kube-apiserver with the CRDs of config/crd/bases, a
// kube-controller-manager child process running the endpoint, EndpointSlice, ReplicaSet, Deployment
// and garbage-collector controllers, one Node, a fake kubelet and scheduler (Kubelet) that makes pods
// Running and Ready, an optional Prometheus child process, and the manager binary as a child process
// whose identity is the ServiceAccount of config/rbac.
//
// Every process listens on 127.0.0.1 only and runs in its own process group; Stop ends them all and
// removes the temporary files, and is safe to register with t.Cleanup or Ginkgo's DeferCleanup.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/kubervisor/kubervisor/test/utils"
)

// The identity of the manager: the ServiceAccount that config/default creates (namespace
// kubervisor-system, name prefix kubervisor-).
const (
	ManagerNamespace      = "kubervisor-system"
	ManagerServiceAccount = "kubervisor-controller-manager"
)

// DefaultControllers are the kube-controller-manager controllers the harness runs: endpoints and
// EndpointSlices for Services, ReplicaSets and Deployments for pods, the garbage collector so that
// deleting a Deployment deletes its pods, namespace so that namespaces can be deleted, and disruption
// so that evictions honour PodDisruptionBudgets. The node lifecycle controller must stay off: nothing
// renews the Node's heartbeat and it would evict every pod.
var DefaultControllers = []string{
	"endpoints-controller",
	"endpointslice-controller",
	"replicaset-controller",
	"deployment-controller",
	"garbage-collector-controller",
	"namespace-controller",
	"disruption-controller",
}

// ManagerUser is the envtest user the manager runs as: the ServiceAccount of config/rbac, with the
// groups the API server gives a ServiceAccount token, so that config/rbac is what authorizes it.
func ManagerUser() envtest.User { return ServiceAccountUser(ManagerNamespace, ManagerServiceAccount) }

// ServiceAccountUser is the identity the API server gives a token of ServiceAccount namespace/name:
// its user name and groups, so that RBAC bound to the ServiceAccount is what authorizes it.
func ServiceAccountUser(namespace, name string) envtest.User {
	return envtest.User{
		Name: "system:serviceaccount:" + namespace + ":" + name,
		Groups: []string{
			"system:serviceaccounts",
			"system:serviceaccounts:" + namespace,
			"system:authenticated",
		},
	}
}

// Options configures Start. The zero value is a working cluster.
type Options struct {
	// AssetsDir holds kube-apiserver, etcd, kubectl and kube-controller-manager; default
	// $KUBEBUILDER_ASSETS (the Makefile's bin/k8s/$(ENVTEST_K8S_VERSION)), and an error when it is unset.
	AssetsDir string
	// CRDDirectoryPaths are installed before Start returns; default <repo>/config/crd/bases.
	CRDDirectoryPaths []string
	// WorkDir receives logs, kubeconfigs and Prometheus data; default a new temporary directory,
	// removed by Stop unless KeepWorkDir.
	WorkDir string
	// KeepWorkDir keeps WorkDir after Stop (logs for a post-mortem).
	KeepWorkDir bool
	// Controllers of kube-controller-manager; default DefaultControllers.
	Controllers []string
	// ControllerManagerArgs are added to kube-controller-manager's command line.
	ControllerManagerArgs []string
	// APIServerArgs are set on kube-apiserver's command line (flag name without dashes -> values).
	APIServerArgs map[string][]string
	// AuditPolicy, when set, is an audit.k8s.io/v1 Policy: kube-apiserver logs the requests it selects in
	// JSON under the work directory, for Audited.
	AuditPolicy string
	// Kubelet configures the fake kubelet; its NodeName is the cluster's Node.
	Kubelet KubeletOptions
	// Node, when set, runs a real node (containerd, runc, the CNI bridge, the kubelet and kube-scheduler:
	// node.go) instead of the fake kubelet, which is then off.
	Node *NodeOptions
	// DisableKubelet leaves pods alone (no binding, no status): another process plays the kubelet.
	DisableKubelet bool
	// ManagerUser is the identity of the manager; default ManagerUser().
	ManagerUser *envtest.User
	// Scheme of Client; default client-go's scheme (add your API types to read them).
	Scheme *runtime.Scheme
	// StopGracePeriod is how long a child process has to exit after SIGTERM; default 10s.
	StopGracePeriod time.Duration
	// Log receives progress lines; default none.
	Log io.Writer
}

// Cluster is a running local cluster. Its methods are safe for concurrent use unless noted.
type Cluster struct {
	opts       Options
	root       string
	workDir    string
	ownWorkDir bool
	started    time.Time
	startTook  time.Duration

	env       *envtest.Environment
	cfg       *rest.Config
	clientset kubernetes.Interface
	client    client.Client

	kubeconfig        string
	managerKubeconfig string
	managerCfg        *rest.Config

	kcm     *Process
	kubelet *Kubelet
	node    *Node
	cancel  context.CancelFunc

	mu          sync.Mutex
	prometheus  *Prometheus
	manager     *Process
	managerPath string
	managerArgs []string

	stopOnce sync.Once
	stopErr  error
}

// Start starts the control plane, installs the CRDs, creates the Node, starts kube-controller-manager
// and waits until its EndpointSlice controller works, then starts the fake kubelet. On error
// everything started so far is stopped. ctx bounds the start only; Stop ends the cluster.
func Start(ctx context.Context, opts Options) (c *Cluster, err error) {
	began := time.Now()
	root, err := opts.complete()
	if err != nil {
		return nil, err
	}
	c = &Cluster{opts: opts, root: root}
	if err := c.makeWorkDir(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			c.logf("start failed, stopping what was started: %v", err)
			_ = c.Stop()
			c = nil
		}
	}()

	// 1. etcd + kube-apiserver + CRDs.
	if err := c.startControlPlane(); err != nil {
		return c, err
	}
	// 2. The manager's identity (nothing is authorized until config/rbac is applied).
	if err := c.provisionManagerUser(); err != nil {
		return c, err
	}
	// 3. The Node, before any controller looks for it (a real kubelet registers its own).
	if c.opts.Node == nil {
		if err := EnsureNode(ctx, c.clientset, c.opts.Kubelet.NodeName, c.opts.Kubelet.NodeIP); err != nil {
			return c, err
		}
	}
	// 4. kube-controller-manager, as system:masters.
	if err := c.startControllerManager(ctx); err != nil {
		return c, err
	}
	// 5. The fake kubelet and scheduler, or the real node.
	if c.opts.Node != nil {
		if err := c.startNode(ctx); err != nil {
			return c, err
		}
	} else if err := c.startKubelet(); err != nil {
		return c, err
	}
	c.started = time.Now()
	c.startTook = c.started.Sub(began)
	c.logf("cluster up in %s (kubeconfig: %s)", c.startTook.Round(time.Millisecond), c.kubeconfig)
	return c, nil
}

// complete fills in the defaults of opts, checks that the control-plane binaries exist, and returns
// the repository root ("" when not inside the repository and nothing needed it).
func (opts *Options) complete() (string, error) {
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	if opts.StopGracePeriod <= 0 {
		opts.StopGracePeriod = 10 * time.Second
	}
	if len(opts.Controllers) == 0 {
		opts.Controllers = DefaultControllers
	}
	if opts.Scheme == nil {
		opts.Scheme = clientgoscheme.Scheme
	}
	if opts.ManagerUser == nil {
		u := ManagerUser()
		opts.ManagerUser = &u
	}
	if opts.Kubelet.NodeName == "" {
		opts.Kubelet.NodeName = DefaultNodeName
	}
	if opts.Kubelet.NodeIP == "" {
		opts.Kubelet.NodeIP = "10.240.0.1"
	}
	if opts.AssetsDir == "" {
		dir, err := utils.AssetsDir()
		if err != nil {
			return "", err
		}
		opts.AssetsDir = dir
	}
	root, rootErr := RepoRoot()
	if opts.CRDDirectoryPaths == nil {
		if rootErr != nil {
			return "", rootErr
		}
		opts.CRDDirectoryPaths = []string{filepath.Join(root, "config", "crd", "bases")}
	}
	for _, b := range []string{"kube-apiserver", "etcd", "kube-controller-manager"} {
		if _, err := os.Stat(filepath.Join(opts.AssetsDir, b)); err != nil {
			return "", fmt.Errorf("control-plane binary %s missing in %s (run `make envtest-assets`): %w", b, opts.AssetsDir, err)
		}
	}
	if opts.Node != nil {
		opts.DisableKubelet = true
		opts.Controllers = append(slices.Clone(opts.Controllers), "root-ca-certificate-publisher-controller", "serviceaccount-controller",
			// A real kubelet renews its lease: the node lifecycle controller lifts the not-ready taint it registers with.
			"node-lifecycle-controller")
		if err := nodePrerequisites(opts.AssetsDir); err != nil {
			return "", err
		}
	}
	return root, nil
}

// makeWorkDir creates the work directory: Options.WorkDir, else a new temporary one that Stop removes.
func (c *Cluster) makeWorkDir() error {
	c.workDir = c.opts.WorkDir
	if c.workDir == "" {
		dir, err := os.MkdirTemp("", "kubervisor-cluster-")
		if err != nil {
			return fmt.Errorf("creating the cluster's work directory: %w", err)
		}
		c.workDir, c.ownWorkDir = dir, true
		return nil
	}
	if err := os.MkdirAll(c.workDir, 0o755); err != nil {
		return fmt.Errorf("creating the cluster's work directory: %w", err)
	}
	return nil
}

// startControlPlane starts etcd and kube-apiserver, installs the CRDs, and writes the administrator's
// kubeconfig.
func (c *Cluster) startControlPlane() error {
	opts := c.opts
	cpLog, err := os.OpenFile(c.LogPath("control-plane"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	// NOTE: the processes hold their own descriptors; closing ours cannot lose what they write.
	defer func() { _ = cpLog.Close() }()
	// NOTE: the certificates live in the work directory, not in a directory of envtest's: a restarted
	// kube-apiserver (RestartAPIServer) serves with the same ones, so every client's credentials stay valid.
	certDir := filepath.Join(c.workDir, "kube-apiserver")
	if err := os.RemoveAll(certDir); err != nil { // a caller-given work directory may hold an older run's
		return err
	}
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		return err
	}
	apiServer := &envtest.APIServer{Path: filepath.Join(opts.AssetsDir, "kube-apiserver"), Out: cpLog, Err: cpLog, CertDir: certDir}
	apiArgs := apiServer.Configure()
	if opts.Node != nil {
		// envtest keeps certificates it finds: these also name the `kubernetes` ClusterIP, for pods.
		if apiServer.CA, err = nodeServingCerts(certDir); err != nil {
			return fmt.Errorf("writing kube-apiserver's certificates: %w", err)
		}
		nodeAPIServerArgs(apiArgs)
	}
	// A /12 leaves room for the thousands of Services of a benchmark (envtest's default is a /24).
	apiArgs.Set("service-cluster-ip-range", "10.96.0.0/12")
	// An open watch otherwise holds kube-apiserver's graceful stop until its 60 s request timeout, past
	// envtest's 20 s stop timeout (a pod's watch whose FIN was lost with its network namespace, a client
	// the test left running): with a grace period it closes them, and Stop takes seconds.
	apiArgs.Set("shutdown-watch-termination-grace-period", "5s")
	if opts.AuditPolicy != "" {
		audit, err := auditArgs(c.workDir, opts.AuditPolicy)
		if err != nil {
			return err
		}
		for k, v := range audit {
			apiArgs.Set(k, v...)
		}
	}
	for k, v := range opts.APIServerArgs {
		apiArgs.Set(k, v...)
	}
	c.env = &envtest.Environment{
		ControlPlane: envtest.ControlPlane{
			APIServer:   apiServer,
			Etcd:        &envtest.Etcd{Path: filepath.Join(opts.AssetsDir, "etcd"), Out: cpLog, Err: cpLog},
			KubectlPath: filepath.Join(opts.AssetsDir, "kubectl"),
		},
		BinaryAssetsDirectory: opts.AssetsDir,
		CRDDirectoryPaths:     opts.CRDDirectoryPaths,
		ErrorIfCRDPathMissing: true,
		Scheme:                opts.Scheme,
	}
	c.logf("starting etcd and kube-apiserver from %s", opts.AssetsDir)
	if c.cfg, err = c.env.Start(); err != nil {
		return fmt.Errorf("starting the control plane: %w; end of its log:\n%s", err, logTail(c.LogPath("control-plane")))
	}
	c.cfg.QPS, c.cfg.Burst = 1000, 2000
	// NOTE: the clientset (the fake kubelet's watch and status writes among others) speaks protobuf, as
	// a real kubelet and kube-controller-manager do; JSON would cost the API server a second encoding of
	// every pod event and this process a slower decoding, which a benchmark would charge to the cluster.
	pb := rest.CopyConfig(c.cfg)
	pb.ContentType = runtime.ContentTypeProtobuf
	pb.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	if c.clientset, err = kubernetes.NewForConfig(pb); err != nil {
		return err
	}
	if c.client, err = client.New(c.cfg, client.Options{Scheme: opts.Scheme}); err != nil {
		return err
	}
	c.kubeconfig = filepath.Join(c.workDir, "kubeconfig")
	if err := os.WriteFile(c.kubeconfig, c.env.KubeConfig, 0o600); err != nil {
		return fmt.Errorf("writing the admin kubeconfig: %w", err)
	}
	return nil
}

// provisionManagerUser creates the manager's identity (Options.ManagerUser) and its kubeconfig.
func (c *Cluster) provisionManagerUser() error {
	managerUser, err := c.env.AddUser(*c.opts.ManagerUser, &rest.Config{QPS: 1000, Burst: 2000})
	if err != nil {
		return fmt.Errorf("provisioning the manager user: %w", err)
	}
	c.managerCfg = managerUser.Config()
	c.managerKubeconfig = filepath.Join(c.workDir, "manager.kubeconfig")
	return writeKubeconfig(managerUser, c.managerKubeconfig)
}

// startKubelet starts the fake kubelet and scheduler, unless Options.DisableKubelet.
func (c *Cluster) startKubelet() error {
	bg, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	if c.opts.DisableKubelet {
		return nil
	}
	var err error
	if c.kubelet, err = NewKubelet(c.clientset, c.opts.Kubelet); err != nil {
		return err
	}
	if err := c.kubelet.Start(bg); err != nil {
		return fmt.Errorf("starting the fake kubelet: %w", err)
	}
	return nil
}

func (c *Cluster) startControllerManager(ctx context.Context) error {
	kcmUser, err := c.env.AddUser(envtest.User{Name: "kubervisor-harness:kube-controller-manager", Groups: []string{mastersGroup}}, nil)
	if err != nil {
		return fmt.Errorf("provisioning the kube-controller-manager user: %w", err)
	}
	kubeconfig := filepath.Join(c.workDir, "kube-controller-manager.kubeconfig")
	if err := writeKubeconfig(kcmUser, kubeconfig); err != nil {
		return err
	}
	args := slices.Concat([]string{
		"--kubeconfig=" + kubeconfig,
		"--controllers=" + strings.Join(c.opts.Controllers, ","),
		"--leader-elect=false",
		"--secure-port=0",
		"--use-service-account-credentials=false",
		// The defaults (20 QPS) make a benchmark's thousands of pods crawl.
		"--kube-api-qps=500",
		"--kube-api-burst=1000",
		"--concurrent-replicaset-syncs=10",
		"--concurrent-service-endpoint-syncs=10",
		"--concurrent-endpoint-syncs=10",
	}, c.opts.ControllerManagerArgs)
	if c.opts.Node != nil {
		// Every namespace's kube-root-ca.crt: the CA pods verify kube-apiserver with.
		args = append(args, "--root-ca-file="+filepath.Join(c.env.ControlPlane.APIServer.CertDir, "node-ca.crt"))
	}
	c.logf("starting kube-controller-manager (%s)", strings.Join(c.opts.Controllers, ","))
	const kcm = "kube-controller-manager"
	if c.kcm, err = StartProcess(kcm, filepath.Join(c.opts.AssetsDir, kcm), args, c.LogPath(kcm), nil); err != nil {
		return err
	}
	if err := c.waitForEndpointSlice(ctx, 60*time.Second); err != nil {
		return fmt.Errorf("kube-controller-manager is not working: %w; end of its log:\n%s", err, logTail(c.kcm.LogPath()))
	}
	return nil
}

// waitForEndpointSlice proves kube-controller-manager works: its EndpointSlice controller creates a
// slice for a probe Service.
func (c *Cluster) waitForEndpointSlice(ctx context.Context, timeout time.Duration) error {
	const name = "kubervisor-harness-probe"
	svcs := c.clientset.CoreV1().Services(metav1.NamespaceDefault)
	_, err := svcs.Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"kubervisor.io/harness-probe": "true"},
			Ports:    []corev1.ServicePort{{Port: 80}},
		},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating the probe Service: %w", err)
	}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		if !c.kcm.Running() {
			return false, fmt.Errorf("kube-controller-manager exited: %v", c.kcm.Err())
		}
		list, err := c.clientset.DiscoveryV1().EndpointSlices(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{
			LabelSelector: discoveryv1.LabelServiceName + "=" + name,
		})
		return err == nil && len(list.Items) > 0, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for the EndpointSlice of the probe Service: %w", err)
	}
	if err := svcs.Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting the probe Service: %w", err)
	}
	return nil
}

func writeKubeconfig(u *envtest.AuthenticatedUser, path string) error {
	data, err := u.KubeConfig()
	if err != nil {
		return fmt.Errorf("rendering kubeconfig %s: %w", path, err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("writing kubeconfig %s: %w", path, err)
	}
	return nil
}

// Stop stops the manager, Prometheus, the fake kubelet, kube-controller-manager, kube-apiserver and
// etcd, and removes the work directory (unless KeepWorkDir or a caller-given WorkDir). It is
// idempotent; later calls return the first call's error.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() {
		var errs []error
		c.logf("stopping the cluster")
		if err := c.StopManager(); err != nil {
			errs = append(errs, err)
		}
		c.mu.Lock()
		prom := c.prometheus
		c.mu.Unlock()
		if prom != nil {
			if err := prom.Stop(); err != nil {
				errs = append(errs, err)
			}
		}
		if c.kubelet != nil {
			c.kubelet.Stop()
		}
		if c.node != nil {
			if err := c.node.stop(c.opts.StopGracePeriod); err != nil {
				errs = append(errs, err)
			}
		}
		if c.cancel != nil {
			c.cancel()
		}
		if c.kcm != nil {
			if err := c.kcm.Stop(c.opts.StopGracePeriod); err != nil {
				errs = append(errs, err)
			}
		}
		if c.env != nil {
			if err := c.env.Stop(); err != nil {
				errs = append(errs, fmt.Errorf("stopping the control plane: %w", err))
			}
		}
		if c.ownWorkDir && !c.opts.KeepWorkDir {
			if err := os.RemoveAll(c.workDir); err != nil {
				errs = append(errs, err)
			}
		}
		c.stopErr = errors.Join(errs...)
	})
	return c.stopErr
}

// RestartAPIServer kills kube-apiserver (SIGKILL: a crash, which its clients see as a connection gone, not
// the watches a graceful stop closes) and starts it again on the same port, certificates and etcd; every client keeps its
// credentials. It returns once the new one is healthy, with how long the API server was away. Not safe with
// a concurrent Stop.
func (c *Cluster) RestartAPIServer() (time.Duration, error) {
	api := c.env.ControlPlane.APIServer
	pid, err := pidOf("--cert-dir=" + api.CertDir)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	c.logf("killing kube-apiserver (pid %d) and starting it again", pid)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return 0, fmt.Errorf("killing kube-apiserver: %w", err)
	}
	// envtest reaps the process it started; Stop returns once it is gone.
	if err := api.Stop(); err != nil {
		return 0, fmt.Errorf("stopping kube-apiserver: %w", err)
	}
	if err := api.Start(); err != nil {
		return 0, fmt.Errorf("starting kube-apiserver again: %w; end of its log:\n%s", err, logTail(c.LogPath("control-plane")))
	}
	return time.Since(start), nil
}

// pidOf returns the process whose command line holds arg, among this user's processes.
func pidOf(arg string) (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue // gone meanwhile
		}
		if slices.Contains(strings.Split(string(cmdline), "\x00"), arg) {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no process with %s on its command line", arg)
}

func (c *Cluster) logf(format string, args ...any) {
	_, _ = fmt.Fprintf(c.opts.Log, "cluster: "+format+"\n", args...) // progress lines are best effort
}

// StartDuration is how long Start took.
func (c *Cluster) StartDuration() time.Duration { return c.startTook }

// Config is a REST config of a cluster administrator (system:masters).
func (c *Cluster) Config() *rest.Config { return rest.CopyConfig(c.cfg) }

// Clientset is a client-go clientset of a cluster administrator.
func (c *Cluster) Clientset() kubernetes.Interface { return c.clientset }

// Client is a non-cached controller-runtime client of a cluster administrator, with Options.Scheme.
func (c *Cluster) Client() client.Client { return c.client }

// KubeconfigPath is a kubeconfig file of a cluster administrator, for kubectl and users
// (`kubectl --kubeconfig PATH get kvs`).
func (c *Cluster) KubeconfigPath() string { return c.kubeconfig }

// ManagerConfig is a REST config with the manager's identity (Options.ManagerUser).
func (c *Cluster) ManagerConfig() *rest.Config { return rest.CopyConfig(c.managerCfg) }

// ManagerKubeconfigPath is a kubeconfig file with the manager's identity.
func (c *Cluster) ManagerKubeconfigPath() string { return c.managerKubeconfig }

// SetManagerUser gives the manager another identity from its next StartManager on (e.g. the
// ServiceAccount of a Helm release): it provisions the user and rewrites ManagerKubeconfigPath. It
// fails while a manager started by the harness runs.
func (c *Cluster) SetManagerUser(user envtest.User) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.manager != nil && c.manager.Running() {
		return fmt.Errorf("the manager is running (pid %d): stop it before changing its identity", c.manager.Pid())
	}
	c.opts.ManagerUser = &user
	return c.provisionManagerUser()
}

// AddUser provisions another identity (e.g. a user with limited rights for a plugin test).
func (c *Cluster) AddUser(user envtest.User) (*envtest.AuthenticatedUser, error) {
	return c.env.AddUser(user, &rest.Config{QPS: 1000, Burst: 2000})
}

// NodeName is the name of the cluster's Node.
func (c *Cluster) NodeName() string { return c.opts.Kubelet.NodeName }

// Node is the real node (nil without Options.Node).
func (c *Cluster) Node() *Node { return c.node }

// Kubelet is the fake kubelet (nil with DisableKubelet); use it to make pods NotReady.
func (c *Cluster) Kubelet() *Kubelet { return c.kubelet }

// ControllerManager is the kube-controller-manager process.
func (c *Cluster) ControllerManager() *Process { return c.kcm }

// WorkDir is where the cluster keeps its logs, kubeconfigs and Prometheus data.
func (c *Cluster) WorkDir() string { return c.workDir }

// LogPath is the log file of a component in the work directory: "control-plane" (etcd and
// kube-apiserver), "kube-controller-manager" or "manager". Prometheus's is Prometheus().LogPath().
func (c *Cluster) LogPath(component string) string {
	return filepath.Join(c.workDir, component+".log")
}

// AssetsDir is the directory of the control-plane binaries (kubectl is there too).
func (c *Cluster) AssetsDir() string { return c.opts.AssetsDir }

// Kubectl returns a kubectl command with the administrator's kubeconfig.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, filepath.Join(c.opts.AssetsDir, "kubectl"), append([]string{"--kubeconfig=" + c.kubeconfig}, args...)...)
}

// RepoRoot is the root of the kubervisor repository: the first directory up from the working
// directory whose go.mod declares module github.com/kubervisor/kubervisor.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if data, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil &&
			strings.Contains(string(data), "module github.com/kubervisor/kubervisor\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the kubervisor repository (no go.mod of github.com/kubervisor/kubervisor above the working directory)")
		}
		dir = parent
	}
}

// logTailBytes is how much of a log an error carries.
const logTailBytes = 3000

// logTail returns the last logTailBytes of a log file, for errors that the removal of the work directory
// would otherwise leave unexplained.
func logTail(path string) string {
	const n = logTailBytes
	f, err := os.Open(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	defer func() { _ = f.Close() }() // read only: nothing to lose
	if st, err := f.Stat(); err == nil && st.Size() > n {
		_, _ = f.Seek(-n, io.SeekEnd)
	}
	data, _ := io.ReadAll(f)
	return string(data)
}
