// Package detector asks a breaker's anomaly detector which pods misbehave (SPEC §2.1, §5 step 1–2).
//
// It is pure with respect to Kubernetes: it never talks to the API server. The caller passes the names
// of the pods it manages (and which of them are in traffic); the detector queries Prometheus or a custom
// HTTP service, keeps only what is said about those pods in the caller's namespace (SPEC §5 step 8), and
// returns them ranked worst first. Deciding how many of them may leave traffic (the floor, the guards of
// SPEC §5 step 9, what NoData means under onNoData) is the caller's business.
//
// Bad input (SPEC §8) — a query that returns the wrong shape, a series without the pod label, a custom
// service that answers garbage — is an error, never a partial answer: the caller must not touch any pod
// because of it.
package detector

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/kubervisor/kubervisor/api/v1alpha1"
)

// Request is what the breaker knows when it asks its detector.
type Request struct {
	// Namespace and KubervisorService name the KubervisorService the breaker belongs to; the custom service
	// receives them as query parameters. Namespace is also the only namespace whose answers are judged: a
	// Prometheus series whose namespace label (the breaker's namespaceKey) names another one, and a custom
	// service's PodList item whose metadata.namespace names another one, are ignored. An empty Namespace
	// turns that check off.
	Namespace         string
	KubervisorService string
	// Breaker is the breaker's name.
	Breaker string
	// Pods holds the names of the managed pods. The detector's answers about any other pod are ignored:
	// a PromQL query or a custom service usually sees more pods than one Service selects.
	Pods map[string]struct{}
	// InTraffic holds the names of the managed pods that serve traffic (SPEC §5 step 7): peerOutlier takes
	// its median and MAD over these pods only, so that ejected pods do not make the reference, but it still
	// judges every managed pod against it. nil means every managed pod is in traffic; names that are not in
	// Pods are not used. The Prometheus detectors also say whether any of these pods had a sample
	// (Result.OutOfTrafficOnly).
	InTraffic map[string]struct{}
}

// serving reports whether the managed pod is in traffic (every pod when InTraffic is nil).
func (r *Request) serving(pod string) bool {
	if r.InTraffic == nil {
		return true
	}
	_, in := r.InTraffic[pod]
	return in
}

// Anomaly is one managed pod the detector flagged.
type Anomaly struct {
	// Pod is the pod's name.
	Pod string
	// Score orders anomalies: larger is worse. It is the bad ratio (discrete), the deviation |1 − value|
	// (continuous, +Inf for an infinite value), the robust z-score |value − median| / (1.4826 × MAD) (peer
	// outlier, +Inf when the MAD is 0) or a decreasing rank (custom service). Scores of different detectors
	// are not comparable.
	Score float64
	// Reason says in words why the pod was flagged, for events and logs.
	Reason string
}

// Result is the detector's answer about the managed pods.
type Result struct {
	// Anomalies are the flagged managed pods, worst first, each pod once; nil when there is none.
	Anomalies []Anomaly
	// NoData says that the answer held nothing to judge the managed pods on; a NoData result has no
	// anomalies. For the discrete, continuous and custom detectors it is true exactly when the answer held
	// no usable sample about any managed pod of the request's namespace: an empty vector or list, only
	// samples about other pods or namespaces, only NaN values. (A discrete pod whose counts are all 0 is a
	// usable sample: it served nothing.) peerOutlier needs a reference too: it is NoData when fewer than 3
	// managed pods in traffic have a value, or when half of them or more read ±Inf (no finite median or
	// MAD), whatever the pods out of traffic read.
	//
	// NoData is never a reason to eject: an empty answer usually means a wrong query or a scrape gap, not a
	// healthy fleet. The caller turns it into an error when the breaker says onNoData: error (SPEC §5
	// step 9).
	NoData bool
	// OutOfTrafficOnly says that the answer's usable samples were all about managed pods out of traffic
	// (Request.InTraffic): stale series of ejected pods, none about a pod that serves. Such an answer is
	// not NoData (the ejected pods are judged), but onNoData: error treats it as one (SPEC §5 step 9: no
	// sample about any managed pod in traffic), so that a query broken for every serving pod is seen. Set
	// by the Prometheus detectors only; never with NoData.
	OutOfTrafficOnly bool
	// Ignored counts the samples (Prometheus) or names (custom service) left out because they are about
	// pods that are not managed or that live in another namespace; IgnoredOtherNamespace counts the latter
	// among them. They are reported so that a query selecting the wrong pods can be noticed, and never acted
	// on.
	Ignored               int
	IgnoredOtherNamespace int
	// Warnings are the non-fatal warnings Prometheus attached to its answer (e.g. a partial response).
	Warnings []string
}

// Detector answers, for one breaker, which managed pods are anomalous. A Detector is safe for concurrent
// use and may be reused across evaluations.
type Detector interface {
	// Detect asks once. ctx bounds the whole call (the caller derives it from the evaluation period); an
	// error means nothing may be ejected on this evaluation.
	Detect(ctx context.Context, req Request) (Result, error)
}

// Options are the knobs shared by every detector of a controller.
type Options struct {
	// HTTPClient sends every request, so that all breakers share one transport and its connection pool.
	// nil uses a default client.
	HTTPClient *http.Client
	// Timeout bounds one query, on top of the ctx deadline. It is also sent to Prometheus as the query's
	// evaluation timeout so that a heavy query is abandoned server-side too. Zero uses the breaker's
	// evaluation period: a query must never outlive the period it serves (SPEC §5 step 1).
	Timeout time.Duration
	// Now gives the evaluation time of Prometheus instant queries. nil uses time.Now; tests inject a fixed
	// clock to check the timestamp sent.
	Now func() time.Time
	// Endpoint is the named endpoint (SPEC §2.3) the detector talks to, resolved by the caller: its URL
	// replaces prometheusService (customService.url is then a path under it), its Client (TLS, credentials,
	// headers) replaces HTTPClient, and its timeout, when shorter, Timeout. nil: the breaker's own address.
	Endpoint *Endpoint
}

