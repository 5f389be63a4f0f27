package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/breaker"
	"github.com/kubervisor/kubervisor/internal/detector"
	"github.com/kubervisor/kubervisor/internal/metrics"
	"github.com/kubervisor/kubervisor/internal/podstate"
)

// evaluation is what the detectors of the breakers due in this pass answered, in spec order, and what the
// breaker loop learned on the way, as values: kvsMemory.learn keeps them once act has carried them out.
type evaluation struct {
	breakers []breakerEval
	// schedule is when each breaker scheduled by this pass is due next: those evaluated, and first
	// evaluations spread over their periods (memory.of).
	schedule map[string]time.Time
	// detectors are the detectors built by this pass, by breaker; endpointGen is the generation of the
	// detector endpoints they were built with (memory drops those of an older one).
	detectors   map[string]detector.Detector
	endpointGen uint64
	// flying are the due breakers whose queries are in flight, not judged by this pass (not in breakers, not
	// scheduled: they stay due), with the time by which the pass is to run again if no answer wakes it.
	flying map[string]time.Time
	// stale are the breakers whose answer came longer than their period ago, and its age: dropped unjudged
	// (flight.staleAt), the breaker asked again.
	stale map[string]time.Duration
}

// outcomeKind is the typed result of one evaluation; status.breakers[].lastResult is derived from it.
type outcomeKind int

const (
	// outcomeOK is an answer holding data about the managed pods.
	outcomeOK outcomeKind = iota
	// outcomeNoData is an answer holding no usable sample.
	outcomeNoData
	// outcomeError is a failed evaluation: nothing was ejected because of it.
	outcomeError
	// outcomeFleetTooSmall is an evaluation that judged nobody (minPodsToJudge).
	outcomeFleetTooSmall
	// outcomeStorm is an evaluation whose guard suspected a storm: nobody was ejected.
	outcomeStorm
	// outcomeInvalid is a breaker not evaluated because its own settings are unusable (InvalidSpec).
	outcomeInvalid
)

// failed reports whether the outcome is no answer at all: the breaker takes no part in the plan.
func (k outcomeKind) failed() bool { return k == outcomeError || k == outcomeInvalid }

// queuedEvent is an event held until the status that records what it reports is written.
type queuedEvent struct {
	regarding, related              runtime.Object
	eventType, reason, action, note string
}

// eventQueue holds the events of one pass, queued until the status that records what they report is written.
type eventQueue []queuedEvent

// queue holds an event of the KubervisorService (the Evaluate action) until the status is written.
func (q *eventQueue) queue(kvs *kvv1.KubervisorService, related runtime.Object, eventType, reason, note string) {
	*q = append(*q, queuedEvent{regarding: kvs, related: related, eventType: eventType, reason: reason, action: kvv1.ActionEvaluate, note: note})
}

// breakerEval is one breaker's answer.
type breakerEval struct {
	name string
	// dryRun is true when the breaker only reports: spec.dryRun, its own dryRun, or an inactive selector.
	dryRun bool
	kind   outcomeKind
	// err is the detector's failure, for outcomeError.
	err error
	// anomalies are the flagged managed pods, worst first.
	anomalies []breaker.Anomaly
	// hold is why a guard keeps the breaker from ejecting (a suspected storm); why says what a guard did
	// (storm or fleet too small); stormStarted is true on the evaluation that entered a storm.
	hold, why    string
	stormStarted bool
	// guarded is set when the guards ran (the detector answered): stormAt is then the breaker's last storm
	// (zero: none to remember) and stormActive whether this evaluation suspected one.
	guarded     bool
	stormAt     time.Time
	stormActive bool
	// spared are the anomalous pods the breaker judges but does not eject, with the decision and why:
	// warming up (§5.14), on probation (§6), pending (§5.13).
	spared map[string]spare
	// streaks are the breaker's counts of consecutive flagging evaluations after this one (failureThreshold);
	// kept only when keepStreaks is set (a failed evaluation or a storm leaves the counts as they were).
	streaks     map[string]int
	keepStreaks bool
	// gateMode is the KubervisorService's readinessGate mode (readiness is ContainersReady).
	gateMode bool
	// ignored and warnings are the detector's (samples about pods not managed or in another namespace;
	// Prometheus' warnings); endpointWarnings its endpoint's (SPEC §2.3).
	ignored          int
	warnings         []string
	endpointWarnings []string
}

