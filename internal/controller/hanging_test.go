package controller_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/controller"
)

// hangingDetector is a custom detector service that holds every query until the test releases it, then
// flags pods. It counts the queries it got and those still open: a query is open until it is answered or
// its client gives up on it (its context ends, as at the detector's timeout).
type hangingDetector struct {
	server      *httptest.Server
	release     chan struct{}
	releaseOnce sync.Once
	pods        []string

	mu        sync.Mutex
	got, open int
}

func newHangingDetector(pods ...string) *hangingDetector {
	d := &hangingDetector{release: make(chan struct{}), pods: pods}
	d.server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.mu.Lock()
		d.got++
		d.open++
		d.mu.Unlock()
		defer func() {
			d.mu.Lock()
			d.open--
			d.mu.Unlock()
		}()
		select {
		case <-d.release:
			_ = json.NewEncoder(w).Encode(map[string][]string{"pods": d.pods})
		case <-r.Context().Done():
		}
	}))
	return d
}

// answer releases every query, held or to come.
func (d *hangingDetector) answer() { d.releaseOnce.Do(func() { close(d.release) }) }

func (d *hangingDetector) close() {
	d.answer()
	d.server.Close()
}

// queries returns the queries received and those still open.
func (d *hangingDetector) queries() (got, open int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.got, d.open
}

// openQueries is the number of queries still open, for Eventually.
func (d *hangingDetector) openQueries() int {
	_, open := d.queries()
	return open
}

var _ = Describe("A detector that hangs", func() {
	It("holds the only worker for no more than a moment: another KubervisorService is evaluated meanwhile, "+
		"and the answer is judged when it comes", func() {
		ns := newNamespace()
		By("a manager with one KubervisorService worker, for this namespace only")
		stopManager()
		<-managerDone
		startManagerWith(ns, controller.Options{MaxConcurrentEvaluations: 1})
		DeferCleanup(restartManager)
		hanging := newHangingDetector("s1")
		DeferCleanup(hanging.close)

		By("A's detector holds its query (its timeout is 10s)")
		newService(ns, "slow", map[string]string{"app": "slow", kvv1.LabelTraffic: kvv1.TrafficYes})
		for _, p := range []string{"s0", "s1", "s2"} {
			newPod(ns, p, map[string]string{"app": "slow"}, true)
		}
		newKVS(ns, "a", "slow", func(k *kvv1.KubervisorService) {
			k.Spec.Breakers[0].EvaluationPeriod = ptrIntOrString("1m")
			k.Spec.Breakers[0].CustomService.URL = hanging.server.URL + "/anomalies"
		})
		Eventually(hanging.openQueries).Should(Equal(1))

		By("B's healthy detector flags p1: B ejects it while A's query is still open")
		newService(ns, "pricer", map[string]string{"app": "pricer", kvv1.LabelTraffic: kvv1.TrafficYes})
		for _, p := range []string{"p0", "p1", "p2"} {
			newPod(ns, p, map[string]string{"app": "pricer"}, true)
		}
		detectors.set(ns, "b", "b", "p1")
		newKVS(ns, "b", "pricer", nil)
		Eventually(podLabels(ns, "p1")).Should(HaveKeyWithValue(kvv1.LabelTraffic, kvv1.TrafficNo))
		got, open := hanging.queries()
		Expect(open).To(Equal(1), "A's query was no longer open when B ejected p1: B waited for A's query to time out")
		Expect(got).To(Equal(1), "A's detector was asked again while its query was in flight")
		Expect(breakerStatus(ns, "a", "b")()).To(HaveField("LastResult", BeEmpty()), "A was judged without an answer")

		By("A's detector answers: A judges the answer and ejects s1")
		hanging.answer()
		Eventually(podLabels(ns, "s1")).Should(HaveKeyWithValue(kvv1.LabelTraffic, kvv1.TrafficNo))
		Eventually(breakerStatus(ns, "a", "b")).Should(And(HaveField("LastResult", kvv1.ResultOK),
			HaveField("AnomalousPods", []string{"s1"})))
		got, _ = hanging.queries()
		Expect(got).To(Equal(1), "A's detector was asked again")
	})
})
