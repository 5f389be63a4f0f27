package controller

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/podstate"
)

// observation is what a pass knows of the cluster, read from the cache.
type observation struct {
	// svc is the Service the KubervisorService names; nil when it does not exist.
	svc *corev1.Service
	// pods are the pods labelled with this KubervisorService's name. Read only: they may be the cache's
	// own objects (podStore). After act, they are live copies that reflect the pass's own writes.
	pods []*corev1.Pod
	conflict
	// stall says why adoption does not complete (reason empty: it does, or it is merely under way); refused
	// is set when every pod not adopted was refused adoption: the breakers judge the adopted pods.
	stall   stall
	refused bool
	// writes are the traffic changes the pass made, for the memory's expectations (kvsMemory.expect).
	writes []podWrite
}

// podWrite is a traffic change the pass made on a pod: the resourceVersion it was made on, and the label.
type podWrite struct {
	pod, base, traffic string
}

// positions maps each pod's name to its place in o.pods.
func (o *observation) positions() map[string]int {
	out := make(map[string]int, len(o.pods))
	for i, p := range o.pods {
		out[p.Name] = i
	}
	return out
}

// write patches a copy of o.pods[i] (which may be the cache's own object) with what patch returns for that
// copy and, on success, keeps the written pod at o.pods[i] for the rest of the pass and logs a traffic
// change in writes (kvsMemory.expect). It returns the written pod.
func (o *observation) write(ctx context.Context, c client.Client, i int, patch func(*corev1.Pod) podstate.Patch) (*corev1.Pod, error) {
	pod := o.pods[i].DeepCopy()
	base, traffic := pod.ResourceVersion, podstate.TrafficOf(pod)
	if err := patchPod(ctx, c, pod, patch(pod)); err != nil {
		return nil, err
	}
	o.pods[i] = pod
	if t := podstate.TrafficOf(pod); t != traffic {
		o.writes = append(o.writes, podWrite{pod: pod.Name, base: base, traffic: t})
	}
	return pod, nil
}

// stall is a Ready=False reason and message for adoption that does not complete.
type stall struct{ reason, message string }

// stallOf says whether incomplete adoption is worth a Ready=False: a failed adoption is (failures,
// "pod: error"). NOTE: adoption merely under way is not: adopting 10,000 pods takes the rate limiter a
// minute, and a Ready that flips on a timer while it does costs a status write and an event per
// KubervisorService (measured by make bench-scale), for nothing the user can act on.
func stallOf(service string, failures []string, refused bool) stall {
	if len(failures) == 0 {
		return stall{}
	}
	if refused {
		return stall{kvv1.ReasonAdoptionFailed, fmt.Sprintf("%d of the pods Service %s selects could not be adopted: %s; "+
			"the breakers judge the adopted pods only", len(failures), service, strings.Join(capNames(failures), "; "))}
	}
	return stall{kvv1.ReasonAdoptionFailed, fmt.Sprintf("Evaluation waits: %d of the pods Service %s selects could not be adopted: %s",
		len(failures), service, strings.Join(capNames(failures), "; "))}
}

// conflict is what the claims of a namespace say about one KubervisorService's right to its pods.
type conflict struct {
	// owner is false when an older KubervisorService names the same Service: this one leaves the pods alone.
	owner bool
	// reason and message explain a Conflict condition; reason is empty when there is none.
	reason, message string
	// unadopted names the pods the Service selects that carry no owner yet, sorted: adoption is under way.
	unadopted []string
}

// evaluable reports whether the breakers may run: the Service exists, this KubervisorService owns its pods,
// and every pod the Service selects is adopted, or refused adoption (a webhook denied the labels). NOTE:
// evaluating during adoption would judge a partial fleet about to grow (the floor on too few pods); pods
// that cannot be adopted are not about to join, and judging the adopted ones is safe: the floor counts
// them only, and the refused pods keep serving.
func (o *observation) evaluable() bool {
	return o.svc != nil && o.owner && (len(o.unadopted) == 0 || o.refused)
}

// adopting reports whether the breakers wait for the Service's pods to be adopted.
func (o *observation) adopting() bool {
	return o.svc != nil && o.owner && len(o.unadopted) > 0 && !o.refused
}

