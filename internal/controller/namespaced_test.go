package controller_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// config/namespaced (SPEC §12): the manager's identity is granted what it needs in its own namespace and
// nothing anywhere else, as the API server's authorizer answers it.
var _ = Describe("The namespaced install", func() {
	It("grants the manager the generated rules in its namespace only, and nothing cluster-wide", func() {
		nsA, nsB := newNamespace(), newNamespace()
		rendered := run(nil, repoBin("kustomize"), "build", filepath.Join("..", "..", "config", "namespaced"))
		Expect(rendered).NotTo(ContainSubstring("kind: ClusterRole"))
		Expect(rendered).NotTo(ContainSubstring("kind: Namespace"), "the supervised namespace is the user's, never created or deleted by the install")
		Expect(rendered).To(ContainSubstring("--watch-namespace=$(POD_NAMESPACE)"))
		rendered = strings.ReplaceAll(rendered, "namespace: my-app", "namespace: "+nsA)

		By("the Role carries exactly the rules generated for the ClusterRole of config/default")
		role, err := os.ReadFile(filepath.Join("..", "..", "config", "rbac", "role.yaml"))
		Expect(err).NotTo(HaveOccurred())
		var managerRole string
		for doc := range strings.SplitSeq(rendered, "\n---\n") {
			if strings.Contains(doc, "\nkind: Role\n") && strings.Contains(doc, "\n  name: kubervisor-manager-role\n") {
				managerRole = doc
			}
		}
		Expect(managerRole).NotTo(BeEmpty(), rendered)
		Expect(parseRules(managerRole)).To(Equal(parseRules(string(role))))

		out := run([]byte(rendered), kubectl(), "--kubeconfig", adminKubeconfig(), "apply", "-f", "-")
		Expect(out).To(ContainSubstring("role.rbac.authorization.k8s.io/kubervisor-manager-role created"))

		cs, err := kubernetes.NewForConfig(cfg)
		Expect(err).NotTo(HaveOccurred())
		sa := "system:serviceaccount:" + nsA + ":kubervisor-controller-manager"
		can := func(ns, verb, group, resource, sub string) bool {
			r, err := cs.AuthorizationV1().SubjectAccessReviews().Create(context.Background(), &authorizationv1.SubjectAccessReview{
				Spec: authorizationv1.SubjectAccessReviewSpec{User: sa, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + nsA},
					ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: verb, Group: group, Resource: resource, Subresource: sub}},
			}, metav1.CreateOptions{})
			Expect(err).NotTo(HaveOccurred())
			return r.Status.Allowed
		}
		for _, a := range [][4]string{
			{"patch", "", "pods", ""}, {"watch", "", "pods", ""}, {"create", "", "pods", "eviction"}, {"patch", "", "pods", "status"},
			{"list", "", "services", ""}, {"create", "events.k8s.io", "events", ""}, {"update", "coordination.k8s.io", "leases", ""},
			{"update", "breaker.kubervisor.io", "kubervisorservices", "status"},
		} {
			Expect(can(nsA, a[0], a[1], a[2], a[3])).To(BeTrue(), "in its namespace: %v", a)
			Expect(can(nsB, a[0], a[1], a[2], a[3])).To(BeFalse(), "in another namespace: %v", a)
			Expect(can("", a[0], a[1], a[2], a[3])).To(BeFalse(), "cluster-wide: %v", a)
		}
	})
})