// inputs are the answers the plan works on: failed breakers take no part.
func (ev *evaluation) inputs() []breaker.Input {
	in := make([]breaker.Input, 0, len(ev.breakers))
	for _, b := range ev.breakers {
		if !b.kind.failed() {
			in = append(in, breaker.Input{Name: b.name, DryRun: b.dryRun, Anomalies: b.anomalies, Hold: b.hold, Spared: b.sparedSet()})
		}
	}
	return in
}

// spare is why a breaker judges an anomalous pod in traffic without ejecting it.
type spare struct {
	decision kvv1.Decision
	why      string
}

// sparedSet is the set of spared pods, as the plan reads it.
func (b *breakerEval) sparedSet() map[string]string {
	if len(b.spared) == 0 {
		return nil
	}
	out := make(map[string]string, len(b.spared))
	for pod, s := range b.spared {
		out[pod] = s.why
	}
	return out
}

// evaluate queries the detector of every breaker due at now (SPEC §5 step 1) and schedules its next
// evaluation. It reads no pod and writes nothing into memory: the schedule, the detectors it built, the
// storms and the failureThreshold counts are in the evaluation it returns, for act to carry out and
// kvsMemory.learn to keep. Its queries go through the book of queries in flight (flights.go): it judges the
// answers that came since the last pass, starts the queries of the due breakers that have none in flight,
// and waits for those at most queryWait; a breaker whose query is still running is not judged by this pass
// (it is in ev.flying, not in ev.breakers) and stays due.
func (r *KubervisorServiceReconciler) evaluate(ctx context.Context, kvs *kvv1.KubervisorService, obs *observation,
	mem *kvsMemory, now time.Time) evaluation {
	ev := evaluation{schedule: map[string]time.Time{}}
	if r.endpoints != nil {
		ev.endpointGen = r.endpoints.Generation()
	}
	managed := make(map[string]struct{}, len(obs.pods))
	for _, p := range obs.pods {
		managed[p.Name] = struct{}{}
	}
	selectorActive := podstate.Effective(kvs, obs.svc)
	pods := planPods(obs.pods, kvs.Spec.GateMode())
	serving := make(map[string]struct{}, len(pods))
	for _, p := range pods {
		if p.Serving() {
			serving[p.Name] = struct{}{}
		}
	}
	key := types.NamespacedName{Namespace: kvs.Namespace, Name: kvs.Name}
	// 1. Which breakers are judged, in spec order: those whose answer came since the last pass, and those
	// due with no query in flight (asked now); an unusable one is judged at once.
	var queries, asked []*query
	for i := range kvs.Spec.Breakers {
		b := &kvs.Spec.Breakers[i]
		q := &query{b: b, key: flightKey{kvs: key, breaker: b.Name},
			be: breakerEval{name: b.Name, dryRun: kvs.Spec.IsDryRun(b) || !selectorActive, gateMode: kvs.Spec.GateMode()}}
		switch f, state := r.memory.flights.take(q.key, kvs.UID, kvs.Generation); {
		case state == landed && f.staleAt(now):
			// Dropped, never judged: the breaker is due, and asked again below.
			ev.staleAnswer(b.Name, now.Sub(f.came))
		case state == landed:
			q.land(f, &ev)
			queries = append(queries, q)
			continue
		case state == flying:
			ev.fly(b.Name, now.Add(f.timeout))
			continue
		}
		due, scheduled := mem.next[b.Name]
		if !scheduled && mem.spread {
			if period, err := b.EvaluationPeriodOf(); err == nil {
				due, scheduled = now.Add(spreadOffset(mem.uid, b.Name, period)), true
				ev.schedule[b.Name] = due
			}
		}
		if scheduled && now.Before(due) {
			continue
		}
		if scheduled {
			metrics.EvaluationLateness.Observe(now.Sub(due).Seconds())
		}
		queries = append(queries, q)
		if problems := b.Unusable(); len(problems) > 0 {
			// Never a silent default (SPEC §2.1): the breaker is not evaluated until its spec changes, which
			// resets the memory; conditions report InvalidSpec.
			ev.schedule[b.Name] = now.Add(kvv1.MaxPeriod)
			q.be.kind, q.be.err = outcomeInvalid, errors.New("invalid spec: "+strings.Join(problems, "; "))
			continue
		}
		period, _ := b.EvaluationPeriodOf()
		metrics.LastEvaluation.WithLabelValues(kvs.Namespace, kvs.Name, b.Name).Set(float64(now.UnixNano()) / 1e9)
		q.answered = true
		timeout := r.queryTimeout(b, kvs.Namespace, period)
		d, built, err := r.detectorOf(kvs, b, ev.endpointGen, mem, timeout)
		if err != nil {
			// No detector to ask: the failure is the answer, judged now.
			ev.schedule[b.Name], q.err = nextDue(due, now, period), err
			continue
		}
		q.detector = d
		q.flight = &flight{uid: kvs.UID, generation: kvs.Generation, due: due, at: now, period: period, timeout: timeout, built: built,
			endpointGen: ev.endpointGen, done: make(chan struct{})}
		asked = append(asked, q)
	}
	// 2. Their detectors, asked at once (at most maxQueriesPerPass at a time), the answers waited for at most
	// queryWait: the pass lasts as long as its slowest query, or queryWait, not the sum of them.
	r.ask(ctx, kvs, asked, managed, serving)
	for _, q := range asked {
		switch f, state := r.memory.flights.take(q.key, kvs.UID, kvs.Generation); state {
		case landed:
			q.land(f, &ev)
		default:
			// Still running: the breaker stays due, and its answer wakes the KubervisorService (take).
			q.answered, q.late = false, true
			ev.fly(q.b.Name, now.Add(q.flight.timeout))
		}
	}
	// 3. The answers, judged in spec order.
	for _, q := range queries {
		if q.late {
			continue
		}
		if q.answered {
			q.be.endpointWarnings = r.endpointWarnings(q.b, kvs.Namespace)
			r.judge(q, kvs, obs, pods, mem, now)
		}
		ev.breakers = append(ev.breakers, q.be)
	}
	return ev
}

