package cluster

// The real node (SPEC §13): containerd, runc and the CNI bridge plugin from Debian, the kubelet and
// kube-scheduler of the control plane's version built from source (make node-assets), on a bridge that
// never leaves this machine.
//
// What the node changes on the host, and how each change is confined or undone:
//   - containerd and the kubelet run in a private mount namespace (unshare --mount) made by node.sh, which
//     mounts a tmpfs over every host path they write (/var/lib/kubelet with device-plugins, /var/log/pods,
//     /var/log/containers, /var/lib/cni, /var/lib/containerd, /run/containerd, /run/netns) and binds files
//     of the run's directory over the sysctls the kubelet would set (vm.overcommit_memory, kernel.panic,
//     kernel.panic_on_oops): what they write there dies with the namespace. The mount points themselves
//     are created on the host when missing and removed by Stop.
//   - PATH holds only the programs they need (mount, umount, du, nice, ionice, find, containerd's and
//     runc): no iptables, so nothing rewrites the host's firewall.
//   - The bridge (Bridge, default kvbr0) is created before containerd with the pod CIDR's first address
//     and the `kubernetes` Service's ClusterIP (10.96.0.1/32), no gateway route for pods beyond the Service
//     range, no masquerading, no ip_forward: pods reach this host's bridge addresses and each other only.
//     Stop deletes it.
//   - The containers' cgroups (kubepods, on this cgroup v1 host) and the containerd shims (their own
//     process groups) outlive a stopped kubelet: Stop kills the shims of this node's containerd and every
//     process left in kubepods, then removes the kubepods cgroups.
//
// The kubelet reaches the API server on 127.0.0.1 as system:masters. Pods reach it the way they would
// through kube-proxy: the harness forwards the ClusterIP 10.96.0.1:443 (on the bridge) to kube-apiserver's
// 127.0.0.1 port, TCP only; kube-apiserver's serving certificate names 10.96.0.1 (nodeServingCerts), and
// kube-controller-manager publishes its CA in every namespace's kube-root-ca.crt, so in-cluster clients
// verify it as in any cluster. kube-apiserver runs with --endpoint-reconciler-type=none: the default
// reconciler would publish 127.0.0.1 as the endpoint of the `kubernetes` Service, which it refuses
// (a loopback address), and fail to start.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/cert"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// ServiceClusterIP is the ClusterIP of the `kubernetes` Service: the first address of the Service range
// the harness gives kube-apiserver (10.96.0.0/12).
const ServiceClusterIP = "10.96.0.1"

// NodeOptions configures the real node (Options.Node).
type NodeOptions struct {
	// Images are image tarballs (docker-archive or OCI, e.g. written by test/image) imported into
	// containerd before the kubelet starts; the pause image among them (PauseImage names it).
	Images []string
	// PauseImage is containerd's sandbox image; default registry.k8s.io/pause:3.6 (containerd 1.6's).
	PauseImage string
	// Bridge is the name of the bridge the harness creates; default kvbr0.
	Bridge string
	// PodCIDR is the pods' range; its first address is the bridge's (and the Node's InternalIP). Default
	// 10.244.0.0/24.
	PodCIDR string
	// SyncFrequency is the kubelet's syncFrequency (how often it syncs every pod, its status included);
	// default 5s (the kubelet's own default is 1m), so a test sees several syncs quickly.
	SyncFrequency time.Duration
	// StartTimeout bounds each start step (containerd's socket, the Node Ready); default 90s.
	StartTimeout time.Duration
}

func (o *NodeOptions) complete() {
	if o.PauseImage == "" {
		o.PauseImage = "registry.k8s.io/pause:3.6"
	}
	if o.Bridge == "" {
		o.Bridge = "kvbr0"
	}
	if o.PodCIDR == "" {
		o.PodCIDR = "10.244.0.0/24"
	}
	if o.SyncFrequency <= 0 {
		o.SyncFrequency = 5 * time.Second
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = 90 * time.Second
	}
}

