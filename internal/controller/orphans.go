package controller

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/podstate"
)

// OrphanResync is how often the pods labelled for a KubervisorService that does not exist are looked for.
const OrphanResync = 5 * time.Minute

// orphanSweep hands the Pod reconciler, every period, the pods labelled for a KubervisorService the cache does
// not hold: a deletion whose events were missed, a finalizer removed by hand (SPEC §6, orphans). Events
// release them at once; the sweep is the resync that catches what events missed. The Pod reconciler decides
// (with shards, a pod of another shard's KubervisorService is left alone).
type orphanSweep struct {
	reader client.Reader
	clock  clock.WithTicker
	period time.Duration
	found  chan event.TypedGenericEvent[*corev1.Pod]
}

func newOrphanSweep(reader client.Reader, clk clock.WithTicker) *orphanSweep {
	return &orphanSweep{reader: reader, clock: clk, period: OrphanResync, found: make(chan event.TypedGenericEvent[*corev1.Pod], 1024)}
}

// Start sweeps every period until ctx ends (a manager.Runnable, run by the leader).
func (s *orphanSweep) Start(ctx context.Context) error {
	t := s.clock.NewTicker(s.period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
			orphans, err := s.orphans(ctx)
			if err != nil {
				logf.FromContext(ctx).Error(err, "Looking for orphaned pods")
				continue
			}
			if len(orphans) > 0 {
				logf.FromContext(ctx).Info("Found pods labelled for a KubervisorService that does not exist", "pods", len(orphans))
			}
			for _, p := range orphans {
				select {
				case s.found <- event.TypedGenericEvent[*corev1.Pod]{Object: p}:
				case <-ctx.Done():
					return nil
				}
			}
		}
	}
}

// NeedLeaderElection: only the leader writes pods.
func (s *orphanSweep) NeedLeaderElection() bool { return true }

// orphans returns the pods (from the cache) labelled for a KubervisorService the cache does not hold.
func (s *orphanSweep) orphans(ctx context.Context) ([]*corev1.Pod, error) {
	var all kvv1.KubervisorServiceList
	if err := s.reader.List(ctx, &all); err != nil {
		return nil, err
	}
	known := make(map[types.NamespacedName]bool, len(all.Items))
	for i := range all.Items {
		known[client.ObjectKeyFromObject(&all.Items[i])] = true
	}
	var pods corev1.PodList
	if err := s.reader.List(ctx, &pods, client.HasLabels{kvv1.LabelName}); err != nil {
		return nil, err
	}
	var out []*corev1.Pod
	for i := range pods.Items {
		p := &pods.Items[i]
		if owner := podstate.OwnerOf(p); owner != "" && !known[types.NamespacedName{Namespace: p.Namespace, Name: owner}] {
			out = append(out, p)
		}
	}
	return out, nil
}
