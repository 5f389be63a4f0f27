package cluster

import (
	"context"
	"slices"
	"strings"

	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ReadyEndpoints returns the names of the pods that are ready endpoints of Service namespace/service in
// its EndpointSlices (an endpoint without a Ready condition counts as ready, as kube-proxy counts it),
// sorted.
func ReadyEndpoints(ctx context.Context, c client.Reader, namespace, service string) ([]string, error) {
	var list discoveryv1.EndpointSliceList
	if err := c.List(ctx, &list, client.InNamespace(namespace), client.MatchingLabels{discoveryv1.LabelServiceName: service}); err != nil {
		return nil, err
	}
	var out []string
	for _, sl := range list.Items {
		for _, e := range sl.Endpoints {
			if e.TargetRef != nil && (e.Conditions.Ready == nil || *e.Conditions.Ready) {
				out = append(out, e.TargetRef.Name)
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// LastLines returns the last n lines of s, for a failing test's report.
func LastLines(s string, n int) string {
	l := strings.Split(s, "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
