package main

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/types"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/podstate"
)

// Event reasons of the manager that the change log reports against a pod.
const (
	reasonEjected  = "Ejected"
	reasonRestored = "Restored"
	reasonPaused   = "Paused"
	reasonKilled   = "Killed"
)

// eventWait is how long a pod's label change waits for the manager's event that explains it before
// the change log reports it from the pod alone.
const eventWait = 5 * time.Second

// notes turn the manager's event notes into change-log text; the pod name comes first on the line.
var notes = map[string]struct {
	re   *regexp.Regexp
	text string
}{
	reasonEjected:  {regexp.MustCompile(`^Breaker (\S+) took pod \S+ out of traffic: (.*)$`), "ejected by $1: $2"},
	reasonRestored: {regexp.MustCompile(`^Pod \S+ back in traffic: (.*)$`), "restored: $1"},
	reasonPaused:   {regexp.MustCompile(`^Pod \S+ paused out of traffic for investigation: (.*)$`), "paused: $1"},
	reasonKilled:   {regexp.MustCompile(`^Pod \S+ evicted: (.*)$`), "killed (evicted): $1"},
}

type logLine struct {
	at   time.Time
	text string
}

func (l logLine) String() string { return l.at.Format("15:04:05") + " " + l.text }

// pendingChange is a pod's label change not yet explained by an event.
type pendingChange struct {
	at          time.Time
	pod, reason string
	text        string
}

// tracker turns what the demo watches (pods, the Service's EndpointSlices, the manager's events, the
// injected faults) into the change log and the measurements. Informer handlers call it concurrently.
type tracker struct {
	mu sync.Mutex

	live    bool // false while the informers list what exists: no change lines for that
	lines   []logLine
	taken   int // lines[:taken] were printed: new lines go after them
	pending []pendingChange
	// events: the series count seen per event; recent: pod/reason of events not matched yet to a label
	// change, with when they came.
	events map[types.UID]int32
	recent map[string]time.Time

	traffic   map[string]string    // pod -> kubervisor/traffic
	outAt     map[string]time.Time // pod -> when it last went out of traffic (its break-at)
	endpoints map[string]bool      // ready endpoints of the Service
	faultAt   map[string]time.Time // pod -> when its current fault was injected
	measured  map[string]bool      // pod -> its current fault's time to leave the slice is measured

	ejections, restorations, pauses, kills int
	faultToSlice                           []measure
	labelToSlice                           []time.Duration
}

type measure struct {
	pod string
	d   time.Duration
}

func newTracker() *tracker {
	return &tracker{
		events: map[types.UID]int32{}, recent: map[string]time.Time{},
		traffic: map[string]string{}, outAt: map[string]time.Time{}, endpoints: map[string]bool{},
		faultAt: map[string]time.Time{}, measured: map[string]bool{},
	}
}

// goLive starts reporting changes (after the informers listed the current state).
func (t *tracker) goLive() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.live = true
}

// addLine adds a line in time order among the lines not taken yet: an event (stamped by the manager)
// may come after the EndpointSlice change it caused.
func (t *tracker) addLine(at time.Time, format string, args ...any) {
	i := len(t.lines)
	for i > t.taken && t.lines[i-1].at.After(at) {
		i--
	}
	t.lines = slices.Insert(t.lines, i, logLine{at: at, text: fmt.Sprintf(format, args...)})
}

// Log adds a line of the demo itself (the scripted faults).
func (t *tracker) Log(format string, args ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.addLine(time.Now(), format, args...)
}

// Take returns the lines not taken yet that are older than settle (so that a late event can still
// take its place before them); they are never reordered after.
func (t *tracker) Take(settle time.Duration) []logLine {
	t.mu.Lock()
	defer t.mu.Unlock()
	limit := time.Now().Add(-settle)
	from := t.taken
	for t.taken < len(t.lines) && t.lines[t.taken].at.Before(limit) {
		t.taken++
	}
	return slices.Clone(t.lines[from:t.taken])
}

// Last returns the last n lines.
func (t *tracker) Last(n int) []logLine {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.lines[max(0, len(t.lines)-n):])
}