// fly records a due breaker whose query is in flight, and the time by which the pass is to run again if its
// answer does not wake it sooner (the query's timeout).
func (ev *evaluation) fly(name string, by time.Time) {
	if ev.flying == nil {
		ev.flying = map[string]time.Time{}
	}
	ev.flying[name] = by
}

// staleAnswer records an answer dropped as too old.
func (ev *evaluation) staleAnswer(name string, age time.Duration) {
	if ev.stale == nil {
		ev.stale = map[string]time.Duration{}
	}
	ev.stale[name] = age
}

// maxQueriesPerPass bounds the detector queries one pass sends at once.
const maxQueriesPerPass = 8

// query is one breaker judged by a pass, or asked by it: its detector's answer, then its judgement.
type query struct {
	b   *kvv1.BreakerStrategy
	key flightKey
	be  breakerEval
	// answered is set when the breaker has an answer to judge (res, err): not for an unusable breaker.
	answered bool
	res      detector.Result
	err      error
	// detector and flight are the query this pass starts; late is set when its answer did not come within
	// queryWait (the breaker is not judged by this pass).
	detector detector.Detector
	flight   *flight
	late     bool
}

// land takes a query's answer into q and the evaluation: the breaker's next due time, counted from when the
// query was started (as if it had answered then), the detector built for it, and the query's duration.
func (q *query) land(f *flight, ev *evaluation) {
	q.answered, q.res, q.err = true, f.res, f.err
	ev.schedule[q.b.Name] = nextDue(f.due, f.at, f.period)
	// NOTE: a detector built with an older configuration of the detector endpoints is not kept: the next
	// query builds it again.
	if f.built != nil && f.endpointGen == ev.endpointGen {
		if ev.detectors == nil {
			ev.detectors = map[string]detector.Detector{}
		}
		ev.detectors[q.b.Name] = f.built
	}
	metrics.QueryDuration.WithLabelValues(q.key.kvs.Namespace, q.key.kvs.Name, q.b.Name).Observe(f.took.Seconds())
}

