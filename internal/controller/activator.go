package controller

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/activator"
	"github.com/kubervisor/kubervisor/internal/metrics"
	"github.com/kubervisor/kubervisor/internal/podstate"
)

// maxEvictionRetry bounds the wait before an eviction refused by a PodDisruptionBudget is tried again.
const maxEvictionRetry = 30 * time.Second

// +kubebuilder:rbac:groups="",resources=pods/eviction,verbs=create
// +kubebuilder:rbac:groups="",resources=pods/status,verbs=patch

// activate runs the activator for one pod (SPEC §6): it waits until the pod is due, then restores, pauses or
// evicts it. All of its state is on the pod (labels and annotations), so a restarted controller resumes
// every schedule where it was.
func (r *PodReconciler) activate(ctx context.Context, pod *corev1.Pod, cs []claim) (ctrl.Result, error) {
	now := r.Clock.Now()
	state := podstate.Of(pod, now)
	if state.Traffic != kvv1.TrafficNo || !pod.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	var owner *claim
	for i := range cs {
		if cs[i].kvs.Name == state.Owner {
			owner = &cs[i]
		}
	}
	if owner == nil {
		return ctrl.Result{}, nil
	}
	kvs := owner.kvs
	off := podstate.ActivatorInactivityFor(kvs, owner.svc, state.Strategy)
	if !off.Acts() {
		// A spec or selector change enqueues the pod again.
		return ctrl.Result{}, nil
	}
	// NOTE: the Pod reconciler's logger already carries the pod ("Pod" key); the lines below add the rest.
	log := logf.FromContext(ctx)
	if len(state.Problems) > 0 {
		// One event for all problems: events.k8s.io merges events that differ only by note into a series.
		recordPodEvent(r.Recorder, kvs, pod, corev1.EventTypeWarning, kvv1.EventMalformedPodState, kvv1.ActionActivate,
			"Pod "+pod.Name+": "+strings.Join(state.Problems, "; "))
	}
	act, err := kvs.Spec.ActivatorFor(state.Strategy)
	if err != nil {
		recordPodEvent(r.Recorder, kvs, pod, corev1.EventTypeWarning, kvv1.EventInvalidActivator, kvv1.ActionActivate,
			fmt.Sprintf("Activator for breaker %q: %v; using the built-in period %s", state.Strategy, err, kvv1.DefaultActivatorPeriod))
	}

	var paused int32
	decide := func() activator.Decision {
		d := activator.Next(state, act, paused, now)
		if off.RestoreOnly {
			// Dry run and an inactive selector restore, never punish (SPEC §6).
			d = activator.Restrain(d, off.Long)
		}
		return d
	}
	d := decide()
	if d.Action == activator.ActionPause {
		// Pausing uses a slot of maxPauseCount: count from a live read under a per-KubervisorService lock.
		// NOTE: two pods decided at once by two workers must not both take the last slot. The locks are hashed
		// by key (a fixed set, never growing with the KubervisorServices seen).
		key := client.ObjectKeyFromObject(kvs).String()
		r.pauses.LockKey(key)
		defer func() { _ = r.pauses.UnlockKey(key) }() // UnlockKey of a hashed keymutex never fails
		if paused, err = r.countPaused(ctx, kvs, act.PauseScope); err != nil {
			return ctrl.Result{}, err
		}
		d = decide()
	}

	if patch := activator.PatchFor(state, d, now); !patch.IsEmpty() {
		if err := patchPod(ctx, r.Client, pod, patch); err != nil {
			return ctrl.Result{}, err
		}
		if d.Action == activator.ActionWait || d.Action == activator.ActionKill {
			log.Info("Repaired pod state", "breaker", state.Strategy, "reason", strings.Join(state.Problems, "; "))
		}
	}
	switch d.Action {
	case activator.ActionWait:
		log.V(1).Info("Pod out of traffic until due", "after", d.After, "reason", d.Reason)
		return ctrl.Result{RequeueAfter: d.After}, nil
	case activator.ActionRestore:
		metrics.Activations.WithLabelValues(kvs.Namespace, kvs.Name, string(act.Mode), "restore").Inc()
		log.Info("Restored pod", "breaker", state.Strategy, "reason", d.Reason)
		recordPodEvent(r.Recorder, kvs, pod, corev1.EventTypeNormal, kvv1.EventRestored, kvv1.ActionRestore,
			fmt.Sprintf("Pod %s back in traffic: %s", pod.Name, d.Reason))
	case activator.ActionPause:
		metrics.Activations.WithLabelValues(kvs.Namespace, kvs.Name, string(act.Mode), "pause").Inc()
		log.Info("Paused pod", "breaker", state.Strategy, "reason", d.Reason)
		recordPodEvent(r.Recorder, kvs, pod, corev1.EventTypeNormal, kvv1.EventPaused, kvv1.ActionPause,
			fmt.Sprintf("Pod %s paused out of traffic for investigation: %s", pod.Name, d.Reason))
	case activator.ActionKill:
		return r.evict(ctx, kvs, pod, act, d)
	}
	return ctrl.Result{}, nil
}