// NodeIP is the Node's InternalIP: the bridge's address, the first of the pod CIDR (the default one when
// PodCIDR is empty).
func (o NodeOptions) NodeIP() (net.IP, *net.IPNet, error) {
	o.complete()
	ip, cidr, err := net.ParseCIDR(o.PodCIDR)
	if err != nil || ip.To4() == nil {
		return nil, nil, fmt.Errorf("node pod CIDR %q: want an IPv4 CIDR", o.PodCIDR)
	}
	first := cidr.IP.To4()
	first = net.IPv4(first[0], first[1], first[2], first[3]+1).To4()
	return first, cidr, nil
}

// hostTools are the programs the kubelet and containerd may run, linked into the node's PATH.
var hostTools = []string{"mount", "umount", "du", "nice", "ionice", "find", PartContainerd, "containerd-shim-runc-v2", "runc", "ctr"}

// nodePaths are the host paths containerd, runc, the CNI plugins and the kubelet write whatever their
// configuration says: node.sh mounts a tmpfs over each in its private mount namespace.
var nodePaths = []string{
	"/var/lib/kubelet", "/var/log/pods", "/var/log/containers", "/var/lib/cni", "/var/lib/containerd",
	"/run/containerd", "/run/netns",
}

// nodeSysctls are the host sysctls the kubelet sets at start: node.sh binds a copy over each.
var nodeSysctls = []string{"/proc/sys/vm/overcommit_memory", "/proc/sys/kernel/panic", "/proc/sys/kernel/panic_on_oops"}

// Node is the running real node: containerd and the kubelet (one process group in a private mount
// namespace), kube-scheduler, and the forwarder of the `kubernetes` Service.
type Node struct {
	opts    NodeOptions
	name    string
	dir     string
	nodeIP  net.IP
	socket  string
	proc    *Process
	sched   *Process
	fwd     net.Listener
	created []string // host mount points node.sh needed and the harness created

	wg sync.WaitGroup
}

// The parts of the node a NodeSetupError names.
const (
	PartPrerequisites = "prerequisites"
	PartBridge        = "bridge"
	PartContainerd    = "containerd"
	PartImages        = "images"
	PartKubelet       = "kubelet"
	PartScheduler     = "kube-scheduler"
)

// mastersGroup is the group every harness component but the manager is in (system:masters).
const mastersGroup = "system:masters"

// NodeSetupError is a fault of the node's set-up: which part, and why.
type NodeSetupError struct {
	Part string // "containerd", "kubelet", "bridge", "images", "kube-scheduler", "prerequisites"
	Err  error
}

func (e *NodeSetupError) Error() string { return "real node: " + e.Part + ": " + e.Err.Error() }
func (e *NodeSetupError) Unwrap() error { return e.Err }

// nodeServingCerts writes kube-apiserver's serving certificate (for 127.0.0.1, localhost and the
// `kubernetes` ClusterIP) and the ServiceAccount signing key into certDir before envtest starts it (envtest
// then keeps them), and returns the CA that signed the serving certificate.
func nodeServingCerts(certDir string) ([]byte, error) {
	certPEM, keyPEM, err := cert.GenerateSelfSignedCertKey("localhost",
		[]net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(ServiceClusterIP)}, []string{"kubernetes.default.svc", "kubernetes.default"})
	if err != nil {
		return nil, err
	}
	// GenerateSelfSignedCertKey returns the serving certificate followed by the CA that signed it.
	first, rest := pem.Decode(certPEM)
	if first == nil {
		return nil, errors.New("generated serving certificate: no PEM block")
	}
	ca := bytes.TrimSpace(rest)
	if len(ca) == 0 {
		return nil, errors.New("generated serving certificate: no CA after it")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{
		"apiserver.crt": certPEM,
		"apiserver.key": keyPEM,
		"sa-signer.key": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}),
		"sa-signer.crt": pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}),
		"node-ca.crt":   append(ca, '\n'),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(certDir, name), data, 0o600); err != nil {
			return nil, err
		}
	}
	return append(ca, '\n'), nil
}

// nodeAPIServerArgs are kube-apiserver's flags on a real node.
func nodeAPIServerArgs(apiArgs *envtest.Arguments) {
	apiArgs.Set("endpoint-reconciler-type", "none")
	// Pods get their ServiceAccount token (the ServiceAccount admission plugin, which envtest disables).
	apiArgs.Disable("disable-admission-plugins")
	apiArgs.Set("enable-admission-plugins", "ServiceAccount")
	// The kubelet's address on the bridge, for `kubectl logs`.
	apiArgs.Set("kubelet-preferred-address-types", "InternalIP")
}

