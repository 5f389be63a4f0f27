package controller

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/podstate"
)

// Sharding (docs/scaling.md). Several managers split the KubervisorServices between them, each with its own
// leader-election Lease and a --kubervisorservice-selector naming its share: its cache holds only those
// KubervisorServices, so it evaluates only them. Pods stay visible to every shard (a pod is adopted before
// anything says which shard it belongs to), so a shard must leave alone the pods another shard owns, and
// never mistake them for orphans: a pod whose owner is not in this shard's cache is another shard's when
// that KubervisorService exists (a live read, remembered for foreignTTL), an orphan otherwise.
//
// NOTE: shards must split Services, not pods: the KubervisorServices of one shard must not select the pods
// of another's (the oldest-claim rule of SPEC §3 cannot be applied across shards).

// foreignTTL is how long a shard remembers that a KubervisorService exists in another shard.
const foreignTTL = time.Minute

// shard is this manager's share of the KubervisorServices; a nil shard is everything.
type shard struct {
	selector labels.Selector
	live     client.Reader
	clock    clock.PassiveClock

	mu      sync.Mutex
	foreign map[types.NamespacedName]time.Time // KubervisorServices of other shards, until when known
}

func newShard(selector labels.Selector, live client.Reader, clk clock.PassiveClock) *shard {
	if selector == nil || selector.Empty() {
		return nil
	}
	return &shard{selector: selector, live: live, clock: clk, foreign: map[types.NamespacedName]time.Time{}}
}

// owns reports whether the KubervisorService is this shard's.
func (s *shard) owns(kvs *kvv1.KubervisorService) bool {
	return s == nil || s.selector.Matches(labels.Set(kvs.Labels))
}

// othersPod reports whether the pod belongs to a KubervisorService of another shard. c is the (sharded)
// cache.
func (s *shard) othersPod(ctx context.Context, c client.Reader, pod *corev1.Pod) (bool, error) {
	owner := podstate.OwnerOf(pod)
	if s == nil || owner == "" {
		return false, nil
	}
	key := types.NamespacedName{Namespace: pod.Namespace, Name: owner}
	kvs := &kvv1.KubervisorService{}
	switch err := c.Get(ctx, key, kvs); {
	case err == nil && s.owns(kvs):
		return false, nil
	case err == nil:
		return true, nil
	case !apierrors.IsNotFound(err):
		return false, fmt.Errorf("getting KubervisorService %s: %w", key, err)
	}
	now := s.clock.Now()
	s.mu.Lock()
	until, known := s.foreign[key]
	s.mu.Unlock()
	if known && now.Before(until) {
		return true, nil
	}
	switch err := s.live.Get(ctx, key, kvs); {
	case apierrors.IsNotFound(err):
		return false, nil // an orphan: released by whoever sees it
	case err != nil:
		return false, fmt.Errorf("reading KubervisorService %s: %w", key, err)
	}
	if s.owns(kvs) {
		return false, nil // ours, not in the cache yet
	}
	s.mu.Lock()
	s.foreign[key] = now.Add(foreignTTL)
	s.mu.Unlock()
	return true, nil
}