// FaultInjected records that pod started misbehaving at at.
func (t *tracker) FaultInjected(pod string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.faultAt[pod]; !ok {
		t.faultAt[pod] = at
		delete(t.measured, pod)
	}
}

// FaultHealed records that pod behaves again.
func (t *tracker) FaultHealed(pod string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.faultAt, pod)
	delete(t.measured, pod)
}

// HasFault reports whether a fault of pod is recorded.
func (t *tracker) HasFault(pod string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.faultAt[pod]
	return ok
}

// Traffic returns pod's kubervisor/traffic label as last seen.
func (t *tracker) Traffic(pod string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.traffic[pod]
}

// InEndpoints reports whether pod is a ready endpoint of the Service.
func (t *tracker) InEndpoints(pod string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.endpoints[pod]
}

// PodChanged is the pod informer's add and update handler.
func (t *tracker) PodChanged(pod *corev1.Pod) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	prev, known := t.traffic[pod.Name]
	st := podstate.Of(pod, now)
	cur := st.Traffic
	t.traffic[pod.Name] = cur
	if !t.live {
		return
	}
	if !known {
		t.addLine(now, "%s created", pod.Name)
		return
	}
	if prev == cur {
		return
	}
	switch {
	case cur == kvv1.TrafficNo:
		t.ejections++
		// NOTE: Parse reads an unusable break-at as now, the time the activator counts from.
		t.outAt[pod.Name] = st.BreakAt
		t.labelChanged(now, pod.Name, reasonEjected, fmt.Sprintf("ejected by %s (retry count %s)", st.Strategy, retries(st)))
	case cur == kvv1.TrafficPause:
		t.pauses++
		t.labelChanged(now, pod.Name, reasonPaused, fmt.Sprintf("paused (retry count %s)", retries(st)))
	case prev == kvv1.TrafficNo && cur == kvv1.TrafficYes:
		t.restorations++
		t.labelChanged(now, pod.Name, reasonRestored, fmt.Sprintf("restored (retry count %s)", retries(st)))
	default:
		t.addLine(now, "%s kubervisor/traffic %q -> %q", pod.Name, prev, cur)
	}
}

// PodDeleted is the pod informer's delete handler.
func (t *tracker) PodDeleted(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	prev := t.traffic[name]
	delete(t.traffic, name)
	delete(t.faultAt, name)
	if !t.live {
		return
	}
	if prev == kvv1.TrafficNo {
		t.kills++
		t.labelChanged(time.Now(), name, reasonKilled, "killed (deleted while out of traffic)")
		return
	}
	t.addLine(time.Now(), "%s deleted", name)
}

// labelChanged reports a pod's label change, unless the manager's event for it came already; else it
// waits eventWait for that event (see Flush).
func (t *tracker) labelChanged(now time.Time, pod, reason, text string) {
	key := pod + "/" + reason
	if at, ok := t.recent[key]; ok && now.Sub(at) < 2*eventWait {
		delete(t.recent, key)
		return
	}
	t.pending = append(t.pending, pendingChange{at: now, pod: pod, reason: reason, text: text})
}

