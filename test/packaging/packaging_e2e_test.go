//go:build e2e

package packaging

import (
	"slices"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/metadata"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
)

const crdName = "kubervisorservices.breaker.kubervisor.io"

var _ = Describe("Packaging on a real cluster", Ordered, func() {
	chart := func() string { return root + "/dist/chart" }

	It("installs with helm, ejects under the chart's ServiceAccount and RBAC, and uninstalls leaving no Kubervisor object", func() {
		const release, ns = "kubervisor", "kubervisor-system"

		By("helm install, with the chart's defaults (cluster-wide RBAC, the CRD, secure metrics)")
		helm("install", release, chart(), "--namespace", ns, "--create-namespace")
		Eventually(func() error {
			return k8s.List(ctx, &kvv1.KubervisorServiceList{})
		}).Should(Succeed(), "the chart's CRD is served")

		shop := newApp("shop", 4)
		scrape(shop)
		user := startChartManager(ns, release).Name

		By("a KubervisorService becomes Ready and its failing pod leaves the Service")
		shop.createKVS()
		Eventually(shop.ready).Should(HaveField("Status", metav1.ConditionTrue))
		bad := shop.podNames()[0]
		Expect(shop.fleet.SetErrorRate(bad, 0.8)).To(Succeed())
		Eventually(shop.endpoints).ShouldNot(ContainElement(bad))
		Expect(shop.endpoints()).To(HaveLen(3))

		By("every request of the manager was authorized by the chart's RBAC")
		requests := audited(user)
		Expect(requests).NotTo(BeEmpty(), "the audit log records the chart's ServiceAccount")
		Expect(requests).NotTo(ContainElement(HaveField("ResponseStatus.Code", Or(Equal(401), Equal(403)))))
		Expect(requests).To(ContainElement(And(HaveField("Verb", "patch"), HaveField("ObjectRef.Resource", "pods"))),
			"the ejection is the chart ServiceAccount's pod patch")

		By("uninstalling as docs/user-guide.md says: the KubervisorServices first, while the manager runs")
		Expect(k8s.Delete(ctx, shop.kvs())).To(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKey{Namespace: shop.ns, Name: shop.name}, &kvv1.KubervisorService{}))
		}).Should(BeTrue(), "the finalizer releases the pods, then lets the KubervisorService go")
		Eventually(shop.endpoints).Should(HaveLen(4))
		Expect(shop.kubervisorMarks()).To(BeEmpty())

		By("helm uninstall (the Deployment goes: the manager stops)")
		Expect(cl.StopManager()).To(Succeed())
		helm("uninstall", release, "--namespace", ns)
		// NOTE: what is left is what the guide says is left: the CRD, which the chart keeps (crd.keep), with
		// the APIService the API server registers for its group while it exists, and the manager's
		// leader-election Lease, which the manager created and Helm never owned.
		Eventually(func() []string { return kubervisorObjects(ns) }).Should(ConsistOf(
			"apiservices.apiregistration.k8s.io v1alpha1."+kvv1.GroupVersion.Group,
			"customresourcedefinitions.apiextensions.k8s.io "+crdName,
			"leases.coordination.k8s.io "+ns+"/kubervisor.breaker.kubervisor.io",
			"namespaces "+ns,
		))
		Expect(helm("list", "--all-namespaces", "--short")).To(BeEmpty())

		By("the guide's last steps: delete the CRD and the namespace; nothing of Kubervisor is left")
		deleteCRD()
		Expect(k8s.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
		Eventually(func() []string { return kubervisorObjects(ns) }).WithTimeout(time.Minute).Should(BeEmpty())
		Expect(shop.endpoints()).To(HaveLen(4), "every pod still serves")
	})

	It("installs namespaced: supervises its namespace, and is granted and tries nothing in another", func() {
		const release, teamA, teamB = "kubervisor-a", "team-a", "team-b"
		a := newApp(teamA, 4)
		b := newApp(teamB, 4)
		scrape(a, b)

		By("helm install in team-a with rbac.namespaced (metrics over HTTP: the secure endpoint needs cluster-wide reviews)")
		helm("install", release, chart(), "--namespace", teamA, "--set", "rbac.namespaced=true", "--set", "metrics.secure=false")
		Eventually(func() error { return k8s.List(ctx, &kvv1.KubervisorServiceList{}) }).Should(Succeed())
		var crbs rbacv1.ClusterRoleBindingList
		Expect(k8s.List(ctx, &crbs, client.MatchingLabels{"app.kubernetes.io/instance": release})).To(Succeed())
		Expect(crbs.Items).To(BeEmpty(), "a namespaced release binds nothing cluster-wide")
		var roles rbacv1.RoleList
		Expect(k8s.List(ctx, &roles, client.InNamespace(teamA), client.MatchingLabels{"app.kubernetes.io/instance": release})).To(Succeed())
		Expect(roles.Items).NotTo(BeEmpty())

		args, _ := chartContainer(teamA, release)
		Expect(args).To(ContainElement("--watch-namespace="+teamA), "the chart confines the manager to its namespace")
		sa := startChartManager(teamA, release)

		By("a KubervisorService in each namespace, a failing pod in each")
		a.createKVS()
		b.createKVS()
		badA, badB := a.podNames()[0], b.podNames()[0]
		Expect(a.fleet.SetErrorRate(badA, 0.8)).To(Succeed())
		Expect(b.fleet.SetErrorRate(badB, 0.8)).To(Succeed())
		Eventually(a.ready).Should(HaveField("Status", metav1.ConditionTrue))
		Eventually(a.endpoints).ShouldNot(ContainElement(badA))

		By("team-b is not touched: no finalizer, no status, its failing pod serves, no pod is marked")
		Consistently(func(g Gomega) {
			k := b.kvs()
			g.Expect(k.Finalizers).To(BeEmpty())
			g.Expect(k.Status.Conditions).To(BeEmpty())
			g.Expect(k.Status.Breakers).To(BeEmpty())
			g.Expect(b.endpoints()).To(HaveLen(4))
			g.Expect(b.kubervisorMarks()).To(BeEmpty())
		}).WithTimeout(5 * time.Second).Should(Succeed())

		By("the chart's Role grants in team-a what it grants, and none of it in team-b (SubjectAccessReview)")
		checked := 0
		for _, role := range roles.Items {
			for _, rule := range role.Rules {
				for _, group := range rule.APIGroups {
					for _, res := range rule.Resources {
						for _, verb := range rule.Verbs {
							Expect(allowed(sa.Name, sa.Groups, teamA, group, res, verb)).To(BeTrue(), "%s %s/%s in %s", verb, group, res, teamA)
							Expect(allowed(sa.Name, sa.Groups, teamB, group, res, verb)).To(BeFalse(), "%s %s/%s in %s", verb, group, res, teamB)
							checked++
						}
					}
				}
			}
		}
		Expect(checked).To(BeNumerically(">", 10))
		AddReportEntry("SubjectAccessReviews per namespace", checked)

		By("the audit log: every request of the manager is in team-a or about no namespaced object, and none is refused")
		requests := audited(sa.Name)
		Expect(requests).NotTo(BeEmpty())
		var outside []string
		for _, e := range requests {
			if e.ObjectRef != nil && e.ObjectRef.Namespace != teamA {
				outside = append(outside, e.String())
			}
		}
		Expect(outside).To(BeEmpty(), "requests outside team-a")
		Expect(requests).NotTo(ContainElement(HaveField("ResponseStatus.Code", Or(Equal(401), Equal(403)))))
		AddReportEntry("namespaced manager requests", len(requests))

		By("uninstall: team-a's KubervisorService first; team-b's, never supervised, goes with the CRD")
		Expect(k8s.Delete(ctx, a.kvs())).To(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKey{Namespace: a.ns, Name: a.name}, &kvv1.KubervisorService{}))
		}).Should(BeTrue())
		Eventually(a.endpoints).Should(HaveLen(4))
		Expect(cl.StopManager()).To(Succeed())
		helm("uninstall", release, "--namespace", teamA)
		deleteCRD()
		Expect(k8s.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: teamB}})).To(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKey{Name: teamB}, &corev1.Namespace{}))
		}).WithTimeout(time.Minute).Should(BeTrue(), "team-b goes: nothing of Kubervisor holds it (no finalizer)")
	})
})

