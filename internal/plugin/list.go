package plugin

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
)

// List prints the KubervisorServices of namespace, or of every namespace when allNamespaces is set, as a
// table: the printer columns of `kubectl get kvs` plus ACTIVE (TrafficControlled) and CONFLICT.
func (p *Plugin) List(ctx context.Context, namespace string, allNamespaces bool) error {
	var list kvv1.KubervisorServiceList
	var opts []client.ListOption
	if !allNamespaces {
		opts = append(opts, client.InNamespace(namespace))
	}
	if err := p.Client.List(ctx, &list, opts...); err != nil {
		if allNamespaces {
			return fmt.Errorf("listing KubervisorServices in all namespaces: %w", crdHint(err))
		}
		return fmt.Errorf("listing KubervisorServices in namespace %q: %w", namespace, crdHint(err))
	}
	if len(list.Items) == 0 {
		if allNamespaces {
			_, err := fmt.Fprintln(p.Out, "No KubervisorServices found.")
			return err
		}
		_, err := fmt.Fprintf(p.Out, "No KubervisorServices found in namespace %s.\n", namespace)
		return err
	}
	items := list.Items
	slices.SortFunc(items, func(a, b kvv1.KubervisorService) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})

	now := p.Clock.Now()
	var w bytes.Buffer
	header := []string{"NAME", "SERVICE", "READY", "MANAGED", "IN-TRAFFIC", "EJECTED", "PAUSED", "DRY-RUN", "ACTIVE", "CONFLICT", "AGE"}
	if allNamespaces {
		header = append([]string{"NAMESPACE"}, header...)
	}
	row(&w, header...)
	for i := range items {
		kvs := &items[i]
		st := &kvs.Status
		cells := []string{
			kvs.Name,
			kvs.Spec.Service,
			conditionStatus(st.Conditions, kvv1.ConditionReady),
			itoa(st.Pods.Managed),
			itoa(st.Pods.InTraffic),
			itoa(st.Pods.Ejected),
			itoa(st.Pods.Paused),
			strconv.FormatBool(kvs.Spec.DryRun),
			conditionStatus(st.Conditions, kvv1.ConditionTrafficControlled),
			conditionStatus(st.Conditions, kvv1.ConditionConflict),
			age(kvs.CreationTimestamp.Time, now),
		}
		if allNamespaces {
			cells = append([]string{kvs.Namespace}, cells...)
		}
		row(&w, cells...)
	}
	return writeTable(p.Out, &w)
}

func itoa(n int32) string {
	return strconv.FormatInt(int64(n), 10)
}