// EventChanged is the event informer's add and update handler. Only events about the
// KubervisorService are read: the manager records each pod action twice, on the KubervisorService
// and on the pod.
func (t *tracker) EventChanged(ev *eventsv1.Event) {
	if ev.Regarding.Kind != "KubervisorService" || ev.Regarding.Name != appName {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	count, at := int32(1), ev.EventTime.Time
	if ev.Series != nil {
		count, at = ev.Series.Count, ev.Series.LastObservedTime.Time
	}
	if at.IsZero() {
		at = ev.CreationTimestamp.Time
	}
	if count <= t.events[ev.UID] {
		return
	}
	t.events[ev.UID] = count
	pod := ""
	if ev.Related != nil && ev.Related.Kind == "Pod" {
		pod = ev.Related.Name
	}
	text := ev.Reason + ": " + ev.Note
	if n, ok := notes[ev.Reason]; ok && n.re.MatchString(ev.Note) {
		text = n.re.ReplaceAllString(ev.Note, n.text)
	}
	if count > 1 {
		// NOTE: client-go's events.k8s.io recorder folds an event with the same regarding, related,
		// reason and action into a series and rewrites the first occurrence's note.
		text += fmt.Sprintf(" (event series, %d occurrences)", count)
	}
	if pod != "" {
		text = pod + " " + text
		t.matchEvent(pod, ev.Reason)
	}
	if ev.Type == corev1.EventTypeWarning {
		text = "WARNING " + text
	}
	t.addLine(at, "%s", text)
}

// matchEvent drops the pending label change an event explains, or remembers the event for a label
// change seen later.
func (t *tracker) matchEvent(pod, reason string) {
	for i, p := range t.pending {
		if p.pod == pod && p.reason == reason {
			t.pending = slices.Delete(t.pending, i, i+1)
			return
		}
	}
	if _, ok := notes[reason]; ok {
		t.recent[pod+"/"+reason] = time.Now()
	}
}

// Flush reports the label changes that no event explained within eventWait.
func (t *tracker) Flush() {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	t.pending = slices.DeleteFunc(t.pending, func(p pendingChange) bool {
		if now.Sub(p.at) < eventWait {
			return false
		}
		t.addLine(p.at, "%s %s [seen on the pod; no %s event from the manager]", p.pod, p.text, p.reason)
		return true
	})
	for k, at := range t.recent {
		if now.Sub(at) > 2*eventWait {
			delete(t.recent, k)
		}
	}
}

// SlicesChanged is given the Service's EndpointSlices after every change of one of them.
func (t *tracker) SlicesChanged(list []*discoveryv1.EndpointSlice) {
	ready := map[string]bool{}
	for _, s := range list {
		for _, e := range s.Endpoints {
			if e.TargetRef != nil && e.TargetRef.Kind == "Pod" && (e.Conditions.Ready == nil || *e.Conditions.Ready) {
				ready[e.TargetRef.Name] = true
			}
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	prev := t.endpoints
	t.endpoints = ready
	if !t.live {
		return
	}
	for pod := range prev {
		if !ready[pod] {
			t.leftSlice(now, pod)
		}
	}
	for pod := range ready {
		if !prev[pod] {
			t.addLine(now, "%s   back in the EndpointSlice", pod)
		}
	}
}

func (t *tracker) leftSlice(now time.Time, pod string) {
	var parts []string
	if out, ok := t.outAt[pod]; ok && t.traffic[pod] != kvv1.TrafficYes {
		d := now.Sub(out)
		t.labelToSlice = append(t.labelToSlice, d)
		parts = append(parts, seconds(d)+" after the label")
	}
	if f, ok := t.faultAt[pod]; ok && !t.measured[pod] {
		d := now.Sub(f)
		t.measured[pod] = true
		t.faultToSlice = append(t.faultToSlice, measure{pod: pod, d: d})
		parts = append(parts, seconds(d)+" after its fault was injected")
	}
	line := pod + "   left the EndpointSlice"
	if len(parts) > 0 {
		line += ": " + strings.Join(parts, ", ")
	}
	t.addLine(now, "%s", line)
}

// Summary is the closing report, and whether the demo showed what it is for: an ejection, and a
// restoration or a pause.
func (t *tracker) Summary() (string, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "Seen: %s, %s, %s, %s.\n", plural(t.ejections, "ejection"), plural(t.restorations, "restoration"),
		plural(t.pauses, "pause"), plural(t.kills, "kill"))
	if len(t.faultToSlice) > 0 {
		b.WriteString("Fault injected -> pod out of the EndpointSlice:")
		for _, m := range t.faultToSlice {
			fmt.Fprintf(&b, " %s %s;", m.pod, seconds(m.d))
		}
		b.WriteString("\n")
	}
	if n := len(t.labelToSlice); n > 0 {
		s := slices.Clone(t.labelToSlice)
		slices.Sort(s)
		fmt.Fprintf(&b, "Label written -> pod out of the EndpointSlice: median %s, max %s over %d ejections.\n", seconds(s[n/2]), seconds(s[n-1]), n)
	}
	return b.String(), t.ejections > 0 && t.restorations+t.pauses > 0
}

func seconds(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', 2, 64) + "s"
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}