// ask starts the queries in the book, each in a goroutine, at most maxQueriesPerPass of them asking at a time,
// and waits for their answers at most queryWait (on the reconciler's clock) or until ctx ends. A query's
// context keeps ctx's values but not its cancellation: it outlives the pass, bounded by the detector's
// timeout, and the book cancels it (a spec change, a deletion).
func (r *KubervisorServiceReconciler) ask(ctx context.Context, kvs *kvv1.KubervisorService, asked []*query, managed, serving map[string]struct{}) {
	if len(asked) == 0 {
		return
	}
	slots := make(chan struct{}, maxQueriesPerPass)
	var started []*flight
	for _, q := range asked {
		qctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		f := q.flight
		f.cancel = cancel
		if !r.memory.flights.start(q.key, f) {
			// One is in flight already (never, as the pass took none): it is not started twice.
			cancel()
			continue
		}
		started = append(started, f)
		// NOTE: the request's maps are the pass's, never written after this point; the goroutine reads nothing
		// of the memory or of kvs (the cache's object).
		req := detector.Request{Namespace: kvs.Namespace, KubervisorService: kvs.Name, Breaker: q.b.Name, Pods: managed, InTraffic: serving}
		go r.fly(qctx, q.key, f, q.detector, req, slots)
	}
	timer := r.Clock.NewTimer(queryWait)
	defer timer.Stop()
	for _, f := range started {
		select {
		case <-f.done:
		case <-timer.C():
			return
		case <-ctx.Done():
			return
		}
	}
}

// fly asks the detector once, within the flight's timeout, and lands the answer in the book; the answer
// wakes the KubervisorService when a pass gave up waiting for it.
func (r *KubervisorServiceReconciler) fly(ctx context.Context, k flightKey, f *flight, d detector.Detector, req detector.Request,
	slots chan struct{}) {
	defer f.cancel()
	var res detector.Result
	var err error
	select {
	case slots <- struct{}{}:
		qctx, cancel := context.WithTimeout(ctx, f.timeout)
		start := r.Clock.Now()
		res, err = d.Detect(qctx, req)
		f.came = r.Clock.Now()
		f.took = f.came.Sub(start)
		cancel()
		<-slots
	case <-ctx.Done():
		f.came, err = r.Clock.Now(), ctx.Err()
	}
	if r.memory.flights.land(k, f, res, err) && r.wake != nil {
		r.wake(k.kvs)
	}
}

// judge turns a breaker's answer into its evaluation: the outcome kind, the guards, failureThreshold's
// counts and the pods it spares.
func (r *KubervisorServiceReconciler) judge(q *query, kvs *kvv1.KubervisorService, obs *observation, pods []breaker.Pod,
	mem *kvsMemory, now time.Time) {
	b, be, res := q.b, &q.be, q.res
	guards, _ := b.GuardsOf()
	be.ignored, be.warnings = res.Ignored, res.Warnings
	switch {
	case q.err != nil:
		be.kind, be.err = outcomeError, q.err
	case (res.NoData || res.OutOfTrafficOnly) && guards.OnNoDataError && b.CustomService == nil:
		be.kind, be.err = outcomeError, errors.New("the answer holds no sample about any managed pod in traffic (onNoData: error): is the query broken?")
	case res.NoData:
		be.kind = outcomeNoData
	default:
		be.kind = outcomeOK
	}
	if be.kind == outcomeError {
		return
	}
	for _, a := range res.Anomalies {
		be.anomalies = append(be.anomalies, breaker.Anomaly{Pod: a.Pod, Reason: a.Reason})
	}
	guardOn(be, guards, pods, mem, now)
	if be.kind != outcomeStorm {
		// NOTE: a suspected storm is a detector not trusted: like a failed evaluation, it leaves the counts of
		// failureThreshold as they were.
		be.streaks, be.keepStreaks = breaker.Sustain(mem.streaks[b.Name], pods, be.anomalies), true
	}
	be.spared = spareOf(b, be.anomalies, obs.pods, be.streaks, kvs.Spec.GateMode(), now)
	for pod, s := range be.spared {
		// NOTE: evaluations of a pod warming up or on probation do not count towards failureThreshold: they
		// judge it on being new, or on failures from before its ejection.
		if s.decision != kvv1.DecisionPending {
			delete(be.streaks, pod)
		}
	}
}

