package plugin_test

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
)

// listFixture is three KubervisorServices in two namespaces: one with a full status, one in dry run that
// the controller has not seen yet (no status), and one in conflict.
func listFixture() []client.Object {
	pricer := kvs("shop", "pricer", "pricer", now.Add(-3*time.Minute), func(k *kvv1.KubervisorService) {
		k.Status = kvv1.KubervisorServiceStatus{
			Conditions: []metav1.Condition{
				condition(kvv1.ConditionReady, "True", kvv1.ReasonAllBreakersOK, "ok"),
				condition(kvv1.ConditionTrafficControlled, "True", kvv1.ReasonSelectorHasTraffic, "ok"),
				condition(kvv1.ConditionConflict, "False", kvv1.ReasonNoConflict, "ok"),
			},
			Pods: kvv1.PodCounts{Managed: 12, Ready: 11, InTraffic: 10, Ejected: 1, Paused: 1},
		}
	})
	cart := kvs("shop", "cart", "cart-api", now.Add(-49*time.Hour), func(k *kvv1.KubervisorService) {
		k.Spec.DryRun = true
	})
	search := kvs("other", "search", "search", now.Add(-90*time.Second), func(k *kvv1.KubervisorService) {
		k.Status = kvv1.KubervisorServiceStatus{
			Conditions: []metav1.Condition{
				condition(kvv1.ConditionReady, "False", kvv1.ReasonServiceClaimed, "claimed"),
				condition(kvv1.ConditionTrafficControlled, "False", kvv1.ReasonSelectorNoTraffic, "no"),
				condition(kvv1.ConditionConflict, "True", kvv1.ReasonServiceClaimed, "claimed"),
			},
			Pods: kvv1.PodCounts{Managed: 3, Ready: 3, InTraffic: 3},
		}
	})
	return []client.Object{pricer, cart, search}
}

func TestList(t *testing.T) {
	tests := map[string]struct {
		namespace     string
		allNamespaces bool
		want          string
	}{
		"one namespace, sorted by name; a KubervisorService without status shows <none> conditions and zero counts": {
			namespace: "shop",
			want: `NAME     SERVICE    READY    MANAGED   IN-TRAFFIC   EJECTED   PAUSED   DRY-RUN   ACTIVE   CONFLICT   AGE
cart     cart-api   <none>   0         0            0         0        true      <none>   <none>     2d1h
pricer   pricer     True     12        10           1         1        false     True     False      3m
`,
		},
		"all namespaces adds NAMESPACE and sorts by namespace then name": {
			namespace:     "shop",
			allNamespaces: true,
			want: `NAMESPACE   NAME     SERVICE    READY    MANAGED   IN-TRAFFIC   EJECTED   PAUSED   DRY-RUN   ACTIVE   CONFLICT   AGE
other       search   search     False    3         3            0         0        false     False    True       90s
shop        cart     cart-api   <none>   0         0            0         0        true      <none>   <none>     2d1h
shop        pricer   pricer     True     12        10           1         1        false     True     False      3m
`,
		},
		"an empty namespace says so": {
			namespace: "empty",
			want:      "No KubervisorServices found in namespace empty.\n",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, listFixture())
			if err := e.plugin.List(context.Background(), tc.namespace, tc.allNamespaces); err != nil {
				t.Fatalf("List: %v", err)
			}
			checkOutput(t, e.out.String(), tc.want)
			if len(e.writes) != 0 {
				t.Errorf("List wrote to the API server: %+v", e.writes)
			}
		})
	}
}

func TestListAllNamespacesEmpty(t *testing.T) {
	e := newEnv(t, nil)
	if err := e.plugin.List(context.Background(), "shop", true); err != nil {
		t.Fatalf("List: %v", err)
	}
	checkOutput(t, e.out.String(), "No KubervisorServices found.\n")
}