// evict deletes the pod through the Eviction API so that PodDisruptionBudgets are honoured. A refused
// eviction is reported and retried later, never forced.
func (r *PodReconciler) evict(ctx context.Context, kvs *kvv1.KubervisorService, pod *corev1.Pod,
	act kvv1.ResolvedActivator, d activator.Decision) (ctrl.Result, error) {
	err := r.Evictor.Evict(ctx, pod.Namespace, pod.Name)
	switch {
	case err == nil:
		metrics.Activations.WithLabelValues(kvs.Namespace, kvs.Name, string(act.Mode), "kill").Inc()
		logf.FromContext(ctx).Info("Evicted pod", "reason", d.Reason)
		recordPodEvent(r.Recorder, kvs, pod, corev1.EventTypeNormal, kvv1.EventKilled, kvv1.ActionKill,
			fmt.Sprintf("Pod %s evicted: %s", pod.Name, d.Reason))
		return ctrl.Result{}, nil
	case apierrors.IsNotFound(err):
		return ctrl.Result{}, nil
	case apierrors.IsTooManyRequests(err):
		retry := min(act.Period, maxEvictionRetry)
		metrics.EvictionsRefused.WithLabelValues(kvs.Namespace, kvs.Name).Inc()
		logf.FromContext(ctx).Info("Eviction refused; the pod stays out of traffic", "reason", err.Error(), "retryIn", retry)
		recordPodEvent(r.Recorder, kvs, pod, corev1.EventTypeWarning, kvv1.EventEvictionRefused, kvv1.ActionKill,
			fmt.Sprintf("Eviction of pod %s refused (%v); it stays out of traffic and is retried in %s", pod.Name, err, retry))
		return ctrl.Result{RequeueAfter: retry}, nil
	default:
		return ctrl.Result{}, fmt.Errorf("evicting pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
}

// Evictor evicts pods through the Eviction API.
type Evictor interface {
	Evict(ctx context.Context, namespace, name string) error
}

// restEvictor posts evictions without client-side retries. NOTE: client-go retries a 429 that carries
// Retry-After up to ten times, and the API server answers a PodDisruptionBudget refusal with a 429 and
// Retry-After: 10; through the usual clients an eviction refused by a PDB would hold a worker for over a
// minute and a half. Here the refusal comes back at once and the pod is requeued instead.
type restEvictor struct {
	rest rest.Interface
}

// NewEvictor returns an Evictor talking to the API server of cfg.
func NewEvictor(cfg *rest.Config) (Evictor, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("building the eviction client: %w", err)
	}
	return restEvictor{rest: cs.PolicyV1().RESTClient()}, nil
}

// Evict posts an Eviction for the pod.
func (e restEvictor) Evict(ctx context.Context, namespace, name string) error {
	eviction := &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}}
	return e.rest.Post().AbsPath("/api/v1").Namespace(namespace).Resource("pods").Name(name).
		SubResource("eviction").Body(eviction).MaxRetries(0).Do(ctx).Error()
}

// countPaused counts, from the API server, the pods of the KubervisorService that are paused, in scope
// (podstate.CountPaused: a breaker's own maxPauseCount counts its paused pods only).
func (r *PodReconciler) countPaused(ctx context.Context, kvs *kvv1.KubervisorService, scope string) (int32, error) {
	pods, err := livePods(ctx, r.APIReader, kvs)
	if err != nil {
		return 0, err
	}
	return podstate.CountPaused(pods, scope), nil
}
