//go:build e2e

package e2e

import (
	"crypto/tls"
	"net/http"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubervisor/kubervisor/test/cluster"
)

// The metrics endpoint as config/default deploys it: HTTPS, behind a TokenReview and a SubjectAccessReview
// that the manager sends under the RBAC of config/rbac (metrics_auth_role.yaml), to readers bound to
// config/rbac's metrics-reader ClusterRole only (internal/metricsauth).
var _ = Describe("Secure metrics", func() {
	It("serves /metrics over HTTPS to a bound reader's token, 403 to another account, 401 without a valid token", func() {
		By("a second manager process (a follower: the suite's manager holds the lease) serving metrics the default way")
		metrics, err := cluster.FreeAddr()
		Expect(err).NotTo(HaveOccurred())
		probes, err := cluster.FreeAddr()
		Expect(err).NotTo(HaveOccurred())
		kubeconfig := cl.ManagerKubeconfigPath()
		proc, err := cluster.StartProcess("manager-secure-metrics", filepath.Join(root, "bin", "manager"),
			[]string{"--metrics-bind-address=" + metrics, "--health-probe-bind-address=" + probes, "--leader-elect",
				"--leader-election-namespace=" + cluster.ManagerNamespace, "--kubeconfig=" + kubeconfig},
			cl.LogPath("manager-secure-metrics"), []string{"KUBECONFIG=" + kubeconfig})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { Expect(proc.Stop(10 * time.Second)).To(Succeed()) })

		By("a reader bound to kubervisor-metrics-reader, and a stranger bound to nothing")
		ns := cluster.ManagerNamespace
		token := func(name string) string {
			sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
			Expect(k8s.Create(ctx, sa)).To(Succeed())
			DeferCleanup(func() { Expect(k8s.Delete(ctx, sa)).To(Succeed()) })
			tr := &authnv1.TokenRequest{}
			Expect(k8s.SubResource("token").Create(ctx, sa, tr)).To(Succeed())
			return tr.Status.Token
		}
		reader, stranger := token("e2e-scraper"), token("e2e-stranger")
		binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "e2e-scraper"},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "kubervisor-metrics-reader"},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: "e2e-scraper"}}}
		Expect(k8s.Create(ctx, binding)).To(Succeed())
		DeferCleanup(func() { Expect(k8s.Delete(ctx, binding)).To(Succeed()) })

		// The manager's certificate is self-signed (no --metrics-cert-path): what is checked here is who
		// may read, not the certificate.
		hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // a self-signed test certificate
		}}
		get := func(bearer string) (int, error) {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+metrics+"/metrics", nil)
			if err != nil {
				return 0, err
			}
			if bearer != "" {
				req.Header.Set("Authorization", "Bearer "+bearer)
			}
			resp, err := hc.Do(req)
			if err != nil {
				return 0, err
			}
			_ = resp.Body.Close() // the status is what is checked
			return resp.StatusCode, nil
		}
		Eventually(func() (int, error) { return get(reader) }).WithTimeout(time.Minute).Should(Equal(http.StatusOK),
			"the reader's token (RBAC bindings take a moment to reach the authorizer)")
		Expect(get(stranger)).To(Equal(http.StatusForbidden))
		Expect(get("")).To(Equal(http.StatusUnauthorized))
		Expect(get(reader + "x")).To(Equal(http.StatusUnauthorized))
	})
})
