//go:build e2e

// Package node is the real-node end-to-end suite (`make test-e2e-node`, SPEC §13): the local control plane
// of test/cluster with a real kubelet, containerd and runc instead of the fake kubelet; Kubervisor installed
// with `helm install` of dist/chart from the image the project builds (test/image: two replicas, leader
// election, the chart's probes and security context); a fleet of real containers (test/node/app) with real
// readiness probes serving real HTTP to a client that balances over the Service's ready endpoints, as a
// mesh's client would (there is no kube-proxy); a real Prometheus scraping the pods it finds through the API
// server.
package node

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/memlimit"
	"github.com/kubervisor/kubervisor/test/cluster"
	"github.com/kubervisor/kubervisor/test/image"
)

const (
	release   = "kubervisor"
	releaseNS = "kubervisor-system"
	// appPort is where test/node/app serves its traffic, metrics, readiness and fault controls.
	appPort = 8080
)

var (
	ctx    context.Context
	cancel context.CancelFunc
	root   string
	cl     *cluster.Cluster
	k8s    client.Client
	prom   *cluster.Prometheus
	// fleetImage is the reference of test/node/app's image.
	fleetImage string
	// installTook is helm install to the two replicas Ready (their real probes passing).
	installTook time.Duration
)

func TestNode(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Kubervisor on a real node")
}

var _ = BeforeSuite(func() {
	ctx, cancel = context.WithCancel(context.Background())
	var err error
	root, err = cluster.RepoRoot()
	Expect(err).NotTo(HaveOccurred())
	Expect(filepath.Join(root, "bin", "helm")).To(BeAnExistingFile(), "run `make helm` (make test-e2e-node does)")

	By("the images: the manager's, the pause image and the fleet's, written as tarballs without a container engine")
	imagesDir := filepath.Join(root, "bin", "images")
	tarballs, err := filepath.Glob(filepath.Join(imagesDir, "*.tar"))
	Expect(err).NotTo(HaveOccurred())
	Expect(tarballs).NotTo(BeEmpty(), "no image in %s: run `make images` (make test-e2e-node does)", imagesDir)
	fleetImage = image.NodeFleetRef
	tag, err := image.ChartAppVersion(root)
	Expect(err).NotTo(HaveOccurred())

	By("the local cluster with a real node: containerd, runc, the CNI bridge, the kubelet, kube-scheduler")
	scheme := runtime.NewScheme()
	Expect(clientgoscheme.AddToScheme(scheme)).To(Succeed())
	Expect(kvv1.AddToScheme(scheme)).To(Succeed())
	cl, err = cluster.Start(ctx, cluster.Options{
		Scheme: scheme, Log: GinkgoWriter, KeepWorkDir: os.Getenv("KEEP_WORK_DIR") != "",
		// The chart installs the CRD.
		CRDDirectoryPaths: []string{},
		Node:              &cluster.NodeOptions{Images: tarballs, PauseImage: image.PauseRef},
	})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() {
		if CurrentSpecReport().Failed() || os.Getenv("KEEP_WORK_DIR") != "" {
			GinkgoWriter.Printf("work directory: %s\n", cl.WorkDir())
		}
		cancel()
		Expect(cl.Stop()).To(Succeed())
	})
	k8s = cl.Client()
	GinkgoWriter.Printf("cluster with a real node up in %s\n", cl.StartDuration().Round(time.Millisecond))

	By("a real Prometheus on the bridge, scraping the pods it finds through the API server")
	nodeIP, _, err := cluster.NodeOptions{}.NodeIP()
	Expect(err).NotTo(HaveOccurred())
	prom, err = cl.StartPrometheus(ctx, cluster.PrometheusOptions{Host: nodeIP.String()})
	Expect(err).NotTo(HaveOccurred())

	By("helm install of dist/chart with the project's image: two replicas, leader election, the chart's probes")
	began := time.Now()
	helm("install", release, filepath.Join(root, "dist", "chart"), "--namespace", releaseNS, "--create-namespace",
		"--set", "manager.image.repository="+image.ManagerRepository, "--set", "manager.image.tag="+tag,
		"--set", "manager.image.pullPolicy=Never", "--set", "manager.logLevel=debug")
	Eventually(managerDeployment).WithTimeout(3*time.Minute).WithPolling(200*time.Millisecond).
		Should(HaveField("Status.ReadyReplicas", int32(2)), func() string { return describeManagers() })
	installTook = time.Since(began)
	GinkgoWriter.Printf("helm install to both replicas Ready: %s\n", installTook.Round(time.Millisecond))
	Eventually(leader).WithTimeout(time.Minute).ShouldNot(BeEmpty())

	By("the Go runtime's memory limit is 90 % of the container's, read from the cgroup the real runtime made")
	limit := managerDeployment().Spec.Template.Spec.Containers[0].Resources.Limits.Memory().Value()
	Expect(limit).To(BeNumerically(">", 0))
	logs, err := kubectl("-n", releaseNS, "logs", "-l", "control-plane=controller-manager", "--tail=-1")
	Expect(err).NotTo(HaveOccurred(), logs)
	m := regexp.MustCompile(`"goMemoryLimit":(\d+)`).FindStringSubmatch(logs)
	Expect(m).NotTo(BeNil(), "no goMemoryLimit in the managers' logs:\n%s", logs)
	Expect(strconv.ParseInt(m[1], 10, 64)).To(Equal(int64(float64(limit)*memlimit.Share)), "the container's limit is %d", limit)
	GinkgoWriter.Printf("manager container: memory limit %d, GOMEMLIMIT %s\n", limit, m[1])
})

// helm runs bin/helm against the cluster as its administrator and returns its combined output.
func helm(args ...string) string {
	cmd := exec.Command(filepath.Join(root, "bin", "helm"), append(args, "--kubeconfig", cl.KubeconfigPath())...)
	out, err := cmd.CombinedOutput()
	ExpectWithOffset(1, err).NotTo(HaveOccurred(), "helm %s:\n%s", strings.Join(args, " "), out)
	return string(out)
}

// kubectl runs kubectl against the cluster as its administrator and returns its combined output.
func kubectl(args ...string) (string, error) {
	out, err := cl.Kubectl(ctx, args...).CombinedOutput()
	return string(out), err
}

// managerDeployment is the chart's Deployment of the manager.
func managerDeployment() appsv1.Deployment {
	var list appsv1.DeploymentList
	Expect(k8s.List(ctx, &list, client.InNamespace(releaseNS), client.MatchingLabels{"control-plane": "controller-manager"})).To(Succeed())
	if len(list.Items) != 1 {
		return appsv1.Deployment{}
	}
	return list.Items[0]
}

// describeManagers is what a failed wait for the managers prints: their pods and the end of their logs.
func describeManagers() string {
	out, _ := kubectl("-n", releaseNS, "get", "pods", "-o", "wide")
	logs, _ := kubectl("-n", releaseNS, "logs", "-l", "control-plane=controller-manager", "--tail=30", "--prefix")
	return fmt.Sprintf("%s\n%s", out, logs)
}
