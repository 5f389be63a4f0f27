//go:build e2e

package e2e

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/types"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/test/cluster"
)

// Chaos on the detector's backend (issue 26): Prometheus killed mid-incident, slower than the evaluation
// period, answering garbage. Whatever it does, no pod is ejected because of it, the status says what is wrong,
// the activator keeps its schedule, and evaluation resumes within a period once Prometheus is healthy again.
// The specs assert counts and states; the timings they measure are printed (GinkgoWriter and report entries).
var _ = Describe("Chaos on the detector's backend", func() {
	It("ejects nobody while Prometheus is SIGKILLed mid-incident, restores the pod due back meanwhile, and evaluates again once it is back", func() {
		mgr := watchManager()
		s := newScenario(6)
		deleteNamespaceLater(s)
		const period, activatorPeriod = 2 * time.Second, 8 * time.Second
		b := s.continuous()
		b.EvaluationPeriod = intOrString(period.String())
		s.createKVS(b, func(k *kvv1.KubervisorService) {
			k.Spec.DefaultActivator = &kvv1.ActivatorStrategy{Mode: kvv1.ActivatorModePeriodic, Period: intOrString(activatorPeriod.String())}
		})
		pods := s.pods()
		h := recordHistory(s)

		By("a pod deviates and is ejected")
		Expect(s.fleet.SetDeviation(pods[0], 4)).To(Succeed())
		s.timeToLeave(pods[0], time.Now())
		due := s.state(pods[0]).BreakAt.Add(activatorPeriod)

		By("Prometheus is SIGKILLed; a second pod deviates while it is down")
		Expect(prom.Kill()).To(Succeed())
		killed := time.Now()
		DeferCleanup(func() {
			if !prom.Running() {
				Expect(prom.Start(ctx)).To(Succeed())
			}
		})
		errorsBefore := kvsMetric(s, "kubervisor_detector_errors_total")
		Expect(s.fleet.SetDeviation(pods[1], 4)).To(Succeed())
		Eventually(s.condition(kvv1.ConditionReady)).Should(And(
			HaveField("Status", metav1.ConditionFalse), HaveField("Reason", kvv1.ReasonDetectorError),
			HaveField("Message", ContainSubstring("querying Prometheus"))))
		Eventually(func() []eventsv1.Event { return kvsEvents(s, kvv1.EventDetectorFailed) }).ShouldNot(BeEmpty())

		By("the ejected pod is back in traffic when due, Prometheus still down")
		Eventually(s.traffic(pods[0])).WithTimeout(time.Minute).Should(Equal(kvv1.TrafficYes))
		restored := s.state(pods[0]).RestoredAt
		// Down for more than two evaluation periods in all, and one more period after the restore: a working
		// detector would eject both deviating pods meanwhile.
		time.Sleep(time.Until(latest(killed.Add(3*period), time.Now().Add(period))))
		Expect(prom.Running()).To(BeFalse())
		for _, p := range pods {
			Expect(s.traffic(p)()).To(Equal(kvv1.TrafficYes), "nobody ejected while Prometheus is down")
		}
		failed := kvsMetric(s, "kubervisor_detector_errors_total") - errorsBefore

		By("Prometheus starts again on the same port and data directory")
		restarting := time.Now()
		down := restarting.Sub(killed)
		readyAt := make(chan time.Time, 1)
		go func() {
			if cluster.WaitForHTTP(ctx, prom.URL()+"/-/ready", time.Minute) == nil {
				readyAt <- time.Now()
			}
		}()
		Expect(prom.Start(ctx)).To(Succeed())
		var healthy time.Time
		Eventually(readyAt).Should(Receive(&healthy))
		Eventually(s.breaker()).WithTimeout(time.Minute).Should(HaveField("LastResult", Not(HavePrefix(kvv1.ResultErrorPrefix))))
		Eventually(s.condition(kvv1.ConditionReady)).Should(HaveField("Status", metav1.ConditionTrue))
		Eventually(s.endpoints).WithTimeout(time.Minute).Should(Equal(without(pods, pods[0], pods[1])), "both deviating pods ejected")
		h.stop()

		var downEjections, downRestores []string
		h.eachTrafficChange(killed, pods, kvv1.TrafficYes, kvv1.TrafficNo, func(at time.Time, pod string, _ map[string]*corev1.Pod) {
			if at.Before(healthy) {
				downEjections = append(downEjections, pod)
			}
		})
		h.eachRestore(killed, pods, func(at time.Time, pod string, _ map[string]*corev1.Pod) {
			if at.Before(healthy) {
				downRestores = append(downRestores, pod)
			}
		})
		resumedSeen, resumedEval := firstResult(h, b.Name, restarting, func(r string) bool { return !strings.HasPrefix(r, kvv1.ResultErrorPrefix) })
		figures := fmt.Sprintf("Prometheus down %s (SIGKILL to restart), %.0f failed evaluations (period %s), %d ejections and %d restorations "+
			"while down; the pod due back at %s restored %s after its due time; Prometheus ready %s after its restart; the next successful "+
			"evaluation seen in status %s after Prometheus was ready (its lastEvaluationTime, to the second: %s)",
			down.Round(time.Millisecond), failed, period, len(downEjections), len(downRestores), due.Format("15:04:05.000"),
			restored.Sub(due).Round(time.Millisecond), healthy.Sub(restarting).Round(time.Millisecond),
			resumedSeen.Sub(healthy).Round(time.Millisecond), resumedEval.Sub(healthy).Round(time.Second))
		AddReportEntry("Prometheus killed mid-incident", figures)
		GinkgoWriter.Println(figures)

		Expect(downEjections).To(BeEmpty(), "no pod ejected while Prometheus is down")
		Expect(downRestores).To(Equal([]string{pods[0]}), "the pod due back was restored while Prometheus was down")
		Expect(restored).To(BeTemporally(">=", due), "not before its time")
		Expect(restored).To(BeTemporally("<", restarting), "restored while Prometheus was down")
		Expect(failed).To(BeNumerically(">=", 2), "every evaluation while Prometheus is down fails")
		Expect(resumedSeen).NotTo(BeZero())
		mgr.expectHealthy()
	})

	It("ejects nothing on answers slower than the period or the detector's timeout, holds one query per breaker at a time, and recovers once they are fast again", func() {
		mgr := watchManager()
		s := newScenario(4)
		deleteNamespaceLater(s)
		proxy := newPromProxy(prom.URL())
		const period = 2 * time.Second
		// Two breakers behind the proxy: one through an endpoint whose timeout (1s) is under the period, one
		// through its own address, whose timeout is the period (2s).
		writeEndpoints(fmt.Sprintf("endpoints:\n- name: slow\n  url: %s\n  timeout: 1s\n", proxy.srv.URL))
		dev := s.continuous()
		dev.EvaluationPeriod = intOrString(period.String())
		dev.ContinuousValueDeviation.PrometheusService, dev.ContinuousValueDeviation.Endpoint = "", "slow"
		errs := s.discrete()
		errs.EvaluationPeriod = intOrString(period.String())
		errs.DiscreteValueOutOfList.PrometheusService = proxy.srv.URL
		s.createKVS(dev, func(k *kvv1.KubervisorService) {
			k.Spec.Breakers = append(k.Spec.Breakers, errs)
			k.Spec.DefaultActivator = periodic10m()
		})
		pods := s.pods()
		h := recordHistory(s)
		timedOut := HaveField("LastResult", ContainSubstring("no answer within the timeout"))

		By("answers 3s late, over the period (2s) and both timeouts (1s, 2s): both breakers time out")
		slowFrom := time.Now()
		proxy.setDelay(3 * time.Second)
		Eventually(s.breakerNamed(dev.Name)).Should(timedOut)
		Eventually(s.breakerNamed(errs.Name)).Should(timedOut)
		Eventually(s.condition(kvv1.ConditionReady)).Should(And(
			HaveField("Status", metav1.ConditionFalse), HaveField("Reason", kvv1.ReasonDetectorError)))
		By("a pod fails both ways; Prometheus sees it, its late answers say it, and nobody is ejected")
		Expect(s.fleet.SetDeviation(pods[0], 4)).To(Succeed())
		Expect(s.fleet.SetErrorRate(pods[0], 0.8)).To(Succeed())
		Eventually(badRatio(prom, s.ns, pods[0])).Should(BeNumerically(">", 0.3), "Prometheus sees the fault")
		Consistently(s.endpoints).WithTimeout(3 * period).Should(Equal(pods))
		Expect(s.breakerNamed(dev.Name)()).To(timedOut)
		Expect(s.breakerNamed(errs.Name)()).To(timedOut)

		By("answers 1.5s late, within the period: over the endpoint's timeout (1s), under the other breaker's (2s)")
		withinFrom := time.Now()
		proxy.setDelay(1500 * time.Millisecond)
		Eventually(s.endpoints).Should(Equal(without(pods, pods[0])), "the breaker whose answer comes in time ejects the faulty pod")
		Expect(s.pod(pods[0]).Labels).To(HaveKeyWithValue(kvv1.LabelStrategy, errs.Name))
		Consistently(s.breakerNamed(dev.Name)).WithTimeout(2 * period).Should(timedOut)

		By("the delay removed: the timed-out breaker evaluates again")
		fastFrom := time.Now()
		proxy.setDelay(0)
		Eventually(s.breakerNamed(dev.Name)).Should(HaveField("LastResult", kvv1.ResultOK))
		Eventually(s.condition(kvv1.ConditionReady)).Should(HaveField("Status", metav1.ConditionTrue))
		Consistently(s.endpoints).WithTimeout(2 * period).Should(Equal(without(pods, pods[0])))
		h.stop()

		ejections := map[string][]string{}
		h.eachTrafficChange(slowFrom, pods, kvv1.TrafficYes, kvv1.TrafficNo, func(at time.Time, pod string, state map[string]*corev1.Pod) {
			phase := "over the period"
			switch {
			case !at.Before(fastFrom):
				phase = "fast again"
			case !at.Before(withinFrom):
				phase = "within the period"
			}
			ejections[phase] = append(ejections[phase], pod+" by "+state[pod].Labels[kvv1.LabelStrategy])
		})
		recovered, _ := firstResult(h, dev.Name, fastFrom, func(r string) bool { return r == kvv1.ResultOK })
		perBreaker, total := proxy.maxInFlight()
		slow, within := proxy.between(slowFrom, withinFrom), proxy.between(withinFrom, fastFrom)
		figures := fmt.Sprintf("over the period (3s late, %s): %s, ejections %v; within the period (1.5s late, %s): %s, ejections %v; "+
			"fast again: ejections %v, the timed-out breaker OK in status %s after the delay was removed; most queries held at once: "+
			"%d per breaker, %d in all",
			withinFrom.Sub(slowFrom).Round(time.Second), slow, ejections["over the period"], fastFrom.Sub(withinFrom).Round(time.Second), within,
			ejections["within the period"], ejections["fast again"], recovered.Sub(fastFrom).Round(time.Millisecond), maxOf(perBreaker), total)
		AddReportEntry("Prometheus slower than the evaluation period", figures)
		GinkgoWriter.Println(figures)

		Expect(ejections["over the period"]).To(BeEmpty(), "no ejection on answers that came too late")
		Expect(ejections["within the period"]).To(Equal([]string{pods[0] + " by " + errs.Name}), "one ejection, by the breaker answered in time")
		Expect(ejections["fast again"]).To(BeEmpty())
		Expect(perBreaker).To(HaveLen(2), "both breakers queried through the proxy")
		Expect(maxOf(perBreaker)).To(Equal(1), "never two queries of one breaker at once")
		Expect(slow.abandoned).To(BeNumerically(">=", 4), "the late answers were given up by the manager")
		Expect(recovered).NotTo(BeZero())
		mgr.expectHealthy()
	})

	It("ejects nobody on garbage and partial answers, says what is wrong each time, and evaluates normally once the answers are sound", func() {
		mgr := watchManager()
		s := newScenario(4)
		deleteNamespaceLater(s)
		proxy := newPromProxy(prom.URL())
		b := s.discrete()
		b.DiscreteValueOutOfList.PrometheusService = proxy.srv.URL
		s.createKVS(b, func(k *kvv1.KubervisorService) { k.Spec.DefaultActivator = periodic10m() })
		pods := s.pods()
		h := recordHistory(s)
		garbageFrom := time.Now()

		// Each answer would flag pods[0] (100 answers 500 against 1 answer 200) if it were read as a vector.
		series := func(labels string) string {
			return fmt.Sprintf(`{"metric":{%s},"value":[%d,"100"]}`, labels, time.Now().Unix())
		}
		podSeries := func(pod, code string) string {
			return series(fmt.Sprintf(`"namespace":%q,"pod":%q,"code":%q`, s.ns, pod, code))
		}
		vector := func(series ...string) string {
			return `{"status":"success","data":{"resultType":"vector","result":[` + strings.Join(series, ",") + `]}}`
		}
		flagging := vector(podSeries(pods[0], "500"), strings.Replace(podSeries(pods[0], "200"), `"100"`, `"1"`, 1))
		const jsonType = "application/json"
		modes := []struct {
			fault promFault
			// result is what the breaker's status says (it differs from the previous mode's), ready whether Ready
			// stays True.
			result types.GomegaMatcher
			ready  bool
		}{
			{promFault{"not JSON", http.StatusOK, "text/html", "<html><body><h1>502 Bad Gateway</h1></body></html>"},
				And(HavePrefix(kvv1.ResultErrorPrefix), ContainSubstring(`the answer (HTTP 200) is not JSON: 50 bytes beginning "<html>`)), false},
			{promFault{"truncated JSON", http.StatusOK, jsonType, flagging[:len(flagging)*2/3]},
				And(HavePrefix(kvv1.ResultErrorPrefix), ContainSubstring("the answer (HTTP 200) is not complete JSON")), false},
			{promFault{"a vector naming unknown pods", http.StatusOK, jsonType, vector(podSeries("ghost-0", "500"), podSeries("ghost-1", "500"))},
				Equal(kvv1.ResultNoData), true},
			{promFault{"a vector missing the pod label", http.StatusOK, jsonType,
				vector(podSeries(pods[0], "500"), series(fmt.Sprintf(`"namespace":%q,"code":"500"`, s.ns)))},
				ContainSubstring(`has no label "pod"`), false},
			{promFault{"HTTP 500", http.StatusInternalServerError, jsonType, flagging}, ContainSubstring("server error: 500"), false},
		}
		var report []string
		lastResult := func() string { return s.breaker()().LastResult }
		prev := lastResult()
		for _, m := range modes {
			By("Prometheus's answers replaced by " + m.fault.name)
			from := time.Now()
			proxy.setFault(&m.fault)
			Eventually(lastResult).Should(And(m.result, Not(Equal(prev))))
			prev = lastResult()
			ready := metav1.ConditionFalse
			if m.ready {
				ready = metav1.ConditionTrue
			}
			Eventually(s.condition(kvv1.ConditionReady)).Should(HaveField("Status", ready))
			Consistently(func(g Gomega) {
				g.Expect(s.endpoints()).To(Equal(pods))
				g.Expect(lastResult()).To(Equal(prev))
			}).WithTimeout(3 * time.Second).Should(Succeed())
			st := s.breaker()()
			answered := proxy.between(from, time.Now())
			report = append(report, fmt.Sprintf("%s: %d answers, Ready=%s, ignoredSamples %d, lastResult %q", m.fault.name,
				answered.faults[m.fault.name], s.condition(kvv1.ConditionReady)().Status, st.IgnoredSamples, st.LastResult))
			Expect(answered.faults[m.fault.name]).To(BeNumerically(">=", 2), "the breaker kept asking")
		}
		By("sound answers again: normal evaluation, and a real fault is ejected")
		soundFrom := time.Now()
		proxy.setFault(nil)
		Eventually(s.breaker()).Should(HaveField("LastResult", kvv1.ResultOK))
		Eventually(s.condition(kvv1.ConditionReady)).Should(HaveField("Status", metav1.ConditionTrue))
		Expect(s.endpoints()).To(Equal(pods))
		Expect(s.fleet.SetErrorRate(pods[1], 0.8)).To(Succeed())
		s.timeToLeave(pods[1], time.Now())
		h.stop()

		var ejected []string
		h.eachTrafficChange(garbageFrom, pods, kvv1.TrafficYes, kvv1.TrafficNo, func(at time.Time, pod string, _ map[string]*corev1.Pod) {
			ejected = append(ejected, pod)
		})
		var failures []string
		for _, e := range kvsEvents(s, kvv1.EventDetectorFailed) {
			failures = append(failures, e.Note)
		}
		recovered, _ := firstResult(h, b.Name, soundFrom, func(r string) bool { return r == kvv1.ResultOK })
		report = append(report, fmt.Sprintf("sound answers: OK in status %s later; ejections since the first garbage: %v; "+
			"%d DetectorFailed events:\n  %s", recovered.Sub(soundFrom).Round(time.Millisecond), ejected, len(failures),
			strings.Join(failures, "\n  ")))
		AddReportEntry("Prometheus answering garbage", strings.Join(report, "\n"))
		GinkgoWriter.Println(strings.Join(report, "\n"))

		Expect(ejected).To(Equal([]string{pods[1]}), "only the real fault, once the answers are sound")
		Expect(failures).To(HaveLen(4), "one Warning event per kind of bad answer")
		mgr.expectHealthy()
	})
})