// nodePrerequisites checks what the node needs on the host, all at once.
func nodePrerequisites(assets string) error {
	var missing, tools []string
	for _, b := range []string{PartKubelet, PartScheduler} {
		if _, err := os.Stat(filepath.Join(assets, b)); err != nil {
			missing = append(missing, fmt.Sprintf("%s in %s (run `make node-assets`)", b, assets))
		}
	}
	for _, t := range append([]string{"unshare", "ip"}, hostTools...) {
		if _, err := exec.LookPath(t); err != nil {
			tools = append(tools, t)
		}
	}
	if len(tools) > 0 {
		missing = append(missing, strings.Join(tools, ", ")+" on PATH (run `make node-assets`: Debian's containerd, runc, util-linux, iproute2)")
	}
	for _, p := range []string{PartBridge, "host-local", "loopback"} {
		if _, err := os.Stat(filepath.Join(cniBinDir, p)); err != nil {
			missing = append(missing, "CNI plugin "+filepath.Join(cniBinDir, p)+" (run `make node-assets`: Debian's containernetworking-plugins)")
		}
	}
	if os.Geteuid() != 0 {
		missing = append(missing, "root (the node mounts, creates a bridge and runs containers)")
	}
	if len(missing) > 0 {
		return &NodeSetupError{Part: PartPrerequisites, Err: errors.New("missing: " + strings.Join(missing, "; "))}
	}
	return nil
}

// cniBinDir is where Debian's containernetworking-plugins installs the plugins.
const cniBinDir = "/usr/lib/cni"

