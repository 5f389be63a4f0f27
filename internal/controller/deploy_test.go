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
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

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

	It("is highly available by default, and mounts the detector endpoints, in config/default and in the chart", func() {
		kustomized := run(nil, repoBin("kustomize"), "build", filepath.Join("..", "..", "config", "default"))
		charted := run(nil, repoBin("helm"), "template", "kubervisor", filepath.Join("..", "..", "dist", "chart"), "--namespace", "kubervisor-system")
		for name, rendered := range map[string]string{"config/default": kustomized, "the chart": charted} {
			var deploy appsv1.Deployment
			var pdb policyv1.PodDisruptionBudget
			for doc := range strings.SplitSeq(rendered, "\n---\n") {
				var meta metav1.TypeMeta
				Expect(yaml.Unmarshal([]byte(doc), &meta)).To(Succeed())
				switch meta.Kind {
				case "Deployment":
					Expect(yaml.Unmarshal([]byte(doc), &deploy)).To(Succeed())
				case "PodDisruptionBudget":
					Expect(yaml.Unmarshal([]byte(doc), &pdb)).To(Succeed())
				}
			}
			Expect(deploy.Spec.Replicas).To(HaveValue(Equal(int32(2))), "%s: two replicas", name)
			pod := deploy.Spec.Template
			Expect(pdb.Spec.MinAvailable).NotTo(BeNil(), "%s: a PodDisruptionBudget", name)
			Expect(pdb.Spec.MinAvailable.IntValue()).To(Equal(1), name)
			sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
			Expect(err).NotTo(HaveOccurred())
			Expect(sel.Matches(labels.Set(pod.Labels))).To(BeTrue(), "%s: the budget selects the manager's pods", name)
			Expect(pod.Spec.Affinity).NotTo(BeNil(), name)
			Expect(pod.Spec.Affinity.PodAntiAffinity).NotTo(BeNil(), "%s: the replicas spread over nodes", name)
			terms := pod.Spec.Affinity.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution
			Expect(terms).To(ContainElement(HaveField("PodAffinityTerm.TopologyKey", "kubernetes.io/hostname")), name)
			args := strings.Join(pod.Spec.Containers[0].Args, " ")
			Expect(args).To(ContainSubstring("--leader-elect"), name)
			Expect(args).NotTo(ContainSubstring("--leader-elect=false"), name)
			Expect(args).To(ContainSubstring("--detector-endpoints=/etc/kubervisor/endpoints/endpoints.yaml"), name)
			Expect(pod.Spec.Volumes).To(ContainElement(And(HaveField("Name", "detector-endpoints"),
				HaveField("Secret.SecretName", "kubervisor-detector-endpoints"), HaveField("Secret.Optional", HaveValue(BeTrue())))), name)
			Expect(pod.Spec.Containers[0].VolumeMounts).To(ContainElement(And(HaveField("MountPath", "/etc/kubervisor/endpoints"),
				HaveField("ReadOnly", BeTrue()))), name)
		}
		By("the memory limit is documented beside it with the per-pod cost, in the chart's values and config/manager")
		for _, f := range []string{filepath.Join("..", "..", "dist", "chart", "values.yaml"), filepath.Join("..", "..", "config", "manager", "manager.yaml")} {
			data, err := os.ReadFile(f)
			Expect(err).NotTo(HaveOccurred())
			Expect(string(data)).To(MatchRegexp(`(?s)KiB per pod in the cluster.{0,200}256Mi holds about 40,000 pods`), f)
			Expect(string(data)).To(ContainSubstring("GOMEMLIMIT"), f)
		}

		By("the chart renders the endpoints Secret from its values, headers' templates untouched")
		withEndpoints := run(nil, repoBin("helm"), "template", "kubervisor", filepath.Join("..", "..", "dist", "chart"),
			"--set-json", `manager.detectorEndpoints.config={"endpoints":[{"name":"mimir","url":"https://mimir:8080","headers":{"X-Scope-OrgID":"{{ .Namespace }}"}}]}`)
		Expect(withEndpoints).To(ContainSubstring("name: kubervisor-detector-endpoints"))
		Expect(withEndpoints).To(ContainSubstring("X-Scope-OrgID: '{{ .Namespace }}'"))
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