// managerWatch remembers the manager process and the length of its log when a spec starts, to check when it
// ends that the manager neither restarted nor panicked meanwhile.
type managerWatch struct {
	proc    *cluster.Process
	logFrom int
}

func watchManager() managerWatch {
	return managerWatch{proc: cl.Manager(), logFrom: len(cl.ManagerLog())}
}

// panics returns the lines of the manager's log since the watch began that report a panic (controller-runtime
// recovers one in a reconciler and logs it).
func (m managerWatch) panics() []string {
	log := cl.ManagerLog()
	var out []string
	for line := range strings.SplitSeq(log[min(m.logFrom, len(log)):], "\n") {
		if strings.Contains(strings.ToLower(line), "panic") {
			out = append(out, line)
		}
	}
	return out
}

func (m managerWatch) expectHealthy() {
	Expect(cl.Manager()).To(BeIdenticalTo(m.proc), "the manager was not restarted")
	Expect(m.proc.Running()).To(BeTrue(), "the manager runs")
	Expect(m.panics()).To(BeEmpty(), "no panic in the manager's log")
}

// firstResult returns when the watch first saw, from `from` on, a status whose breaker's lastResult satisfies
// ok, and that status's lastEvaluationTime (zero times if none).
func firstResult(h *history, breaker string, from time.Time, ok func(string) bool) (seen, evaluated time.Time) {
	h.breakerVersions(breaker, func(at time.Time, b kvv1.BreakerStatus) {
		if seen.IsZero() && !at.Before(from) && ok(b.LastResult) {
			seen = at
			if b.LastEvaluationTime != nil {
				evaluated = b.LastEvaluationTime.Time
			}
		}
	})
	return seen, evaluated
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func maxOf(m map[string]int) int {
	n := 0
	for _, v := range m {
		n = max(n, v)
	}
	return n
}

// promProxy is a reverse proxy on 127.0.0.1 in front of a Prometheus, which breakers query in its place: it
// can hold instant queries for a delay, or answer them itself (a fault), and it counts the queries it holds at
// once, by PromQL (one per breaker).
type promProxy struct {
	srv      *httptest.Server
	upstream http.Handler

	mu         sync.Mutex
	delay      time.Duration
	fault      *promFault
	inFlight   map[string]int
	maxByQuery map[string]int
	held, most int
	queries    []proxiedQuery
}

// promFault is an answer the proxy gives in place of Prometheus's.
type promFault struct {
	name        string
	status      int
	contentType string
	body        string
}

// proxiedQuery is one instant query the proxy received.
type proxiedQuery struct {
	at     time.Time
	promQL string
	// fault is the name of the fault answered, "" for Prometheus's answer; abandoned is set when the client
	// went away before the answer.
	fault     string
	abandoned bool
}

func newPromProxy(upstream string) *promProxy {
	u, err := url.Parse(upstream)
	Expect(err).NotTo(HaveOccurred())
	p := &promProxy{upstream: httputil.NewSingleHostReverseProxy(u), inFlight: map[string]int{}, maxByQuery: map[string]int{}}
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	DeferCleanup(p.srv.Close)
	return p
}

// setDelay holds every instant query received from now on for d before answering it.
func (p *promProxy) setDelay(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.delay = d
}

// setFault answers every instant query received from now on with f (nil: Prometheus's answer).
func (p *promProxy) setFault(f *promFault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fault = f
}

func (p *promProxy) serve(w http.ResponseWriter, r *http.Request) {
	promQL, err := instantQuery(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if promQL == "" {
		p.upstream.ServeHTTP(w, r)
		return
	}
	p.mu.Lock()
	delay, fault := p.delay, p.fault
	q := proxiedQuery{at: time.Now(), promQL: promQL}
	if fault != nil {
		q.fault = fault.name
	}
	p.inFlight[promQL]++
	p.held++
	p.maxByQuery[promQL] = max(p.maxByQuery[promQL], p.inFlight[promQL])
	p.most = max(p.most, p.held)
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.inFlight[promQL]--
		p.held--
		p.queries = append(p.queries, q)
		p.mu.Unlock()
	}()
	if delay > 0 {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			q.abandoned = true
			return
		}
	}
	if fault != nil {
		w.Header().Set("Content-Type", fault.contentType)
		w.WriteHeader(fault.status)
		_, _ = io.WriteString(w, fault.body) // a client gone meanwhile is what abandoned says
		q.abandoned = r.Context().Err() != nil
		return
	}
	p.upstream.ServeHTTP(w, r)
	q.abandoned = r.Context().Err() != nil
}