// Endpoint is a named detector endpoint as a detector uses it. Messages name it, never its credentials.
type Endpoint struct {
	Name    string
	URL     *url.URL
	Client  *http.Client
	Timeout time.Duration
}

// target is where a detector sends its queries: the endpoint's URL and client, or the breaker's own
// address (raw, as the user wrote it; field names it in messages) with the shared client.
func (o *Options) target(field, raw string) (u *url.URL, client *http.Client, name string, err error) {
	if e := o.Endpoint; e != nil {
		u := *e.URL
		return &u, e.Client, "endpoint " + e.Name, nil
	}
	if raw == "" {
		return nil, nil, "", fmt.Errorf("%s: no address and no endpoint", field)
	}
	if u, err = parseAddress(raw); err != nil {
		return nil, nil, "", fmt.Errorf("%s: %w", field, err)
	}
	return u, o.HTTPClient, raw, nil
}

// maxBodyBytes caps what a detector may answer, a custom service or Prometheus: 16 MiB is a PodList of tens
// of thousands of pods, or an instant vector of about 100,000 series, and a cap keeps a misbehaving service
// (or a query that selects far too many series) from exhausting the controller's memory.
const maxBodyBytes = 16 << 20

// defaultHTTPClient is used when Options.HTTPClient is nil; it shares the process-wide default transport.
var defaultHTTPClient = &http.Client{Transport: http.DefaultTransport}

// New builds the detector of one breaker from its spec. It returns an error for a configuration that
// cannot work (no or several detectors, both or neither of goodValues/badValues, an unparsable address, an
// out-of-range threshold), so that the caller can report it instead of failing at every evaluation.
// The API server refuses most of these at admission; New guards against objects written before the
// validation existed.
func New(b *v1alpha1.BreakerStrategy, opts Options) (Detector, error) {
	if b == nil {
		return nil, errors.New("building detector: nil breaker")
	}
	n := 0
	for _, set := range []bool{b.DiscreteValueOutOfList != nil, b.ContinuousValueDeviation != nil, b.PeerOutlier != nil, b.CustomService != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return nil, fmt.Errorf("breaker %q: exactly one detector must be set "+
			"(discreteValueOutOfList, continuousValueDeviation, peerOutlier or customService), found %d", b.Name, n)
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = defaultHTTPClient
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Timeout < 0 {
		return nil, fmt.Errorf("breaker %q: negative detector timeout %s", b.Name, opts.Timeout)
	}
	if opts.Timeout == 0 {
		period, err := b.EvaluationPeriodOf()
		if err != nil {
			return nil, fmt.Errorf("breaker %q: evaluationPeriod: %w", b.Name, err)
		}
		opts.Timeout = period
	}
	if e := opts.Endpoint; e != nil {
		if e.URL == nil || e.Client == nil {
			return nil, fmt.Errorf("breaker %q: endpoint %q without a URL or a client", b.Name, e.Name)
		}
		if e.Timeout > 0 {
			opts.Timeout = min(opts.Timeout, e.Timeout)
		}
	}

	switch {
	case b.DiscreteValueOutOfList != nil:
		d := b.DiscreteValueOutOfList
		a, err := newDiscreteAnalyzer(d)
		if err != nil {
			return nil, fmt.Errorf("breaker %q: discreteValueOutOfList: %w", b.Name, err)
		}
		return newPrometheusDetector(b, "discreteValueOutOfList", d.PrometheusService, d.PromQL, a, opts)
	case b.ContinuousValueDeviation != nil:
		c := b.ContinuousValueDeviation
		a, err := newContinuousAnalyzer(c)
		if err != nil {
			return nil, fmt.Errorf("breaker %q: continuousValueDeviation: %w", b.Name, err)
		}
		return newPrometheusDetector(b, "continuousValueDeviation", c.PrometheusService, c.PromQL, a, opts)
	case b.PeerOutlier != nil:
		p := b.PeerOutlier
		a, err := newPeerAnalyzer(p)
		if err != nil {
			return nil, fmt.Errorf("breaker %q: peerOutlier: %w", b.Name, err)
		}
		return newPrometheusDetector(b, "peerOutlier", p.PrometheusService, p.PromQL, a, opts)
	default:
		return newCustomDetector(b.Name, b.CustomService, opts)
	}
}

// parseAddress reads an address that is either scheme-less (host:port, optionally followed by a path:
// plain http, as the 2018 version accepted) or an http(s):// URL.
func parseAddress(raw string) (*url.URL, error) {
	s := strings.TrimSpace(raw)
	if s == "" {
		return nil, errors.New("empty address")
	}
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("address %q: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("address %q: scheme %q is not http or https", raw, u.Scheme)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("address %q: no host", raw)
	}
	return u, nil
}

// timeoutError makes a context error say which limit was hit: "context deadline exceeded" alone does not
// tell a user whether Prometheus was slow or the controller gave up early.
func timeoutError(ctx context.Context, limit time.Duration, err error) error {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("no answer within the timeout (%s, or the evaluation deadline if sooner): %w", limit, err)
	}
	return err
}

// snippet quotes the start of a body for an error message: enough to recognise an HTML error page or a
// wrong document, never megabytes.
func snippet(b []byte) string {
	const max = 200
	if len(b) > max {
		return fmt.Sprintf("%q…", b[:max])
	}
	return fmt.Sprintf("%q", b)
}
