package plugin

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/podstate"
)

// PollInterval is how often a manual request's pod is read again while waiting for the controller's outcome.
const PollInterval = 200 * time.Millisecond

// DefaultWait is how long `kubectl kubervisor eject|restore` waits for the outcome unless told otherwise.
const DefaultWait = 10 * time.Second

// anonymous is the username the API server gives to unauthenticated requests.
const anonymous = "system:anonymous"

// ManualRequest is what `kubectl kubervisor eject|restore` asks of the controller (SPEC §10): its flags.
// Request checks them and writes them on the pod as a podstate.ManualRequest, the controller's reading.
type ManualRequest struct {
	// Action is kvv1.RequestEject or kvv1.RequestRestore.
	Action string
	// Reason is the operator's reason, recorded on the pod, in events and in status.manual[]; "" for none.
	Reason string
	// For is how long an ejection lasts, as a Go duration more than zero (eject only); "": until restored.
	For string
	// Force lets an ejection break the floor (eject only).
	Force bool
	// Wait is how long to wait for the controller's outcome; 0 does not wait.
	Wait time.Duration
}

// Request writes a manual request on a supervised pod and waits for the controller's outcome (SPEC §10). The
// plugin never writes kubervisor/traffic or any other label: the controller carries the request out within
// the floor and answers in kubervisor/request-outcome. Request returns nil on "Done: …", and an error on
// "Refused: …", on timeout (the request stays written and pending) and on anything that kept it from
// writing the request: bad flags, a pod that is missing or unsupervised, an unknown requester.
func (p *Plugin) Request(ctx context.Context, namespace, name string, r ManualRequest) error {
	// 1. Refuse bad flags before reading anything.
	forDuration, err := r.validate()
	if err != nil {
		return err
	}
	// 2. Fail fast on a pod the controller would refuse: missing, or supervised by nobody.
	key := types.NamespacedName{Namespace: namespace, Name: name}
	pod := &corev1.Pod{}
	if err := p.Client.Get(ctx, key, pod); err != nil {
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("pod %q not found in namespace %q", name, namespace)
		}
		return fmt.Errorf("getting pod %s: %w", key, err)
	}
	owner := podstate.OwnerOf(pod)
	if owner == "" {
		return fmt.Errorf("refusing to %s pod %s: no KubervisorService supervises it (it has no %s label)",
			r.Action, key, kvv1.LabelName)
	}
	// 3. Who asks: the request names its author, never anonymously.
	by, err := p.whoAmI(ctx)
	if err != nil {
		return err
	}
	// 4. One merge patch of annotations; request-at identifies the request in the outcome.
	at := podstate.FormatTime(p.Clock.Now())
	if prev, ok, _ := podstate.RequestOf(pod); ok && prev.Action != "" {
		if _, err := fmt.Fprintf(p.Out, "pod/%s: replacing the pending %s request of %s (request-at %s)\n", name, prev.Action,
			orNone(prev.By), orNone(prev.At)); err != nil {
			return err
		}
	}
	patch, err := podstate.Request(podstate.ManualRequest{Action: r.Action, By: by, At: at, Reason: r.Reason, For: forDuration,
		Force: r.Force}).MergePatch()
	if err != nil {
		return err
	}
	// NOTE: no optimistic lock. A request replaces any pending one whatever else changed on the pod (the
	// controller's labels and annotations are not in the patch), and the keys of an older request are
	// cleared in the same patch, so the controller never reads a request made of two.
	if err := p.Client.Patch(ctx, pod, client.RawPatch(types.MergePatchType, patch)); err != nil {
		if apierrors.IsForbidden(err) {
			return fmt.Errorf("writing the %s request on pod %s: %w (writing a request needs pods patch, "+
				"as in the ClusterRole kubervisor-operator)", r.Action, key, err)
		}
		return fmt.Errorf("writing the %s request on pod %s: %w", r.Action, key, err)
	}
	check := fmt.Sprintf("kubectl kubervisor get %s -n %s", owner, namespace)
	if r.Wait == 0 {
		_, err := fmt.Fprintf(p.Out, "pod/%s: %s requested by %s (request-at %s); not waiting: check with %q\n",
			name, r.Action, by, at, check)
		return err
	}
	if _, err := fmt.Fprintf(p.Out, "pod/%s: %s requested by %s (request-at %s); waiting up to %s for the controller\n",
		name, r.Action, by, at, r.Wait); err != nil {
		return err
	}
	// 5. Wait for the controller's answer to this very request.
	outcome, err := p.awaitOutcome(ctx, key, at, r.Wait)
	switch {
	case errors.Is(err, errPending):
		return fmt.Errorf("pod/%s: %w; the %s request (request-at %s) is written and pending: check with %q "+
			"or the pod's %s annotation", name, err, r.Action, at, check, kvv1.AnnotationRequestOutcome)
	case err != nil:
		return fmt.Errorf("pod/%s: waiting for the outcome of the %s request (request-at %s): %w", name, r.Action, at, err)
	}
	switch {
	case strings.HasPrefix(outcome, kvv1.OutcomeDonePrefix):
		_, err := fmt.Fprintf(p.Out, "pod/%s: %s\n", name, outcome)
		return err
	case strings.HasPrefix(outcome, kvv1.OutcomeRefusedPrefix):
		return fmt.Errorf("pod/%s: %s", name, outcome)
	default:
		return fmt.Errorf("pod/%s: the controller answered %q, neither Done nor Refused", name, outcome)
	}
}

