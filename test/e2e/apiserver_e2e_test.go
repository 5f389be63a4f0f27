//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/test/cluster"
)

// An API server restart mid-incident (issue 24): while the informers re-list, the manager's status writes
// must not loop on a stale resourceVersion (a merge patch cannot conflict), a failed write waits for the work
// queue's back-off, and the incident carries on once the API server is back. Counted at the API server
// (its audit log), not in the manager.
var _ = Describe("An API server restart mid-incident", func() {
	It("settles in a few status writes, none conflicting, and ejects the pod flagged while it was away", func() {
		s := newScenario(6)
		pods := s.pods()
		d := newTestDetector()
		d.flag(pods[0])
		b := d.breaker("custom", "1s")
		b.MinPodsAvailableCount = new(int32(3))
		s.createKVS(b, func(k *kvv1.KubervisorService) { k.Spec.DefaultActivator = periodic10m() })
		Eventually(s.endpoints).Should(Equal(without(pods, pods[0])))
		Eventually(s.breaker()).Should(HaveField("EjectedPods", Equal([]string{pods[0]})))
		manager := cl.Manager()

		By("the API server restarts while the detector flags a second pod")
		d.flag(pods[0], pods[1])
		restarted := time.Now()
		away, err := cl.RestartAPIServer()
		Expect(err).NotTo(HaveOccurred())
		back := time.Now()
		Eventually(s.breaker()).WithTimeout(90 * time.Second).Should(HaveField("EjectedPods", ConsistOf(pods[0], pods[1])))
		right := time.Since(back)
		Eventually(s.endpoints).Should(Equal(without(pods, pods[0], pods[1])))
		Expect(cl.Manager()).To(BeIdenticalTo(manager))
		Expect(manager.Running()).To(BeTrue(), "the manager kept its lease through the restart")

		By("no status write after it settles; every write since the restart counted at the API server")
		writes := func() []cluster.AuditEntry {
			out, err := cl.Audited(func(e cluster.AuditEntry) bool {
				return e.ObjectRef != nil && e.ObjectRef.Namespace == s.ns && e.ObjectRef.Subresource == "status" &&
					e.User.Username == cluster.ManagerUser().Name && !e.StageTimestamp.Before(restarted)
			})
			Expect(err).NotTo(HaveOccurred())
			return out
		}
		settled := len(writes())
		Consistently(func() int { return len(writes()) }).WithTimeout(5 * time.Second).Should(Equal(settled))
		// NOTE: a kube-apiserver that has just started answers 403 until its RBAC authorizer has loaded the
		// roles (before /healthz passes): those writes are refused whatever the manager sends, and retried
		// after the work queue's back-off. A 409 would be ours: an optimistic lock on a stale resourceVersion.
		var conflicts, refused []string
		for _, e := range writes() {
			switch {
			case e.Code() == http.StatusConflict:
				conflicts = append(conflicts, e.String())
			case e.Code() >= 300:
				refused = append(refused, e.String())
			}
		}
		AddReportEntry("API server restart mid-incident", fmt.Sprintf(
			"API server away %s (SIGKILL to healthy); status right %s after it was healthy; %d status writes by the manager "+
				"since the restart: %d conflicts, %d refused otherwise %v", away.Round(time.Millisecond), right.Round(time.Millisecond),
			settled, len(conflicts), len(refused), refused))
		Expect(conflicts).To(BeEmpty(), "a merge patch of the status never conflicts on a stale resourceVersion")
		// NOTE: a few accepted writes are the pass's own news (the ejection, then the pod counts once the cache
		// shows the pod out); a write loop on a stale resourceVersion would send one every 250 ms, dozens here.
		Expect(settled-len(refused)).To(BeNumerically("<=", 5), "the status of the new ejection and the counts, no loop")
	})
})
