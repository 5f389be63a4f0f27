package controller_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/test/utils"
)

// adminKubeconfig writes a kubeconfig of a system:masters user of the envtest API server.
func adminKubeconfig() string {
	user, err := testEnv.AddUser(envtest.User{Name: "admin", Groups: []string{"system:masters"}}, nil)
	Expect(err).NotTo(HaveOccurred())
	data, err := user.KubeConfig()
	Expect(err).NotTo(HaveOccurred())
	path := filepath.Join(GinkgoT().TempDir(), "kubeconfig")
	Expect(os.WriteFile(path, data, 0o600)).To(Succeed())
	return path
}

func repoBin(name string) string {
	path, err := filepath.Abs(filepath.Join("..", "..", "bin", name))
	Expect(err).NotTo(HaveOccurred())
	if _, err := os.Stat(path); err != nil {
		Fail(name + " is missing: run the tests through `make test`, which installs it into bin/")
	}
	return path
}

// kubectl is the kubectl of the control-plane binaries the suite runs against ($KUBEBUILDER_ASSETS).
func kubectl() string {
	dir, err := utils.AssetsDir()
	if err != nil {
		Fail(err.Error())
	}
	return filepath.Join(dir, "kubectl")
}

func run(stdin []byte, name string, args ...string) string {
	cmd := exec.Command(name, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	Expect(err).NotTo(HaveOccurred(), "%s %s: %s", name, strings.Join(args, " "), stderr.String())
	return string(out)
}

var _ = Describe("Deployment manifests and kubectl", func() {
	It("renders config/default with kustomize and the API server accepts every object (server-side dry run)", func() {
		rendered := run(nil, repoBin("kustomize"), "build", filepath.Join("..", "..", "config", "default"))
		for _, kind := range []string{"CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ServiceAccount", "Deployment", "Service", "Namespace"} {
			Expect(rendered).To(ContainSubstring("kind: "+kind+"\n"), "config/default renders a %s", kind)
		}
		By("the manager runs as non-root on a read-only root filesystem, with probes and leader election")
		Expect(rendered).To(ContainSubstring("runAsNonRoot: true"))
		Expect(rendered).To(ContainSubstring("readOnlyRootFilesystem: true"))
		Expect(rendered).To(ContainSubstring("livenessProbe:"))
		Expect(rendered).To(ContainSubstring("readinessProbe:"))
		Expect(rendered).To(ContainSubstring("--leader-elect"))

		kubeconfig := adminKubeconfig()
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kubervisor-system"}}
		Expect(k8sClient.Create(context.Background(), ns)).To(Succeed())
		out := run([]byte(rendered), kubectl(), "--kubeconfig", kubeconfig, "apply", "--dry-run=server", "-f", "-")
		Expect(out).To(ContainSubstring("deployment.apps/kubervisor-controller-manager created (server dry run)"))
		Expect(out).To(ContainSubstring("clusterrole.rbac.authorization.k8s.io/kubervisor-manager-role created (server dry run)"))
	})

	It("lints the generated Helm chart and the API server accepts what it renders (server-side dry run), cluster-wide and namespaced", func() {
		chart := filepath.Join("..", "..", "dist", "chart")
		Expect(run(nil, repoBin("helm"), "lint", chart)).To(ContainSubstring("0 chart(s) failed"))
		kubeconfig := adminKubeconfig()
		for _, tc := range []struct {
			ns   string
			args []string
			want []string
		}{
			{"kubervisor-helm", nil, []string{"--watch-namespace=\n", "kind: ClusterRoleBinding\n", "--leader-elect=true"}},
			{"team-a", []string{"--set", "rbac.namespaced=true", "--set", "manager.logLevel=debug", "--set", "manager.replicas=2"},
				[]string{"--watch-namespace=team-a\n", "--zap-log-level=debug", "replicas: 2"}},
		} {
			rendered := run(nil, repoBin("helm"), append([]string{"template", "kubervisor", chart, "--namespace", tc.ns}, tc.args...)...)
			for _, w := range tc.want {
				Expect(rendered).To(ContainSubstring(w))
			}
			Expect(k8sClient.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: tc.ns}})).To(Succeed())
			out := run([]byte(rendered), kubectl(), "--kubeconfig", kubeconfig, "apply", "--dry-run=server", "-f", "-")
			Expect(out).To(ContainSubstring("deployment.apps/kubervisor-controller-manager created (server dry run)"))
		}
	})

	It("generates least-privilege RBAC: no update or delete on Services, pods only get/list/watch/patch", func() {
		role, err := os.ReadFile(filepath.Join("..", "..", "config", "rbac", "role.yaml"))
		Expect(err).NotTo(HaveOccurred())
		rules := parseRules(string(role))
		Expect(rules).To(HaveKeyWithValue("/services", []string{"get", "list", "watch"}))
		Expect(rules).To(HaveKeyWithValue("/pods", []string{"get", "list", "patch", "watch"}))
		Expect(rules).To(HaveKeyWithValue("/pods/eviction", []string{"create"}))
		Expect(rules).To(HaveKeyWithValue("events.k8s.io/events", []string{"create", "patch"}))
		Expect(rules).To(HaveKeyWithValue("/pods/status", []string{"patch"}), "readinessGate mode writes the pod condition, nothing else of the status")
		for resource, verbs := range rules {
			Expect(verbs).NotTo(ContainElement("*"), resource)
			if !strings.HasPrefix(resource, "breaker.kubervisor.io/") {
				Expect(verbs).NotTo(ContainElements("delete", "update"), resource)
			}
		}
	})

	It("shows the printer columns with live values in kubectl get kvs", func() {
		ns := newNamespace()
		newService(ns, "pricer", map[string]string{"app": "pricer", kvv1.LabelTraffic: kvv1.TrafficYes})
		newPod(ns, "a", map[string]string{"app": "pricer"}, true)
		newPod(ns, "b", map[string]string{"app": "pricer", kvv1.LabelTraffic: kvv1.TrafficNo}, true)
		newPod(ns, "c", map[string]string{"app": "pricer", kvv1.LabelTraffic: kvv1.TrafficPause}, true)
		newKVS(ns, "pricer", "pricer", func(k *kvv1.KubervisorService) { k.Spec.DryRun = true })
		Eventually(podCounts(ns, "pricer")).Should(Equal(kvv1.PodCounts{Managed: 3, Ready: 3, InTraffic: 1, Ejected: 1, Paused: 1}))
		Eventually(condition(ns, "pricer", kvv1.ConditionReady)).Should(HaveField("Status", metav1.ConditionTrue))

		out := run(nil, kubectl(), "--kubeconfig", adminKubeconfig(), "get", "kvs", "-n", ns)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		Expect(lines).To(HaveLen(2), out)
		Expect(strings.Fields(lines[0])).To(Equal([]string{"NAME", "SERVICE", "READY", "MANAGED", "IN-TRAFFIC", "EJECTED", "PAUSED", "DRY-RUN", "AGE"}))
		Expect(strings.Fields(lines[1])[:8]).To(Equal([]string{"pricer", "pricer", "True", "3", "1", "1", "1", "true"}))
	})
})

// parseRules reads a generated ClusterRole into "group/resource" -> verbs, without a YAML dependency on its
// exact layout beyond what controller-gen writes.
func parseRules(role string) map[string][]string {
	out := map[string][]string{}
	var groups, resources, verbs []string
	section := ""
	flush := func() {
		for _, g := range groups {
			for _, r := range resources {
				out[g+"/"+r] = append(out[g+"/"+r], verbs...)
			}
		}
		groups, resources, verbs = nil, nil, nil
	}
	for line := range strings.SplitSeq(role, "\n") {
		t := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "- apiGroups:"):
			flush()
			section = "groups"
		case t == "resources:":
			section = "resources"
		case t == "verbs:":
			section = "verbs"
		case strings.HasPrefix(t, "- "):
			v := strings.Trim(strings.TrimPrefix(t, "- "), `"`)
			switch section {
			case "groups":
				groups = append(groups, v)
			case "resources":
				resources = append(resources, v)
			case "verbs":
				verbs = append(verbs, v)
			}
		}
	}
	flush()
	return out
}
