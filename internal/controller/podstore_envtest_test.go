package controller_test

import (
	"context"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/controller"
)

// A pass reads its pods from the pod informer's indexer, through the index names and keys of
// controller-runtime's IndexField (podstore.go). On a real cache, the store must give exactly what a List
// gives, and what the pods are: an upgrade that renames the indexes or changes their keys fails here.
var _ = Describe("The pass's pod store", func() {
	ctx := context.Background()

	It("agrees with the cache's List, on a cluster-wide cache and (listing) on a namespaced one", func() {
		// The same fleet in two namespaces, each supervised by its KubervisorService kvs (the manager adopts
		// the pods: kubervisor/name=kvs); the store must keep the namespaces apart.
		ns := newNamespace()
		for _, n := range []string{ns, newNamespace()} {
			newService(n, "web", map[string]string{"app": "web", "tier": "front"})
			newKVS(n, "kvs", "web", nil)
			newPod(n, "web-0", map[string]string{"app": "web", "tier": "front"}, true)
			newPod(n, "web-1", map[string]string{"app": "web", "tier": "front"}, true)
			newPod(n, "half", map[string]string{"app": "web", "tier": "back"}, true) // one pair of the selector only
			newPod(n, "db", map[string]string{"app": "db"}, true)
		}
		selector := map[string]string{"app": "web", "tier": "front", kvv1.LabelTraffic: kvv1.TrafficYes}
		// A younger rival naming the same Service, and one naming another Service: the claims a pass reads are
		// kvs then rival, in ns only.
		newKVS(ns, "rival", "web", nil)
		newKVS(ns, "elsewhere", "db", nil)
		web := &corev1.Service{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, web)).To(Succeed())

		for _, tc := range []struct {
			namespace string
			hasStore  bool
		}{{"", true}, {ns, false}} {
			cctx, cancel := context.WithCancel(ctx)
			opts := controller.CacheOptions(tc.namespace, nil, nil)
			opts.Scheme = scheme
			c, err := cache.New(cfg, opts)
			Expect(err).NotTo(HaveOccurred())
			Expect(controller.SetupIndexes(cctx, c)).To(Succeed())
			go func() { defer GinkgoRecover(); Expect(c.Start(cctx)).To(Succeed()) }()
			Expect(c.WaitForCacheSync(cctx)).To(BeTrue())
			Eventually(func(g Gomega) {
				si, li, ss, ls, hasStore, err := controller.PodReads(cctx, c, ns, controller.IndexOwner, "kvs", selector)
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(hasStore).To(Equal(tc.hasStore))
				g.Expect(li).To(Equal([]string{"web-0", "web-1"}))
				g.Expect(ls).To(Equal([]string{"web-0", "web-1"}))
				if tc.hasStore {
					g.Expect(si).To(Equal(li))
					g.Expect(ss).To(Equal(ls))
				}
				sc, lc, hasStore, err := controller.ClaimReads(cctx, c, web)
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(hasStore).To(Equal(tc.hasStore))
				g.Expect(lc).To(Equal([]string{"kvs", "rival"}))
				if tc.hasStore {
					g.Expect(sc).To(Equal(lc))
				}
			}).Should(Succeed())
			cancel()
		}
	})
})

// What the pod cache holds, through a real informer: every pod, those Kubervisor has no part in as stubs
// (TrimPod); with a pod selector (--pod-selector), only the pods it selects.
var _ = Describe("The pod cache", func() {
	ctx := context.Background()

	It("stubs the pods Kubervisor has no part in, and holds only the selected pods under --pod-selector", func() {
		ns := newNamespace()
		annotated := func(name string, labels map[string]string) {
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels,
					Annotations: map[string]string{"sidecar.example/status": "injected"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:1"}}},
			}
			Expect(k8sClient.Create(ctx, pod)).To(Succeed())
		}
		annotated("plain", map[string]string{"app": "other"})
		annotated("labelled", map[string]string{"app": "other", kvv1.LabelTraffic: kvv1.TrafficYes})

		for _, tc := range []struct {
			selector string
			want     map[string]bool // pod -> kept in full (its annotations)
		}{
			{"", map[string]bool{"plain": false, "labelled": true}},
			{kvv1.LabelTraffic, map[string]bool{"labelled": true}},
		} {
			cctx, cancel := context.WithCancel(ctx)
			sel, err := labels.Parse(tc.selector)
			Expect(err).NotTo(HaveOccurred())
			opts := controller.CacheOptions("", nil, sel)
			opts.Scheme = scheme
			c, err := cache.New(cfg, opts)
			Expect(err).NotTo(HaveOccurred())
			go func() { defer GinkgoRecover(); Expect(c.Start(cctx)).To(Succeed()) }()
			Expect(c.WaitForCacheSync(cctx)).To(BeTrue())
			Eventually(func(g Gomega) {
				var list corev1.PodList
				g.Expect(c.List(cctx, &list, client.InNamespace(ns))).To(Succeed())
				got := map[string]bool{}
				for _, p := range list.Items {
					got[p.Name] = len(p.Annotations) > 0
					g.Expect(p.Labels).To(HaveKeyWithValue("app", "other"), "a stub keeps the labels that decide adoption")
					g.Expect(p.ResourceVersion).NotTo(BeEmpty(), "a stub keeps the resourceVersion of the adoption patch")
				}
				g.Expect(got).To(Equal(tc.want), "selector %q", tc.selector)
			}).Should(Succeed())
			cancel()
		}
	})
})
