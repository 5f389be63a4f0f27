package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"

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
// evaluation. It reads no pod and writes nothing, its memory included: the schedule, the detectors it built,
// the storms and the failureThreshold counts are in the evaluation it returns, for act to carry out and
// kvsMemory.learn to keep.
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
	// 1. Which breakers are due, in spec order; an unusable one is judged at once.
	var queries []*query
	for i := range kvs.Spec.Breakers {
		b := &kvs.Spec.Breakers[i]
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
		q := &query{b: b, be: breakerEval{name: b.Name, dryRun: kvs.Spec.IsDryRun(b) || !selectorActive, gateMode: kvs.Spec.GateMode()}}
		queries = append(queries, q)
		if problems := b.Unusable(); len(problems) > 0 {
			// Never a silent default (SPEC §2.1): the breaker is not evaluated until its spec changes, which
			// resets the memory; conditions report InvalidSpec.
			ev.schedule[b.Name] = now.Add(kvv1.MaxPeriod)
			q.be.kind, q.be.err = outcomeInvalid, errors.New("invalid spec: "+strings.Join(problems, "; "))
			continue
		}
		q.period, _ = b.EvaluationPeriodOf()
		ev.schedule[b.Name] = nextDue(due, now, q.period)
		metrics.LastEvaluation.WithLabelValues(kvs.Namespace, kvs.Name, b.Name).Set(float64(now.UnixNano()) / 1e9)
		q.ask = true
	}
	// 2. Their detectors, asked at once (at most maxQueriesPerPass at a time): the pass lasts as long as its
	// slowest query, not the sum of them.
	r.ask(ctx, kvs, queries, &ev, mem, managed, serving)
	// 3. The answers, judged in spec order.
	for _, q := range queries {
		if q.ask {
			r.judge(q, kvs, obs, pods, mem, now)
		}
		ev.breakers = append(ev.breakers, q.be)
	}
	return ev
}

// maxQueriesPerPass bounds the detector queries one pass sends at once.
const maxQueriesPerPass = 8

// query is one due breaker of a pass: its detector's answer, then its judgement.
type query struct {
	b      *kvv1.BreakerStrategy
	be     breakerEval
	period time.Duration
	// ask is set when the detector is to be asked (the breaker is usable); built is a detector built for it.
	ask   bool
	built detector.Detector
	res   detector.Result
	err   error
}

// ask queries the detectors of the queries to ask concurrently, at most maxQueriesPerPass at a time, and
// records the detectors built in ev.
func (r *KubervisorServiceReconciler) ask(ctx context.Context, kvs *kvv1.KubervisorService, queries []*query, ev *evaluation,
	mem *kvsMemory, managed, serving map[string]struct{}) {
	var wg sync.WaitGroup
	slots := make(chan struct{}, maxQueriesPerPass)
	for _, q := range queries {
		if !q.ask {
			continue
		}
		// The endpoint's warnings are read here, not in the goroutines: the registry is safe, the query is not shared.
		q.be.endpointWarnings = r.endpointWarnings(q.b, kvs.Namespace)
		wg.Go(func() {
			slots <- struct{}{}
			defer func() { <-slots }()
			q.built, q.res, q.err = r.detect(ctx, kvs, q.b, ev.endpointGen, mem, q.period, managed, serving)
		})
	}
	wg.Wait()
	for _, q := range queries {
		if q.built != nil {
			if ev.detectors == nil {
				ev.detectors = map[string]detector.Detector{}
			}
			ev.detectors[q.b.Name] = q.built
		}
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
	case res.NoData && guards.OnNoDataError && b.CustomService == nil:
		be.kind, be.err = outcomeError, errors.New("the answer holds no sample about any managed pod (onNoData: error): is the query broken?")
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

// detect asks the breaker's detector once, within min(period, maxQueryTimeout), and returns the detector it
// built for it, if any (memory keeps it once the pass is learned); one built with an older configuration of
// the detector endpoints is built again. Safe to call concurrently: it reads memory only.
func (r *KubervisorServiceReconciler) detect(ctx context.Context, kvs *kvv1.KubervisorService, b *kvv1.BreakerStrategy,
	endpointGen uint64, mem *kvsMemory, period time.Duration, managed, serving map[string]struct{}) (detector.Detector, detector.Result, error) {
	timeout := min(period, maxQueryTimeout)
	var built detector.Detector
	d, ok := mem.detectors[b.Name]
	if !ok || mem.endpointGen != endpointGen {
		opts := detector.Options{HTTPClient: r.HTTP, Timeout: timeout, Now: r.Clock.Now}
		var err error
		if opts.Endpoint, err = r.endpointOf(b, kvs.Namespace); err != nil {
			return nil, detector.Result{}, err
		}
		if d, err = r.newDetector(b, opts); err != nil {
			return nil, detector.Result{}, fmt.Errorf("configuring the detector: %w", err)
		}
		built = d
	}
	qctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := r.Clock.Now()
	res, err := d.Detect(qctx, detector.Request{Namespace: kvs.Namespace, KubervisorService: kvs.Name, Breaker: b.Name, Pods: managed,
		InTraffic: serving})
	metrics.QueryDuration.WithLabelValues(kvs.Namespace, kvs.Name, b.Name).Observe(r.Clock.Since(start).Seconds())
	return built, res, err
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