// observe reads the Service, the namespace's claims and the pods, all from the cache.
func (r *KubervisorServiceReconciler) observe(ctx context.Context, kvs *kvv1.KubervisorService) (*observation, error) {
	obs := &observation{}
	svc := &corev1.Service{}
	// Read only: no deep copy (the Service reconciler writes Services, a pass never does).
	switch err := r.Get(ctx, types.NamespacedName{Namespace: kvs.Namespace, Name: kvs.Spec.Service}, svc, client.UnsafeDisableDeepCopy); {
	case apierrors.IsNotFound(err):
		svc = nil
	case err != nil:
		return nil, fmt.Errorf("getting Service %s/%s: %w", kvs.Namespace, kvs.Spec.Service, err)
	}
	obs.svc = svc
	// Only the KubervisorServices naming the same Service can dispute this one's claim (the index).
	cs, err := r.cachedClaims(ctx, svc)
	if err != nil {
		return nil, err
	}
	// NOTE: the cache's own objects, not copies: a pass only reads these. Every write goes to a live copy
	// (act and the manual requests read the pods live before writing).
	if obs.pods, err = r.cachedPods(ctx, kvs.Namespace, IndexOwner, kvs.Name); err != nil {
		return nil, fmt.Errorf("listing pods of KubervisorService %s/%s: %w", kvs.Namespace, kvs.Name, err)
	}
	var selected []*corev1.Pod
	if svc != nil {
		// Read only (conflictOf reads names and labels).
		if selected, err = r.cachedSelected(ctx, kvs.Namespace, svc.Spec.Selector); err != nil {
			return nil, err
		}
	}
	obs.conflict = conflictOf(kvs, cs, selected)
	if obs.svc != nil && obs.owner && len(obs.unadopted) > 0 {
		failures := r.adoptions.of(kvs.Namespace, obs.unadopted)
		obs.refused = len(failures) == len(obs.unadopted)
		obs.stall = stallOf(kvs.Spec.Service, failures, obs.refused)
	}
	return obs, nil
}

// conflictOf decides whether kvs supervises the pods of its Service, given the namespace's claims (oldest
// first) and the pods the Service's selector (minus the traffic key) selects:
//
//   - another KubervisorService naming the same Service: the oldest owns the pods, the others report
//     ServiceClaimedByOther and leave them alone;
//   - otherwise, selected pods supervised by other KubervisorServices: PodsClaimedByOther (the pods stay with
//     their owner, this one supervises the rest);
//   - selected pods without an owner, not terminating: adoption is under way (counted in unadopted).
func conflictOf(kvs *kvv1.KubervisorService, cs []claim, selected []*corev1.Pod) conflict {
	c := conflict{owner: true}
	var rivals []string
	first := ""
	for _, cl := range cs {
		if cl.kvs.Spec.Service != kvs.Spec.Service {
			continue
		}
		if first == "" {
			first = cl.kvs.Name
		}
		if cl.kvs.Name != kvs.Name {
			rivals = append(rivals, cl.kvs.Name)
		}
	}
	others := map[string]int{}
	for _, p := range selected {
		owner, ok := podstate.OwnerLabel(p.Labels)
		switch {
		case !ok && p.DeletionTimestamp.IsZero():
			c.unadopted = append(c.unadopted, p.Name)
		case ok && owner != kvs.Name:
			others[owner]++
		}
	}
	slices.Sort(c.unadopted)
	if len(rivals) > 0 {
		c.owner = first == kvs.Name
		c.reason = kvv1.ReasonServiceClaimed
		c.message = fmt.Sprintf("Service %s is also named by KubervisorService %s; its pods are supervised by the oldest, %s",
			kvs.Spec.Service, strings.Join(rivals, ", "), first)
		return c
	}
	if len(others) > 0 {
		parts := make([]string, 0, len(others))
		for _, o := range slices.Sorted(maps.Keys(others)) {
			parts = append(parts, fmt.Sprintf("%d supervised by %s", others[o], o))
		}
		c.reason = kvv1.ReasonPodsClaimed
		c.message = "pods selected by Service " + kvs.Spec.Service + " are supervised by another KubervisorService: " + strings.Join(parts, ", ")
	}
	return c
}