// startNode starts kube-scheduler, creates the bridge, starts containerd and the kubelet, imports the
// images, forwards the `kubernetes` Service and waits for the Node to be Ready.
func (c *Cluster) startNode(ctx context.Context) (err error) {
	o := *c.opts.Node
	o.complete()
	n := &Node{opts: o, name: c.opts.Kubelet.NodeName, dir: filepath.Join(c.workDir, "node")}
	c.node = n
	if n.nodeIP, _, err = o.NodeIP(); err != nil {
		return &NodeSetupError{Part: PartBridge, Err: err}
	}
	n.socket = filepath.Join(n.dir, "containerd.sock")
	for _, d := range []string{"bin", "cni/net.d", "cni/ipam", "kubelet", "sysctl"} {
		if err := os.MkdirAll(filepath.Join(n.dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := c.startScheduler(); err != nil {
		return err
	}
	if err := n.createBridge(); err != nil {
		return &NodeSetupError{Part: PartBridge, Err: err}
	}
	if err := n.forwardService(c.cfg.Host); err != nil {
		return &NodeSetupError{Part: PartBridge, Err: fmt.Errorf("forwarding %s:443 to kube-apiserver: %w", ServiceClusterIP, err)}
	}
	kubeletUser, err := c.env.AddUser(envtest.User{Name: "system:node:" + n.name, Groups: []string{"system:nodes", mastersGroup}}, nil)
	if err != nil {
		return fmt.Errorf("provisioning the kubelet user: %w", err)
	}
	kubeconfig := filepath.Join(n.dir, "kubelet.kubeconfig")
	if err := writeKubeconfig(kubeletUser, kubeconfig); err != nil {
		return err
	}
	if err := n.writeConfigs(filepath.Join(c.opts.AssetsDir, "kubelet"), kubeconfig); err != nil {
		return err
	}
	c.logf("starting containerd and the kubelet (node %s on %s, pods in %s)", n.name, o.Bridge, o.PodCIDR)
	if n.proc, err = StartProcess("node", "unshare", []string{"--mount", "--propagation", "private", "--fork",
		"bash", filepath.Join(n.dir, "node.sh")}, filepath.Join(n.dir, "node.log"), nil); err != nil {
		return &NodeSetupError{Part: PartContainerd, Err: err}
	}
	if err := n.waitContainerd(ctx); err != nil {
		return err
	}
	if err := n.importImages(ctx); err != nil {
		return err
	}
	// node.sh starts the kubelet once this file exists: the images are there before any pod asks.
	if err := os.WriteFile(filepath.Join(n.dir, "images-imported"), nil, 0o644); err != nil {
		return err
	}
	return n.waitReady(ctx, c)
}

func (c *Cluster) startScheduler() error {
	u, err := c.env.AddUser(envtest.User{Name: "system:kube-scheduler", Groups: []string{mastersGroup}}, nil)
	if err != nil {
		return fmt.Errorf("provisioning the kube-scheduler user: %w", err)
	}
	kubeconfig := filepath.Join(c.workDir, "kube-scheduler.kubeconfig")
	if err := writeKubeconfig(u, kubeconfig); err != nil {
		return err
	}
	const name = "kube-scheduler"
	p, err := StartProcess(name, filepath.Join(c.opts.AssetsDir, name),
		[]string{"--kubeconfig=" + kubeconfig, "--leader-elect=false", "--secure-port=0"}, c.LogPath(name), nil)
	if err != nil {
		return &NodeSetupError{Part: PartScheduler, Err: err}
	}
	c.node.sched = p
	return nil
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// createBridge creates the bridge (replacing one a crashed run left) with the node's and the Service's
// addresses.
func (n *Node) createBridge() error {
	_ = exec.Command("ip", "link", "delete", n.opts.Bridge).Run() // a leftover of a crashed run, or nothing
	_, cidr, _ := net.ParseCIDR(n.opts.PodCIDR)
	ones, _ := cidr.Mask.Size()
	for _, args := range []string{
		"link add " + n.opts.Bridge + " type bridge",
		"addr add " + n.nodeIP.String() + "/" + strconv.Itoa(ones) + " dev " + n.opts.Bridge,
		"addr add " + ServiceClusterIP + "/32 dev " + n.opts.Bridge,
		"link set " + n.opts.Bridge + " up",
	} {
		if err := run("ip", strings.Fields(args)...); err != nil {
			return err
		}
	}
	return nil
}

// forwardService plays kube-proxy for the `kubernetes` Service: ServiceClusterIP:443 -> kube-apiserver.
func (n *Node) forwardService(apiHost string) error {
	u, err := url.Parse(apiHost)
	if err != nil || u.Host == "" {
		return fmt.Errorf("kube-apiserver's address %q: %v", apiHost, err)
	}
	target := u.Host
	l, err := net.Listen("tcp", net.JoinHostPort(ServiceClusterIP, "443"))
	if err != nil {
		return err
	}
	n.fwd = l
	n.wg.Go(func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return // closed by Stop
			}
			go pipe(in, target)
		}
	})
	return nil
}

func pipe(in net.Conn, target string) {
	defer func() { _ = in.Close() }() // a forwarded connection: either end closing ends both
	out, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		return
	}
	defer func() { _ = out.Close() }()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(out, in); done <- struct{}{} }()
	go func() { _, _ = io.Copy(in, out); done <- struct{}{} }()
	<-done
}