// spareOf returns the anomalous pods the breaker judges but does not eject, with the decision and why, the
// first that applies: a pod Ready for less than the breaker's warmup (WarmingUp, SPEC §5.14), restored
// less than its probation ago (Probation, §6), flagged in fewer consecutive evaluations than its
// failureThreshold (Pending, §5.13; streaks are the counts after this evaluation, nil for none).
func spareOf(b *kvv1.BreakerStrategy, anomalies []breaker.Anomaly, pods []*corev1.Pod, streaks map[string]int, gateMode bool,
	now time.Time) map[string]spare {
	probation, _ := b.ProbationOf()
	warmup, _ := b.WarmupOf()
	threshold := b.FailureThresholdOf()
	if len(anomalies) == 0 || (probation <= 0 && warmup <= 0 && threshold <= 1) {
		return nil
	}
	flagged := make(map[string]bool, len(anomalies))
	for _, a := range anomalies {
		flagged[a.Pod] = true
	}
	var out map[string]spare
	add := func(pod string, d kvv1.Decision, why string) {
		if out == nil {
			out = map[string]spare{}
		}
		out[pod] = spare{decision: d, why: why}
	}
	for _, p := range pods {
		if !flagged[p.Name] {
			continue
		}
		if since := podstate.ReadySince(p, gateMode); warmup > 0 && !since.IsZero() && now.Sub(since) < warmup {
			add(p.Name, kvv1.DecisionWarmingUp, fmt.Sprintf("warming up: Ready for %s, warmup %s", now.Sub(since).Truncate(time.Second), warmup))
			continue
		}
		if probation > 0 {
			if restored := podstate.Of(p, now).RestoredAt; !restored.IsZero() && now.Sub(restored) < probation {
				add(p.Name, kvv1.DecisionProbation, fmt.Sprintf("on probation: restored %s ago, probation %s",
					now.Sub(restored).Truncate(time.Second), probation))
				continue
			}
		}
		if n := streaks[p.Name]; n > 0 && n < threshold {
			add(p.Name, kvv1.DecisionPending, fmt.Sprintf("pending: anomalous in %d of %d consecutive evaluations", n, threshold))
		}
	}
	return out
}

// guardOn applies the breaker's guards (SPEC §5 step 9) to its answer, with the storm times remembered.
func guardOn(be *breakerEval, g kvv1.Guards, pods []breaker.Pod, mem *kvsMemory, now time.Time) {
	gr := breaker.Guard(g, pods, be.anomalies, mem.storms[be.name], now)
	be.guarded, be.stormAt = true, gr.StormAt
	be.stormActive = gr.Verdict == breaker.Storm && gr.StormAt.Equal(now)
	switch gr.Verdict {
	case breaker.FleetTooSmall:
		be.kind, be.why, be.anomalies = outcomeFleetTooSmall, gr.Why, nil
	case breaker.Storm:
		be.kind, be.why, be.hold = outcomeStorm, gr.Why, gr.Why
		be.stormStarted = mem.outcomes[be.name].kind != outcomeStorm
	}
}

// detectorOf returns the breaker's detector: memory's, or one built for it with timeout (built: memory keeps
// it once its answer is judged) when memory has none or one built with an older configuration of the
// detector endpoints.
func (r *KubervisorServiceReconciler) detectorOf(kvs *kvv1.KubervisorService, b *kvv1.BreakerStrategy, endpointGen uint64,
	mem *kvsMemory, timeout time.Duration) (d, built detector.Detector, err error) {
	if d, ok := mem.detectors[b.Name]; ok && mem.endpointGen == endpointGen {
		return d, nil, nil
	}
	opts := detector.Options{HTTPClient: r.HTTP, Timeout: timeout, Now: r.Clock.Now}
	if opts.Endpoint, err = r.endpointOf(b, kvs.Namespace); err != nil {
		return nil, nil, err
	}
	if d, err = r.newDetector(b, opts); err != nil {
		return nil, nil, fmt.Errorf("configuring the detector: %w", err)
	}
	return d, d, nil
}

