package plugin

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/activator"
	"github.com/kubervisor/kubervisor/internal/podstate"
)

// Get prints one KubervisorService: a header, its conditions, the outcome of each breaker, the pods held
// out by hand (status.manual[]), and a table of the pods labelled kubervisor/name=NAME with what the
// activator will do to each, who holds it out by hand, or which breakers flag it without ejecting it yet
// (column NEXT).
func (p *Plugin) Get(ctx context.Context, namespace, name string) error {
	kvs, err := p.getKVS(ctx, namespace, name)
	if err != nil {
		return err
	}
	svc, err := p.getService(ctx, kvs)
	if err != nil {
		return err
	}
	var pods corev1.PodList
	if err := p.Client.List(ctx, &pods, client.InNamespace(namespace), client.MatchingLabels{kvv1.LabelName: name}); err != nil {
		return fmt.Errorf("listing pods of KubervisorService %s/%s: %w", namespace, name, err)
	}
	now := p.Clock.Now()

	var w bytes.Buffer
	writeHeader(&w, kvs, svc, now)
	writeConditions(&w, kvs)
	writeBreakers(&w, kvs, now)
	writeManualHolds(&w, kvs, now)
	writePods(&w, kvs, svc, pods.Items, now)
	return writeTable(p.Out, &w)
}

func writeHeader(w *bytes.Buffer, kvs *kvv1.KubervisorService, svc *corev1.Service, now time.Time) {
	c := kvs.Status.Pods
	activatorState := "active"
	switch off := podstate.ActivatorInactivity(kvs, svc); {
	case off.RestoreOnly:
		activatorState = "restores only, never pauses or kills: " + off.Long
	case !off.Active():
		activatorState = "inactive: " + off.Long
	}
	def, err := kvs.Spec.ActivatorFor("")
	row(w, "Name:", kvs.Name)
	row(w, "Namespace:", kvs.Namespace)
	row(w, "Service:", serviceLine(kvs, svc))
	row(w, "Dry run:", strconv.FormatBool(kvs.Spec.DryRun))
	row(w, "Activator:", activatorState)
	row(w, "Default activator:", describeActivator(def, err))
	row(w, "Pods:", fmt.Sprintf("managed %d, ready %d, in traffic %d, ejected %d, paused %d, unknown %d",
		c.Managed, c.Ready, c.InTraffic, c.Ejected, c.Paused, c.Unknown))
	row(w, "Age:", age(kvs.CreationTimestamp.Time, now))
}

func writeConditions(w *bytes.Buffer, kvs *kvv1.KubervisorService) {
	w.WriteByte('\n')
	w.WriteString("Conditions:\n")
	if len(kvs.Status.Conditions) == 0 {
		w.WriteString("  " + none + "\n")
		return
	}
	row(w, "  TYPE", "STATUS", "REASON", "MESSAGE")
	for _, c := range kvs.Status.Conditions {
		row(w, "  "+c.Type, string(c.Status), orNone(c.Reason), orNone(c.Message))
	}
}

// writeBreakers prints each breaker of the spec in order with its last outcome, then any outcome left in
// status by a breaker since removed from the spec.
func writeBreakers(w *bytes.Buffer, kvs *kvv1.KubervisorService, now time.Time) {
	w.WriteByte('\n')
	w.WriteString("Breakers:\n")
	status := map[string]*kvv1.BreakerStatus{}
	for i := range kvs.Status.Breakers {
		status[kvs.Status.Breakers[i].Name] = &kvs.Status.Breakers[i]
	}
	inSpec := map[string]bool{}
	for i := range kvs.Spec.Breakers {
		b := &kvs.Spec.Breakers[i]
		inSpec[b.Name] = true
		title := b.Name
		if b.DryRun {
			title += " (dry run)"
		}
		fmt.Fprintf(w, "  %s:\n", title)
		act, err := kvs.Spec.ActivatorFor(b.Name)
		row(w, "    Activator:", describeActivator(act, err))
		writeBreakerStatus(w, status[b.Name], now)
	}
	for i := range kvs.Status.Breakers {
		if b := &kvs.Status.Breakers[i]; !inSpec[b.Name] {
			fmt.Fprintf(w, "  %s (no longer in spec):\n", b.Name)
			writeBreakerStatus(w, b, now)
		}
	}
}

func writeBreakerStatus(w *bytes.Buffer, b *kvv1.BreakerStatus, now time.Time) {
	if b == nil {
		row(w, "    Last result:", none+" (not evaluated yet)")
		return
	}
	last := none
	if t := b.LastEvaluationTime; t != nil {
		last = fmt.Sprintf("%s (%s ago)", t.UTC().Format(time.RFC3339), age(t.Time, now))
	}
	row(w, "    Last result:", orNone(b.LastResult))
	row(w, "    Last evaluation:", last)
	row(w, "    Anomalous pods:", names(b.AnomalousPods))
	row(w, "    Ejected pods:", names(b.EjectedPods))
	row(w, "    Withheld pods:", names(b.WithheldPods))
	row(w, "    Would-eject pods:", names(b.WouldEjectPods))
}