// writeConfigs writes containerd's and the kubelet's configurations, the CNI network, the node's PATH
// and node.sh.
func (n *Node) writeConfigs(kubeletPath, kubeconfig string) error {
	o := n.opts
	for _, t := range hostTools {
		path, err := exec.LookPath(t)
		if err != nil {
			return &NodeSetupError{Part: PartPrerequisites, Err: err}
		}
		link := filepath.Join(n.dir, "bin", t)
		_ = os.Remove(link)
		if err := os.Symlink(path, link); err != nil {
			return err
		}
	}
	containerd := fmt.Sprintf(`version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = %q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  # runc cannot set oom_score_adj in this VM: keep the containers' at or above containerd's own.
  restrict_oom_score_adj = true
  enable_cdi = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
`, n.socket, o.PauseImage, cniBinDir, filepath.Join(n.dir, "cni", "net.d"))
	_, cidr, _ := net.ParseCIDR(o.PodCIDR)
	// No default route and no masquerading: pods reach the bridge's addresses (this host: Prometheus, the
	// kubelet's probes' answers, the `kubernetes` Service) and each other, nothing else.
	cni := fmt.Sprintf(`{
  "cniVersion": "0.4.0",
  "name": "kubervisor-node",
  "plugins": [{
    "type": "bridge", "bridge": %q, "isGateway": false, "ipMasq": false, "hairpinMode": true,
    "ipam": {"type": "host-local", "dataDir": %q,
      "ranges": [[{"subnet": %q, "gateway": %q}]],
      "routes": [{"dst": "10.96.0.0/12"}]}
  }, {"type": "loopback"}]
}
`, o.Bridge, filepath.Join(n.dir, "cni", "ipam"), cidr.String(), n.nodeIP.String())
	kubelet := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This host has cgroup v1 only; the kubelet refuses it unless told (v1 is in maintenance mode upstream).
failCgroupV1: false
failSwapOn: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://%s
address: %s
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 0
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
podCIDR: %s
resolvConf: ""
syncFrequency: %s
nodeStatusUpdateFrequency: 5s
fileCheckFrequency: 5s
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {"memory.available": "1Mi", "nodefs.available": "1%%", "imagefs.available": "1%%", "nodefs.inodesFree": "1%%"}
`, n.socket, n.nodeIP, o.PodCIDR, o.SyncFrequency)
	var script strings.Builder
	fmt.Fprintf(&script, `# node.sh: runs in a private mount namespace (unshare --mount --propagation private); see test/cluster/node.go.
set -euo pipefail
export PATH=%q
dir=%q
`, filepath.Join(n.dir, "bin"), n.dir)
	for _, p := range nodePaths {
		fmt.Fprintf(&script, "/usr/bin/mount -t tmpfs -o mode=0755 tmpfs %s\n", p)
	}
	for _, s := range nodeSysctls {
		copyOf := filepath.Join(n.dir, "sysctl", filepath.Base(s))
		fmt.Fprintf(&script, "/usr/bin/cat %s > %s\n/usr/bin/mount --bind %s %s\n", s, copyOf, copyOf, s)
	}
	fmt.Fprintf(&script, `echo "node.sh: mounts done; starting containerd"
containerd --config "$dir/containerd.toml" >>"$dir/containerd.log" 2>&1 &
cpid=$!
echo "node.sh: containerd pid $cpid"
until [[ -e "$dir/images-imported" ]]; do
  kill -0 "$cpid" 2>/dev/null || { echo "node.sh: containerd exited (see $dir/containerd.log)"; exit 1; }
  /usr/bin/sleep 0.1
done
echo "node.sh: starting the kubelet"
exec %q --config="$dir/kubelet.yaml" --kubeconfig=%q --hostname-override=%q --node-ip=%s --v=2 >>"$dir/kubelet.log" 2>&1
`, kubeletPath, kubeconfig, n.name, n.nodeIP)
	files := map[string]string{
		"containerd.toml":                  containerd,
		"cni/net.d/10-kubervisor.conflist": cni,
		"kubelet.yaml":                     kubelet,
		"node.sh":                          script.String(),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(n.dir, name), []byte(data), 0o644); err != nil {
			return err
		}
	}
	for _, p := range nodePaths {
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
			n.created = append(n.created, p)
		}
	}
	return nil
}

// waitContainerd waits for containerd's socket, failing at once if node.sh or containerd exits.
func (n *Node) waitContainerd(ctx context.Context) error {
	deadline := time.Now().Add(n.opts.StartTimeout)
	for {
		if _, err := os.Stat(n.socket); err == nil {
			if err := exec.CommandContext(ctx, "ctr", "--address", n.socket, "version").Run(); err == nil {
				return nil
			}
		}
		if !n.proc.Running() {
			return &NodeSetupError{Part: PartContainerd, Err: fmt.Errorf("exited before serving %s: %v; end of node.log:\n%s\nend of containerd.log:\n%s",
				n.socket, n.proc.Err(), logTail(n.proc.LogPath()), logTail(filepath.Join(n.dir, "containerd.log")))}
		}
		if time.Now().After(deadline) {
			return &NodeSetupError{Part: PartContainerd, Err: fmt.Errorf("no socket %s after %s; end of containerd.log:\n%s",
				n.socket, n.opts.StartTimeout, logTail(filepath.Join(n.dir, "containerd.log")))}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// importImages imports the image tarballs into containerd's k8s.io namespace (the CRI's).
func (n *Node) importImages(ctx context.Context) error {
	for _, img := range n.opts.Images {
		out, err := exec.CommandContext(ctx, "ctr", "--address", n.socket, "-n", "k8s.io", "images", "import", "--no-unpack=false", img).CombinedOutput()
		if err != nil {
			return &NodeSetupError{Part: PartImages, Err: fmt.Errorf("importing %s: %w: %s", img, err, strings.TrimSpace(string(out)))}
		}
	}
	return nil
}

// waitReady waits until the kubelet registered the Node and reports it Ready.
func (n *Node) waitReady(ctx context.Context, c *Cluster) error {
	deadline := time.Now().Add(n.opts.StartTimeout)
	for {
		node, err := c.clientset.CoreV1().Nodes().Get(ctx, n.name, metav1.GetOptions{})
		if err == nil && schedulable(node) {
			return nil
		}
		kubeletLog := filepath.Join(n.dir, "kubelet.log")
		if !n.proc.Running() {
			return &NodeSetupError{Part: PartKubelet, Err: fmt.Errorf("exited: %v; end of kubelet.log:\n%s", n.proc.Err(), logTail(kubeletLog))}
		}
		if time.Now().After(deadline) {
			return &NodeSetupError{Part: PartKubelet, Err: fmt.Errorf("node %s not Ready after %s; end of kubelet.log:\n%s",
				n.name, n.opts.StartTimeout, logTail(kubeletLog))}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// schedulable reports whether node is Ready and without the NoSchedule taints it registers with (the
// node lifecycle controller lifts them).
func schedulable(node *corev1.Node) bool {
	for _, t := range node.Spec.Taints {
		if t.Effect == corev1.TaintEffectNoSchedule || t.Effect == corev1.TaintEffectNoExecute {
			return false
		}
	}
	for _, cond := range node.Status.Conditions {
		if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// stop stops the kubelet and containerd, kills what they leave (shims, containers), removes the kubepods
// cgroups, the bridge and the mount points the harness created.
func (n *Node) stop(grace time.Duration) error {
	var errs []error
	if n.fwd != nil {
		_ = n.fwd.Close() // ends the accept loop
	}
	if n.proc != nil {
		if err := n.proc.Stop(grace); err != nil {
			errs = append(errs, err)
		}
	}
	// The shims of this containerd run in their own process groups; their containers too.
	for _, pid := range scanProcs(func(_ byte, _, _ int) bool { return true }) {
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if bytes.Contains(cmdline, []byte("containerd-shim")) && bytes.Contains(cmdline, []byte(n.socket)) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if err := killCgroups("kubepods"); err != nil {
		errs = append(errs, err)
	}
	if n.sched != nil {
		if err := n.sched.Stop(grace); err != nil {
			errs = append(errs, err)
		}
	}
	if err := run("ip", "link", "delete", n.opts.Bridge); err != nil && !strings.Contains(err.Error(), "Cannot find device") {
		errs = append(errs, err)
	}
	for _, p := range n.created {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("removing %s: %w", p, err))
		}
	}
	n.wg.Wait()
	return errors.Join(errs...)
}

// killCgroups kills every process in the cgroup named name under each cgroup v1 hierarchy (and v2's),
// then removes its directories, deepest first; it retries while processes are still exiting.
func killCgroups(name string) error {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*/" + name)
	if st, err := os.Stat("/sys/fs/cgroup/" + name); err == nil && st.IsDir() {
		roots = append(roots, "/sys/fs/cgroup/"+name)
	}
	var last error
	for range 100 {
		last = nil
		for _, root := range roots {
			var dirs []string
			_ = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
				if err == nil && d.IsDir() {
					dirs = append(dirs, path)
				}
				return nil
			})
			for _, dir := range slices.Backward(dirs) {
				procs, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
				for f := range strings.FieldsSeq(string(procs)) {
					if pid, err := strconv.Atoi(f); err == nil {
						_ = syscall.Kill(pid, syscall.SIGKILL)
					}
				}
				if err := syscall.Rmdir(dir); err != nil && !errors.Is(err, syscall.ENOENT) {
					last = fmt.Errorf("removing cgroup %s: %w", dir, err)
				}
			}
		}
		if last == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return last
}