// instantQuery returns the PromQL of an instant query (GET or POST /api/v1/query), "" for any other request.
// The body is read and put back for the upstream.
func instantQuery(r *http.Request) (string, error) {
	if !strings.HasSuffix(r.URL.Path, "/api/v1/query") {
		return "", nil
	}
	if q := r.URL.Query().Get("query"); q != "" {
		return q, nil
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return "", err
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return "", err
	}
	return form.Get("query"), nil
}

// maxInFlight returns the most instant queries the proxy held at once, by PromQL and in all.
func (p *promProxy) maxInFlight() (byQuery map[string]int, total int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.maxByQuery), p.most
}

// proxiedCounts are the instant queries that came within a window and are answered.
type proxiedCounts struct {
	queries, abandoned int
	// faults counts the queries answered with each fault, by name.
	faults map[string]int
}

func (c proxiedCounts) String() string {
	return fmt.Sprintf("%d queries, %d given up by the manager before the answer", c.queries, c.abandoned)
}

// between counts the instant queries received within [from, to) that are answered (or abandoned) by now.
func (p *promProxy) between(from, to time.Time) proxiedCounts {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := proxiedCounts{faults: map[string]int{}}
	for _, q := range p.queries {
		if q.at.Before(from) || !q.at.Before(to) {
			continue
		}
		c.queries++
		if q.abandoned {
			c.abandoned++
		}
		if q.fault != "" {
			c.faults[q.fault]++
		}
	}
	return c
}
