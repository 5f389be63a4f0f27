// Package plugin is the logic of the `kubectl kubervisor` plugin (SPEC §7, §10): list KubervisorServices
// with their counts, show one with a per-pod table, activate or deactivate a Service selector, and write
// manual eject and restore requests on pods. It talks to the API server through a controller-runtime
// client, writes to an io.Writer and reads the time from an injected clock, so that every output is
// testable with a fake client and a fixed now. Flags and the clients are wired in cmd/kubectl-kubervisor.
package plugin

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/cli-runtime/pkg/printers"
	authnv1client "k8s.io/client-go/kubernetes/typed/authentication/v1"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
)

// none is what a cell shows when there is no value, as kubectl does.
const none = "<none>"

// Plugin runs the subcommands of `kubectl kubervisor` against one API server.
type Plugin struct {
	// Client reads KubervisorServices, Services and pods, and patches Service selectors. Its scheme must
	// hold core/v1 and breaker.kubervisor.io/v1alpha1 (NewScheme).
	Client client.Client
	// Auth tells who the user is (a SelfSubjectReview), for the author of a manual request.
	Auth authnv1client.SelfSubjectReviewsGetter
	// Out receives the tables and messages.
	Out io.Writer
	// Clock gives now, for ages, the activator's schedule and the time of a manual request, and sleeps
	// between the reads of a pod while waiting for a request's outcome.
	Clock clock.Clock
}

// NewScheme returns a scheme holding the only types the plugin reads: core/v1 and the Kubervisor API.
func NewScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := corev1.AddToScheme(s); err != nil {
		return nil, err
	}
	if err := kvv1.AddToScheme(s); err != nil {
		return nil, err
	}
	return s, nil
}

// writeTable writes text whose cells are separated by tabs to out, aligned like kubectl's tables (through
// its tab writer: columns padded by three spaces). A line without a tab ends every column block, so that
// sections separated by such lines are aligned each on its own.
func writeTable(out io.Writer, text *bytes.Buffer) error {
	w := printers.GetNewTabWriter(out)
	for line := range bytes.Lines(text.Bytes()) {
		if _, err := w.Write(line); err != nil {
			return err
		}
		if bytes.IndexByte(line, '\t') < 0 {
			// NOTE: kubectl's tab writer remembers column widths across blocks (RememberWidths, for tables
			// printed in chunks); here that would widen, say, the pod table's first column to the header's.
			if err := w.Flush(); err != nil {
				return err
			}
			w.SetRememberedWidths(nil)
		}
	}
	return w.Flush()
}

// cellBreaks are the characters a cell cannot hold: they would end it or its line.
var cellBreaks = strings.NewReplacer("\t", " ", "\n", " ", "\r", " ")

// row writes cells separated by tabs, ending the line. Tabs and line breaks inside a cell (a condition
// message may hold any text) become spaces.
func row(b *bytes.Buffer, cells ...string) {
	for i, c := range cells {
		if i > 0 {
			b.WriteByte('\t')
		}
		b.WriteString(cellBreaks.Replace(c))
	}
	b.WriteByte('\n')
}

// getKVS reads the KubervisorService, with an error that says plainly when it does not exist.
func (p *Plugin) getKVS(ctx context.Context, namespace, name string) (*kvv1.KubervisorService, error) {
	kvs := &kvv1.KubervisorService{}
	if err := p.Client.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, kvs); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("KubervisorService %q not found in namespace %q", name, namespace)
		}
		return nil, fmt.Errorf("getting KubervisorService %s/%s: %w", namespace, name, crdHint(err))
	}
	return kvs, nil
}

// crdHint adds what a "no matches for kind" error means here: Kubervisor is not installed.
func crdHint(err error) error {
	if meta.IsNoMatchError(err) {
		return fmt.Errorf("%w (is the KubervisorService CRD installed in this cluster?)", err)
	}
	return err
}

// getService reads the Service a KubervisorService names; nil, without error, when it does not exist.
func (p *Plugin) getService(ctx context.Context, kvs *kvv1.KubervisorService) (*corev1.Service, error) {
	svc := &corev1.Service{}
	err := p.Client.Get(ctx, types.NamespacedName{Namespace: kvs.Namespace, Name: kvs.Spec.Service}, svc)
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("getting Service %s/%s: %w", kvs.Namespace, kvs.Spec.Service, err)
	}
	return svc, nil
}

// conditionStatus returns the status of a condition, or <none> when it is not set.
func conditionStatus(conds []metav1.Condition, t string) string {
	if c := meta.FindStatusCondition(conds, t); c != nil {
		return string(c.Status)
	}
	return none
}

// age formats the time since t the way kubectl's AGE column does.
func age(t, now time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(now.Sub(t))
}

// orNone returns s, or <none> when s is empty.
func orNone(s string) string {
	if s == "" {
		return none
	}
	return s
}

// names joins pod names, or returns <none> for an empty list.
func names(list []string) string {
	if len(list) == 0 {
		return none
	}
	return strings.Join(list, ", ")
}
