package podstate_test

import (
	"testing"

	"k8s.io/apimachinery/pkg/labels"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/podstate"
)

func TestManagedSelector(t *testing.T) {
	cases := map[string]struct {
		selector map[string]string
		ok       bool
		matches  map[string]string
		misses   map[string]string
	}{
		"traffic key is ignored": {
			selector: map[string]string{"app": "a", kvv1.LabelTraffic: kvv1.TrafficYes}, ok: true,
			matches: map[string]string{"app": "a", kvv1.LabelTraffic: kvv1.TrafficNo},
			misses:  map[string]string{"app": "b"},
		},
		"plain selector": {
			selector: map[string]string{"app": "a"}, ok: true,
			matches: map[string]string{"app": "a"}, misses: map[string]string{},
		},
		"only the traffic key selects nothing": {
			selector: map[string]string{kvv1.LabelTraffic: kvv1.TrafficYes},
			misses:   map[string]string{kvv1.LabelTraffic: kvv1.TrafficYes},
		},
		"no selector selects nothing": {misses: map[string]string{"app": "a"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			sel, ok := podstate.ManagedSelector(tc.selector)
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v", ok, tc.ok)
			}
			if tc.matches != nil && !sel.Matches(labels.Set(tc.matches)) {
				t.Errorf("selector %v does not match %v", sel, tc.matches)
			}
			if sel.Matches(labels.Set(tc.misses)) {
				t.Errorf("selector %v matches %v", sel, tc.misses)
			}
		})
	}
}
