package plugin_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
)

func TestActivateDeactivate(t *testing.T) {
	const (
		addKey    = `{"metadata":{"resourceVersion":"999"},"spec":{"selector":{"kubervisor/traffic":"yes"}}}`
		removeKey = `{"metadata":{"resourceVersion":"999"},"spec":{"selector":{"kubervisor/traffic":null}}}`
	)
	app := map[string]string{"app": "pricer"}
	appActive := map[string]string{"app": "pricer", kvv1.LabelTraffic: kvv1.TrafficYes}
	kvsPricer := kvs("shop", "pricer", "pricer", now)
	type op func(e *env) error
	activate := func(name string) op {
		return func(e *env) error { return e.plugin.Activate(context.Background(), "shop", name) }
	}
	deactivate := func(name string) op {
		return func(e *env) error { return e.plugin.Deactivate(context.Background(), "shop", name) }
	}
	// patch is the merge patch the plugin must send: never an update.
	patch := func(body string) recorded {
		return recorded{verb: "patch", kind: "Service", name: "pricer", patchType: "application/merge-patch+json", patch: body}
	}
	conflict := apierrors.NewConflict(schema.GroupResource{Resource: "services"}, "pricer", nil)

	tests := map[string]struct {
		objs      []client.Object
		patchErrs []error
		run       op
		wantErr   string
		wantOut   string
		// wantSelector is the Service selector on the server afterwards (nil when there is no Service).
		wantSelector map[string]string
		wantWrites   []recorded
	}{
		"activate adds the key with a merge patch": {
			objs:         []client.Object{kvsPricer, service("shop", "pricer", app)},
			run:          activate("pricer"),
			wantOut:      "service/pricer selector now includes kubervisor/traffic=yes\n",
			wantSelector: appActive,
			wantWrites:   []recorded{patch(addKey)},
		},
		"activate warns about selected pods without a traffic label": {
			objs: []client.Object{
				kvsPricer, service("shop", "pricer", app),
				pod("shop", "pricer-a", yes, map[string]string{"app": "pricer", kvv1.LabelTraffic: kvv1.TrafficYes}, nil),
				pod("shop", "pricer-b", yes, map[string]string{"app": "pricer", kvv1.LabelTraffic: kvv1.TrafficNo}, nil),
				pod("shop", "pricer-c", yes, map[string]string{"app": "pricer"}, nil),
				pod("shop", "cart-a", yes, map[string]string{"app": "cart"}, nil),
			},
			run: activate("pricer"),
			wantOut: "service/pricer selector now includes kubervisor/traffic=yes\n" +
				"warning: 1 of 3 pods selected by service/pricer have no kubervisor/traffic label: they receive no traffic " +
				"until the Kubervisor controller labels them (is it running?)\n",
			wantSelector: appActive,
			wantWrites:   []recorded{patch(addKey)},
		},
		"activate replaces another value of the key": {
			objs:         []client.Object{kvsPricer, service("shop", "pricer", map[string]string{"app": "pricer", kvv1.LabelTraffic: "no"})},
			run:          activate("pricer"),
			wantOut:      "service/pricer selector now includes kubervisor/traffic=yes\n",
			wantSelector: appActive,
			wantWrites:   []recorded{patch(addKey)},
		},
		"activate is idempotent": {
			objs:         []client.Object{kvsPricer, service("shop", "pricer", appActive)},
			run:          activate("pricer"),
			wantOut:      "service/pricer selector already includes kubervisor/traffic=yes (already active)\n",
			wantSelector: appActive,
		},
		"activate retries on a conflict, reading the Service again": {
			objs:         []client.Object{kvsPricer, service("shop", "pricer", app)},
			patchErrs:    []error{conflict},
			run:          activate("pricer"),
			wantOut:      "service/pricer selector now includes kubervisor/traffic=yes\n",
			wantSelector: appActive,
			wantWrites:   []recorded{patch(addKey), patch(addKey)},
		},
		"activate refuses a Service without selector": {
			objs:         []client.Object{kvsPricer, service("shop", "pricer", nil)},
			run:          activate("pricer"),
			wantErr:      "refusing to activate service/pricer: its selector has no key besides kubervisor/traffic, so it would select the in-traffic pods of every supervised app in namespace shop; give it a selector for its own pods first",
			wantSelector: map[string]string{},
		},
		"activate refuses a selector holding only kubervisor/traffic": {
			objs:         []client.Object{kvsPricer, service("shop", "pricer", map[string]string{kvv1.LabelTraffic: "no"})},
			run:          activate("pricer"),
			wantErr:      "refusing to activate service/pricer: its selector has no key besides kubervisor/traffic, so it would select the in-traffic pods of every supervised app in namespace shop; give it a selector for its own pods first",
			wantSelector: map[string]string{kvv1.LabelTraffic: "no"},
		},
		"activate refuses a missing KubervisorService": {
			objs:         []client.Object{service("shop", "pricer", app)},
			run:          activate("pricer"),
			wantErr:      `KubervisorService "pricer" not found in namespace "shop"`,
			wantSelector: app,
		},
		"activate refuses a missing Service": {
			objs:    []client.Object{kvsPricer},
			run:     activate("pricer"),
			wantErr: `service "pricer", named by KubervisorService "pricer", not found in namespace "shop"`,
		},
		"deactivate removes the key with a merge patch": {
			objs:         []client.Object{kvsPricer, service("shop", "pricer", appActive)},
			run:          deactivate("pricer"),
			wantOut:      "service/pricer selector no longer includes kubervisor/traffic=yes\n",
			wantSelector: app,
			wantWrites:   []recorded{patch(removeKey)},
		},
		"deactivate is idempotent": {
			objs:         []client.Object{kvsPricer, service("shop", "pricer", app)},
			run:          deactivate("pricer"),
			wantOut:      "service/pricer selector already lacks kubervisor/traffic (already inactive)\n",
			wantSelector: app,
		},
		"deactivate refuses a missing KubervisorService": {
			objs:         []client.Object{service("shop", "pricer", appActive)},
			run:          deactivate("pricer"),
			wantErr:      `KubervisorService "pricer" not found in namespace "shop"`,
			wantSelector: appActive,
		},
		"deactivate refuses a missing Service": {
			objs:    []client.Object{kvs("shop", "pricer", "gone", now.Add(-time.Hour))},
			run:     deactivate("pricer"),
			wantErr: `service "gone", named by KubervisorService "pricer", not found in namespace "shop"`,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, tc.objs, tc.patchErrs...)
			err := tc.run(e)
			gotErr := ""
			if err != nil {
				gotErr = err.Error()
			}
			if gotErr != tc.wantErr {
				t.Errorf("error: got %q, want %q", gotErr, tc.wantErr)
			}
			checkOutput(t, e.out.String(), tc.wantOut)
			if diff := cmp.Diff(tc.wantWrites, e.writes, cmp.AllowUnexported(recorded{})); diff != "" {
				t.Errorf("writes (-want +got):\n%s", diff)
			}
			var svc corev1.Service
			err = e.client.Get(context.Background(), client.ObjectKey{Namespace: "shop", Name: "pricer"}, &svc)
			switch {
			case apierrors.IsNotFound(err):
				if tc.wantSelector != nil {
					t.Errorf("Service shop/pricer not found")
				}
			case err != nil:
				t.Fatal(err)
			default:
				got := svc.Spec.Selector
				if got == nil {
					got = map[string]string{}
				}
				if diff := cmp.Diff(tc.wantSelector, got); diff != "" {
					t.Errorf("selector (-want +got):\n%s", diff)
				}
			}
		})
	}
}
