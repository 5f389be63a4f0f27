package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/podstate"
	"github.com/kubervisor/kubervisor/test/fleet"
)

// snapshot is what one refresh shows.
type snapshot struct {
	table *metav1.Table // the printer columns, as the API server computes them for kubectl get
	kvs   *kvv1.KubervisorService
	pods  []*corev1.Pod
	fleet map[string]fleet.PodInfo
	err   error
}

// takeSnapshot reads the KubervisorService (its printer columns through the API server's Table
// rendering, so they are exactly what `kubectl get kvs` shows) and the pods from the informer.
func (d *demo) takeSnapshot(ctx context.Context) snapshot {
	var s snapshot
	raw, err := d.cluster.Clientset().CoreV1().RESTClient().Get().
		AbsPath("/apis", kvv1.GroupVersion.Group, kvv1.GroupVersion.Version, "namespaces", namespace, "kubervisorservices", appName).
		SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").
		Do(ctx).Raw()
	if err == nil {
		s.table = &metav1.Table{}
		err = json.Unmarshal(raw, s.table)
	}
	if err == nil {
		s.kvs = &kvv1.KubervisorService{}
		err = d.cluster.Client().Get(ctx, client.ObjectKey{Namespace: namespace, Name: appName}, s.kvs)
	}
	s.err = err
	s.pods, _ = d.pods.Pods(namespace).List(labels.SelectorFromSet(labels.Set{appLabel: appName}))
	slices.SortFunc(s.pods, func(a, b *corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	s.fleet = map[string]fleet.PodInfo{}
	for _, p := range d.fleet.Pods() {
		s.fleet[p.Name] = p
	}
	return s
}

// render writes the snapshot as plain text. withAges adds what changes every second (ages, times).
func (d *demo) render(s snapshot, withAges bool) string {
	var b strings.Builder
	now := time.Now()
	if s.err != nil {
		fmt.Fprintf(&b, "KubervisorService %s/%s: %v\n", namespace, appName, s.err)
	}
	if s.table != nil && s.kvs != nil {
		fmt.Fprintf(&b, "KubervisorService %s/%s\n", namespace, appName)
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		var head []string
		var age = -1
		for i, c := range s.table.ColumnDefinitions {
			if c.Priority > 0 {
				continue
			}
			if strings.EqualFold(c.Name, "Age") && !withAges {
				age = i
				continue
			}
			head = append(head, "  "+strings.ToUpper(c.Name))
		}
		_, _ = fmt.Fprintln(tw, strings.Join(head, "\t"))
		for _, row := range s.table.Rows {
			var cells []string
			for i, cell := range row.Cells {
				if i < len(s.table.ColumnDefinitions) && (s.table.ColumnDefinitions[i].Priority > 0 || i == age) {
					continue
				}
				if cell == nil {
					cell = "" // as kubectl prints a missing value (spec.dryRun is omitted when false)
				}
				cells = append(cells, fmt.Sprintf("  %v", cell))
			}
			_, _ = fmt.Fprintln(tw, strings.Join(cells, "\t"))
		}
		_ = tw.Flush()
		b.WriteString("  conditions:")
		for _, typ := range []string{kvv1.ConditionReady, kvv1.ConditionEjectionAllowed} {
			if c := meta.FindStatusCondition(s.kvs.Status.Conditions, typ); c != nil {
				fmt.Fprintf(&b, "  %s=%s (%s)", typ, c.Status, c.Reason)
			} else {
				fmt.Fprintf(&b, "  %s=?", typ)
			}
		}
		b.WriteString("\n")
		for _, br := range s.kvs.Status.Breakers {
			// NOTE: no lastEvaluationTime: the status is written only when it changes, so it is the time of
			// the last evaluation that changed something.
			fmt.Fprintf(&b, "  breaker %s: %s", br.Name, br.LastResult)
			fmt.Fprintf(&b, "  anomalous %s  ejected %s  withheld %s\n", names(br.AnomalousPods), names(br.EjectedPods), names(br.WithheldPods))
		}
	}

	b.WriteString("\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	_, _ = fmt.Fprintln(tw, "  POD\tTRAFFIC\tRETRIES\tBREAKER\tENDPOINTSLICE\tFAULT (fleet)\t")
	for _, p := range s.pods {
		st := podstate.Of(p, now)
		traffic := orDash(st.Traffic)
		if withAges && st.Traffic == kvv1.TrafficNo && st.BreakAtField == podstate.FieldValid {
			traffic += fmt.Sprintf(" (%s)", now.Sub(st.BreakAt).Round(time.Second))
		}
		slice := "-"
		if d.tracker.InEndpoints(p.Name) {
			slice = "ready"
		}
		_, _ = fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t\n", p.Name, traffic, retries(st),
			orDash(st.Strategy), slice, fault(s.fleet[p.Name]))
	}
	_ = tw.Flush()
	return b.String()
}

func names(list []string) string {
	if len(list) == 0 {
		return "-"
	}
	return "[" + strings.Join(list, " ") + "]"
}

// retries shows a pod's retry count: "-" when it has none, "invalid" when the activator cannot use it.
func retries(s podstate.State) string {
	switch s.RetryCountField {
	case podstate.FieldMissing:
		return "-"
	case podstate.FieldInvalid:
		return "invalid"
	}
	return strconv.FormatInt(int64(s.RetryCount), 10)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func fault(p fleet.PodInfo) string {
	var parts []string
	if p.ErrorRate > 0 {
		parts = append(parts, fmt.Sprintf("%.0f%% 5xx", p.ErrorRate*100))
	}
	if p.Deviation != 0 && p.Deviation != 1 {
		parts = append(parts, fmt.Sprintf("deviation x%g", p.Deviation))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}