// writePods prints the pod table, then the problems the activator finds in the pods' labels and
// annotations (it reports them as events and works around them; see podstate.Parse).
func writePods(w *bytes.Buffer, kvs *kvv1.KubervisorService, svc *corev1.Service, pods []corev1.Pod, now time.Time) {
	w.WriteByte('\n')
	if len(pods) == 0 {
		fmt.Fprintf(w, "No pods labelled %s=%s.\n", kvv1.LabelName, kvs.Name)
		return
	}
	slices.SortFunc(pods, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })

	held := heldBack(kvs)

	var problems []string
	row(w, "POD", "READY", "TRAFFIC", "BREAKER", "RETRIES", "BREAK-AT", "NEXT")
	for i := range pods {
		pod := &pods[i]
		state := podstate.Of(pod, now)
		issues := state.Problems
		act, err := kvs.Spec.ActivatorFor(state.Strategy)
		if err != nil && state.Traffic == kvv1.TrafficNo {
			issues = append(issues, fmt.Sprintf("activator for breaker %q: %v; using the built-in period %s",
				state.Strategy, err, kvv1.DefaultActivatorPeriod))
		}
		if len(issues) > 0 {
			problems = append(problems, fmt.Sprintf("  %s: %s", pod.Name, strings.Join(issues, "; ")))
		}
		// The activator counts the paused pods in its scope to decide between pausing and killing.
		paused := podstate.CountPaused(pods, act.PauseScope)
		off := podstate.ActivatorInactivityFor(kvs, svc, state.Strategy)
		var next string
		switch {
		case !pod.DeletionTimestamp.IsZero():
			next = "terminating"
		case !off.Acts():
			next = "inactive (" + off.Short + ")"
		case state.Manual != nil && state.Traffic == kvv1.TrafficNo:
			// NOTE: a pod restored from a hold keeps the manual strategy for the record: the traffic label
			// decides, as for status.manual[].
			next = manualNext(state.Manual)
		case state.Traffic == kvv1.TrafficYes && held[pod.Name] != "":
			next = held[pod.Name]
		case off.RestoreOnly:
			next = activator.Describe(activator.Restrain(activator.Next(state, act, paused, now), off.Long))
		default:
			next = activator.NextRetryDescription(state, act, paused, now)
		}
		row(w, pod.Name, string(podstate.ReadyStatus(pod)), orNone(state.Traffic), orNone(state.Strategy),
			retriesCell(state, act, now), breakAtCell(state, now), next)
	}
	if len(problems) > 0 {
		w.WriteByte('\n')
		w.WriteString("Warnings:\n")
		for _, p := range problems {
			w.WriteString(p + "\n")
		}
	}
}

// heldBack says, per pod, which breakers flag it but do not eject it yet, for the NEXT column of a pod in
// traffic: "pending (breaker http-errors)" while fewer consecutive evaluations flagged it than the breaker's
// failureThreshold (SPEC §5 step 13), "warming up (breaker latency)" while it has been Ready for less than
// the breaker's warmup (step 14); several breakers read "pending (breakers a, b); warming up (breaker c)".
// It reads status.breakers[].anomalies[] of the breakers in the spec, in spec order: a breaker since
// removed ejects nobody.
// NOTE: the entry's reason is not shown: it is rewritten only when the decision changes, so the count of
// evaluations it holds is the one at which the pod became Pending, not the current one.
func heldBack(kvs *kvv1.KubervisorService) map[string]string {
	decisions := map[string][]kvv1.PodDecision{}
	for i := range kvs.Status.Breakers {
		decisions[kvs.Status.Breakers[i].Name] = kvs.Status.Breakers[i].Anomalies
	}
	pending, warming := map[string][]string{}, map[string][]string{}
	for i := range kvs.Spec.Breakers {
		name := kvs.Spec.Breakers[i].Name
		for _, d := range decisions[name] {
			switch d.Decision {
			case kvv1.DecisionPending:
				pending[d.Pod] = append(pending[d.Pod], name)
			case kvv1.DecisionWarmingUp:
				warming[d.Pod] = append(warming[d.Pod], name)
			}
		}
	}
	out := make(map[string]string, len(pending)+len(warming))
	for pod, breakers := range pending {
		out[pod] = breakersCell("pending", breakers)
	}
	for pod, breakers := range warming {
		if cell := out[pod]; cell != "" {
			out[pod] = cell + "; " + breakersCell("warming up", breakers)
		} else {
			out[pod] = breakersCell("warming up", breakers)
		}
	}
	return out
}

// breakersCell is "what (breaker a)" or "what (breakers a, b)".
func breakersCell(what string, breakers []string) string {
	if len(breakers) == 1 {
		return what + " (breaker " + breakers[0] + ")"
	}
	return what + " (breakers " + strings.Join(breakers, ", ") + ")"
}