// allowed asks the API server whether user (with groups) may do verb on group/resource in namespace.
func allowed(user string, groups []string, namespace, group, resource, verb string) bool {
	res, sub, _ := strings.Cut(resource, "/")
	r := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: user, Groups: groups,
		ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: namespace, Group: group, Resource: res, Subresource: sub, Verb: verb},
	}}
	Expect(k8s.Create(ctx, r)).To(Succeed())
	return r.Status.Allowed
}

func deleteCRD() {
	md, err := metadata.NewForConfig(cl.Config())
	Expect(err).NotTo(HaveOccurred())
	crds := md.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"})
	Expect(crds.Delete(ctx, crdName, metav1.DeleteOptions{})).To(Succeed())
	Eventually(func() bool {
		_, err := crds.Get(ctx, crdName, metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	}).WithTimeout(time.Minute).Should(BeTrue())
}

// kubervisorObjects lists every object of every listable resource of the cluster (events and the
// harness's own Node apart) and returns those that are Kubervisor's: named kubervisor…, in namespace ns,
// labelled app.kubernetes.io/name=kubervisor, or of the API group breaker.kubervisor.io.
func kubervisorObjects(ns string) []string {
	dc, err := discovery.NewDiscoveryClientForConfig(cl.Config())
	Expect(err).NotTo(HaveOccurred())
	lists, err := dc.ServerPreferredResources()
	Expect(discovery.IsGroupDiscoveryFailedError(err) || err == nil).To(BeTrue(), "discovery: %v", err)
	md, err := metadata.NewForConfig(cl.Config())
	Expect(err).NotTo(HaveOccurred())
	var out []string
	for _, l := range lists {
		gv, err := schema.ParseGroupVersion(l.GroupVersion)
		Expect(err).NotTo(HaveOccurred())
		for _, r := range l.APIResources {
			if !slices.Contains(r.Verbs, "list") || r.Name == "events" {
				continue
			}
			items, err := md.Resource(gv.WithResource(r.Name)).List(ctx, metav1.ListOptions{})
			if apierrors.IsNotFound(err) || apierrors.IsMethodNotSupported(err) {
				continue
			}
			Expect(err).NotTo(HaveOccurred(), "listing %s", r.Name)
			kind := r.Name
			if gv.Group != "" {
				kind += "." + gv.Group
			}
			for _, o := range items.Items {
				if r.Name == "nodes" && o.Name == cl.NodeName() {
					continue
				}
				if strings.Contains(o.Name, "kubervisor") || o.Namespace == ns || gv.Group == kvv1.GroupVersion.Group ||
					o.Labels["app.kubernetes.io/name"] == "kubervisor" {
					name := o.Name
					if o.Namespace != "" {
						name = o.Namespace + "/" + o.Name
					}
					out = append(out, kind+" "+name)
				}
			}
		}
	}
	slices.Sort(out)
	return out
}