// queryTimeout bounds one query of the breaker: its detector endpoint's timeout when it sets one,
// maxQueryTimeout otherwise, and never more than the breaker's period (SPEC §5 step 1). A query no longer
// holds a worker (flights.go), so an administrator may give a slow backend (a Thanos over a long range)
// more than the default, up to the period.
func (r *KubervisorServiceReconciler) queryTimeout(b *kvv1.BreakerStrategy, namespace string, period time.Duration) time.Duration {
	if ep, err := r.endpointOf(b, namespace); err == nil && ep != nil && ep.Timeout > 0 {
		return min(period, ep.Timeout)
	}
	return min(period, maxQueryTimeout)
}

// endpointOf resolves the named endpoint the breaker's detector talks to (SPEC §2.3), nil when it names an
// address of its own. The error says what to fix; it never holds a credential (endpoints.Error).
func (r *KubervisorServiceReconciler) endpointOf(b *kvv1.BreakerStrategy, namespace string) (*detector.Endpoint, error) {
	name, uses := b.EndpointOf()
	if !uses {
		return nil, nil
	}
	if r.endpoints == nil {
		if name == "" {
			return nil, errors.New("the detector names no address (prometheusService or customService.url) and the manager " +
				"defines no default endpoint (it runs without --detector-endpoints)")
		}
		return nil, fmt.Errorf("unknown endpoint %q: the manager runs without --detector-endpoints", name)
	}
	t, err := r.endpoints.Resolve(name, namespace)
	if err != nil {
		return nil, err
	}
	return &detector.Endpoint{Name: t.Name, URL: t.URL, Client: t.Client, Timeout: t.Timeout}, nil
}

// endpointWarnings are what the breaker's endpoint warns about (an unverified certificate, a configuration
// file that does not parse): shown in the breaker's status warnings.
func (r *KubervisorServiceReconciler) endpointWarnings(b *kvv1.BreakerStrategy, namespace string) []string {
	name, uses := b.EndpointOf()
	if !uses || r.endpoints == nil {
		return nil
	}
	var out []string
	if t, err := r.endpoints.Resolve(name, namespace); err == nil {
		out = append(out, t.Warnings...)
	}
	if p := r.endpoints.Problem(); p != "" {
		out = append(out, p)
	}
	return out
}

// planOn decides, on a view of the managed pods, who each breaker ejects (SPEC §5 steps 2–3, one quota for
// the whole KubervisorService), and returns the floor it held.
func planOn(kvs *kvv1.KubervisorService, pods []*corev1.Pod, ev *evaluation) ([]breaker.Outcome, int) {
	pp := planPods(pods, kvs.Spec.GateMode())
	floor := breaker.FloorOf(&kvs.Spec, breaker.Count(pp).Base)
	return breaker.Plan(pp, floor, ev.inputs()), floor
}

// planPods is what the plan and the guards know of the managed pods. In readinessGate mode readiness is
// ContainersReady and a pod without the gate is locked in traffic (SPEC §11).
func planPods(pods []*corev1.Pod, gateMode bool) []breaker.Pod {
	out := make([]breaker.Pod, len(pods))
	for i, p := range pods {
		out[i] = breaker.Pod{Name: p.Name, Ready: podstate.ServingReady(p, gateMode), Terminating: !p.DeletionTimestamp.IsZero(),
			Traffic: podstate.TrafficOf(p), Locked: gateMode && !podstate.HasGate(p)}
		if out[i].Traffic == kvv1.TrafficNo {
			// Only pods out of traffic are ever restored: read who ejected them and when for those alone.
			out[i].Manual = podstate.StrategyOf(p) == kvv1.ManualStrategy
			out[i].BreakAt = podstate.BreakAtOf(p)
		}
	}
	return out
}
