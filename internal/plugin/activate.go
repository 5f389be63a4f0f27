package plugin

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/podstate"
)

// Activate adds kubervisor/traffic: "yes" to the selector of the Service the KubervisorService names, so
// that the pods Kubervisor takes out of traffic leave the Service's endpoints (SPEC §3). It refuses a
// Service whose selector has no other key: the selector would then pick the in-traffic pods of every
// supervised app in the namespace. It says so and changes nothing when the key is already there.
func (p *Plugin) Activate(ctx context.Context, namespace, name string) error {
	return p.setTrafficKey(ctx, namespace, name, true)
}

// Deactivate removes kubervisor/traffic from the selector of the Service the KubervisorService names:
// every pod the rest of the selector picks is in the endpoints again, and breakers only report. It says so
// and changes nothing when the key is not there.
func (p *Plugin) Deactivate(ctx context.Context, namespace, name string) error {
	return p.setTrafficKey(ctx, namespace, name, false)
}

func (p *Plugin) setTrafficKey(ctx context.Context, namespace, name string, on bool) error {
	kvs, err := p.getKVS(ctx, namespace, name)
	if err != nil {
		return err
	}
	key := types.NamespacedName{Namespace: namespace, Name: kvs.Spec.Service}
	var msg string
	var svc *corev1.Service
	// NOTE: the merge patch carries the resourceVersion the checks were made on (optimistic lock), so that a
	// selector changed in between (say, its other keys removed) is read and checked again instead of being
	// patched blindly.
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		svc = &corev1.Service{}
		if err := p.Client.Get(ctx, key, svc); err != nil {
			if apierrors.IsNotFound(err) {
				return fmt.Errorf("service %q, named by KubervisorService %q, not found in namespace %q", key.Name, name, namespace)
			}
			return fmt.Errorf("getting Service %s: %w", key, err)
		}
		base := svc.DeepCopy()
		value, present := svc.Spec.Selector[kvv1.LabelTraffic]
		_, managed := podstate.ManagedSelector(svc.Spec.Selector)
		switch {
		case on && value == kvv1.TrafficYes:
			msg = fmt.Sprintf("service/%s selector already includes %s=%s (already active)", svc.Name, kvv1.LabelTraffic, kvv1.TrafficYes)
			return nil
		case on && !managed:
			return fmt.Errorf("refusing to activate service/%s: its selector has no key besides %s, so it would select "+
				"the in-traffic pods of every supervised app in namespace %s; give it a selector for its own pods first",
				svc.Name, kvv1.LabelTraffic, namespace)
		case on:
			svc.Spec.Selector[kvv1.LabelTraffic] = kvv1.TrafficYes
			msg = fmt.Sprintf("service/%s selector now includes %s=%s", svc.Name, kvv1.LabelTraffic, kvv1.TrafficYes)
		case !present:
			msg = fmt.Sprintf("service/%s selector already lacks %s (already inactive)", svc.Name, kvv1.LabelTraffic)
			return nil
		default:
			delete(svc.Spec.Selector, kvv1.LabelTraffic)
			msg = fmt.Sprintf("service/%s selector no longer includes %s=%s", svc.Name, kvv1.LabelTraffic, value)
		}
		if err := p.Client.Patch(ctx, svc, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
			if apierrors.IsConflict(err) {
				return err // retried
			}
			return fmt.Errorf("patching the selector of Service %s: %w", key, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintln(p.Out, msg); err != nil {
		return err
	}
	if on {
		return p.warnUnlabelled(ctx, svc)
	}
	return nil
}

// warnUnlabelled says how many pods the selector picked before activation and has now dropped because
// they have no kubervisor/traffic label: they get no traffic until the controller labels them, which it
// does at once when it runs.
func (p *Plugin) warnUnlabelled(ctx context.Context, svc *corev1.Service) error {
	sel, ok := podstate.ManagedSelector(svc.Spec.Selector)
	if !ok {
		return nil // the traffic key alone selects only labelled pods (an already active Service)
	}
	var pods corev1.PodList
	if err := p.Client.List(ctx, &pods, client.InNamespace(svc.Namespace), client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return fmt.Errorf("listing the pods of Service %s/%s: %w", svc.Namespace, svc.Name, err)
	}
	var unlabelled int
	for i := range pods.Items {
		if _, ok := pods.Items[i].Labels[kvv1.LabelTraffic]; !ok {
			unlabelled++
		}
	}
	if unlabelled == 0 {
		return nil
	}
	_, err := fmt.Fprintf(p.Out, "warning: %d of %d pods selected by service/%s have no %s label: they receive no traffic "+
		"until the Kubervisor controller labels them (is it running?)\n", unlabelled, len(pods.Items), svc.Name, kvv1.LabelTraffic)
	return err
}