// validate checks the flags of a request and returns --for as a duration (0 for none).
func (r ManualRequest) validate() (time.Duration, error) {
	if r.Action != kvv1.RequestEject && r.Action != kvv1.RequestRestore {
		return 0, fmt.Errorf("unknown request %q: want %s or %s", r.Action, kvv1.RequestEject, kvv1.RequestRestore)
	}
	if r.Wait < 0 {
		return 0, fmt.Errorf("--wait %s: must not be negative (0 does not wait)", r.Wait)
	}
	if r.Action == kvv1.RequestRestore && (r.For != "" || r.Force) {
		return 0, errors.New("--for and --force apply to eject only")
	}
	if r.For == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(r.For)
	if err != nil {
		return 0, fmt.Errorf("--for %q: not a duration such as 30m or 2h: %w", r.For, err)
	}
	if d <= 0 {
		return 0, fmt.Errorf("--for %q: must be more than zero (leave it out to eject until restored)", r.For)
	}
	return d, nil
}

// whoAmI asks the API server who the user is (a SelfSubjectReview, which every authenticated user may
// create through the built-in ClusterRole system:basic-user).
func (p *Plugin) whoAmI(ctx context.Context) (string, error) {
	const refusing = "refusing to write a request that does not name its author"
	if p.Auth == nil {
		return "", errors.New("finding out who you are: no authentication client; " + refusing)
	}
	review, err := p.Auth.SelfSubjectReviews().Create(ctx, &authnv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		hint := ""
		if apierrors.IsNotFound(err) {
			hint = " (SelfSubjectReview is served in authentication.k8s.io/v1 from Kubernetes 1.28)"
		}
		return "", fmt.Errorf("finding out who you are with a SelfSubjectReview: %w%s; %s", err, hint, refusing)
	}
	switch u := review.Status.UserInfo.Username; u {
	case "":
		return "", errors.New("finding out who you are: the SelfSubjectReview gave no username; " + refusing)
	case anonymous:
		return "", fmt.Errorf("finding out who you are: the API server sees you as %s; %s", anonymous, refusing)
	default:
		return u, nil
	}
}

// errPending ends a wait for an outcome that may still come: the request stays on the pod.
var errPending = errors.New("no answer from the controller")

// awaitOutcome reads the pod every PollInterval until its outcome answers the request made at at, and
// returns the outcome without its request-at ("Done: …", "Refused: …"). It gives up with errPending after
// wait or on an interrupt, and with another error when the pod is gone or a newer request replaced this one.
func (p *Plugin) awaitOutcome(ctx context.Context, key types.NamespacedName, at string, wait time.Duration) (string, error) {
	deadline := p.Clock.Now().Add(wait)
	for {
		step := min(PollInterval, deadline.Sub(p.Clock.Now()))
		if step <= 0 {
			return "", fmt.Errorf("%w within %s (is it running?)", errPending, wait)
		}
		// NOTE: Sleep, not a timer in a select: a fake clock's Sleep moves time on, so tests need no
		// goroutine; an interrupt (the context) is seen within one interval.
		p.Clock.Sleep(step)
		if err := ctx.Err(); err != nil {
			return "", fmt.Errorf("%w: stopped waiting (%w)", errPending, err)
		}
		pod := &corev1.Pod{}
		if err := p.Client.Get(ctx, key, pod); err != nil {
			if apierrors.IsNotFound(err) {
				return "", errors.New("the pod was deleted before the controller answered")
			}
			return "", fmt.Errorf("reading the pod while waiting: %w", err)
		}
		if outcome, ok := podstate.OutcomeOf(pod, at); ok {
			return outcome, nil
		}
		if other, _, _ := podstate.RequestOf(pod); other.At != "" && other.At != at {
			return "", fmt.Errorf("a newer request by %s (request-at %s) replaced this one", orNone(other.By), other.At)
		}
	}
}