// writeManualHolds prints status.manual[]: who ejected which pod by hand, why, since and until when.
func writeManualHolds(w *bytes.Buffer, kvs *kvv1.KubervisorService, now time.Time) {
	w.WriteByte('\n')
	w.WriteString("Manual holds:\n")
	if len(kvs.Status.Manual) == 0 {
		w.WriteString("  " + none + "\n")
		return
	}
	row(w, "  POD", "BY", "REASON", "SINCE", "UNTIL")
	for _, m := range kvs.Status.Manual {
		since, until := none, "until restored"
		if m.Since != nil {
			since = stamp(m.Since.Time, now)
		}
		if m.Until != nil {
			until = stamp(m.Until.Time, now)
		}
		row(w, "  "+m.Pod, orNone(m.By), orNone(m.Reason), since, until)
	}
}

// stamp shows a time in UTC to the second, with how long ago or how soon it is.
func stamp(t, now time.Time) string {
	if t.After(now) {
		return fmt.Sprintf("%s (in %s)", t.UTC().Format(time.RFC3339), duration.HumanDuration(t.Sub(now)))
	}
	return fmt.Sprintf("%s (%s ago)", t.UTC().Format(time.RFC3339), age(t, now))
}

// manualNext says who holds a pod out of traffic by hand and until when, for the NEXT column ("manual by
// alice until 2026-03-01T13:00:00Z", or "… until restored"): the activator's schedule does not apply to it
// (SPEC §10). An unusable manual-until reads as until restored, as the controller reads it.
func manualNext(m *podstate.ManualHold) string {
	by, until := m.By, "restored"
	if by == "" {
		by = "someone"
	}
	if !m.Until.IsZero() {
		until = m.Until.UTC().Format(time.RFC3339)
	}
	return fmt.Sprintf("manual by %s until %s", by, until)
}

func serviceLine(kvs *kvv1.KubervisorService, svc *corev1.Service) string {
	if svc == nil {
		return kvs.Spec.Service + " (not found)"
	}
	return fmt.Sprintf("%s (selector %s)", svc.Name, formatSelector(svc.Spec.Selector))
}

// formatSelector prints a selector as key=value pairs in key order, like a label selector.
func formatSelector(sel map[string]string) string {
	if len(sel) == 0 {
		return none
	}
	pairs := make([]string, 0, len(sel))
	for _, k := range slices.Sorted(maps.Keys(sel)) {
		pairs = append(pairs, k+"="+sel[k])
	}
	return strings.Join(pairs, ",")
}

func describeActivator(a kvv1.ResolvedActivator, err error) string {
	if err != nil {
		return fmt.Sprintf("invalid (%v); the activator uses the built-in period %s", err, kvv1.DefaultActivatorPeriod)
	}
	s := fmt.Sprintf("%s, period %s", a.Mode, shortDuration(a.Period))
	switch a.Mode {
	case kvv1.ActivatorModeRetryAndKill:
		s += fmt.Sprintf(", maxRetryCount %d", a.MaxRetryCount)
	case kvv1.ActivatorModeRetryAndPause:
		s += fmt.Sprintf(", maxRetryCount %d, maxPauseCount %d", a.MaxRetryCount, a.MaxPauseCount)
	}
	return s
}

// shortDuration prints a duration without trailing zero units: 1m rather than 1m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// retriesCell shows the retry-count annotation, "invalid" when the activator cannot use it.
// retriesCell is the pod's retry count; for a pod back in traffic under forgiveAfter, also the count its
// next ejection starts from ("3, forgiven to 1").
func retriesCell(s podstate.State, a kvv1.ResolvedActivator, now time.Time) string {
	switch s.RetryCountField {
	case podstate.FieldMissing:
		return none
	case podstate.FieldInvalid:
		return "invalid"
	}
	cell := strconv.FormatInt(int64(s.RetryCount), 10)
	if s.Traffic == kvv1.TrafficYes {
		if f := activator.Forgive(s.RetryCount, s.RestoredAt, a.ForgiveAfter, now); f < s.RetryCount {
			cell += ", forgiven to " + strconv.FormatInt(int64(f), 10)
		}
	}
	return cell
}

// breakAtCell shows the age of the last ejection, "invalid" when the activator cannot use the annotation.
// NOTE: for a pod out of traffic whose retry count is unusable, Parse resets break-at to now as well (the
// pair is not trusted), so the cell shows the time the activator counts from, not the annotation's.
func breakAtCell(s podstate.State, now time.Time) string {
	switch s.BreakAtField {
	case podstate.FieldMissing:
		return none
	case podstate.FieldInvalid:
		return "invalid"
	}
	t := s.BreakAt
	if t.After(now) {
		t = now // within the tolerated clock skew
	}
	return age(t, now)
}
