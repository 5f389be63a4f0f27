package detector

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/kubervisor/kubervisor/api/v1alpha1"
)

// analyzer turns the instant vector a breaker's PromQL returned into a Result. It is pure (no I/O, no
// clock) so that it can be tested and benchmarked without a Prometheus. v holds only series of the
// request's namespace (inNamespace has already dropped the others); req says which pods are managed and
// which of them are in traffic.
type analyzer interface {
	analyze(v model.Vector, req *Request) (Result, error)
	// expects describes the vector the PromQL must return, for error messages.
	expects() string
}

// prometheusDetector runs one instant query per evaluation and hands the vector to its analyzer.
type prometheusDetector struct {
	breaker string
	kind    string // the detector's field name, for messages
	address string // as the user wrote it, for messages
	promQL  string
	// namespaceKey is the label naming a series' namespace; "" turns the namespace check off.
	namespaceKey model.LabelName
	api          promv1.API
	analyzer     analyzer
	timeout      time.Duration
	now          func() time.Time
}

func newPrometheusDetector(b *v1alpha1.BreakerStrategy, kind, address, promQL string, a analyzer, opts Options) (*prometheusDetector, error) {
	breaker := b.Name
	if promQL == "" {
		return nil, fmt.Errorf("breaker %q: %s: empty promQL", breaker, kind)
	}
	u, client, name, err := opts.target("prometheusService", address)
	if err != nil {
		return nil, fmt.Errorf("breaker %q: %s: %w", breaker, kind, err)
	}
	// The client is built once per detector and reused by every evaluation; the HTTP transport beneath is
	// shared by all detectors through Options.HTTPClient (or the endpoint's).
	apiClient, err := api.NewClient(api.Config{Address: u.String(), Client: limitAnswers(client)})
	if err != nil {
		return nil, fmt.Errorf("breaker %q: %s: %s: %w", breaker, kind, name, err)
	}
	return &prometheusDetector{
		breaker:      breaker,
		kind:         kind,
		address:      name,
		promQL:       promQL,
		namespaceKey: model.LabelName(b.NamespaceKeyOf()),
		api:          promv1.NewAPI(apiClient),
		analyzer:     a,
		timeout:      opts.Timeout,
		now:          opts.Now,
	}, nil
}

// Detect runs the instant query and analyses its answer.
func (d *prometheusDetector) Detect(ctx context.Context, req Request) (Result, error) {
	// The server-side timeout is computed from the caller's ctx, before it is narrowed to d.timeout.
	var opts []promv1.Option
	if t := serverTimeout(ctx, d.timeout); t > 0 {
		opts = append(opts, promv1.WithTimeout(t))
	}
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	head := &answerHead{}
	ctx = context.WithValue(ctx, answerHeadKey{}, head)

	value, warnings, err := d.api.Query(ctx, d.promQL, d.now(), opts...)
	if err != nil {
		return Result{}, fmt.Errorf("querying Prometheus at %s for breaker %q: %w", d.address, d.breaker, d.describeQueryError(ctx, err, head))
	}
	vector, ok := value.(model.Vector)
	if !ok {
		return Result{}, fmt.Errorf("querying Prometheus at %s for breaker %q: %s promQL %q returned a %s, expected an instant vector with %s",
			d.address, d.breaker, d.kind, d.promQL, valueType(value), d.analyzer.expects())
	}
	vector, otherNamespace := inNamespace(vector, d.namespaceKey, req.Namespace)
	res, err := d.analyzer.analyze(vector, &req)
	if err != nil {
		return Result{}, fmt.Errorf("reading the answer of Prometheus at %s for breaker %q (%s promQL %q): %w", d.address, d.breaker, d.kind, d.promQL, err)
	}
	res.Ignored += otherNamespace
	res.IgnoredOtherNamespace = otherNamespace
	if len(warnings) > 0 {
		res.Warnings = []string(warnings)
	}
	return res, nil
}

// inNamespace drops the series whose label key names a namespace other than namespace (SPEC §5 step 8),
// and returns how many it dropped. A series without the label is kept: a query aggregated by pod alone
// cannot say, and its pod names are matched against the managed pods anyway. An empty key or namespace
// turns the check off.
//
// NOTE: the series of other namespaces are dropped before the analysis, not inside it, so that a pod name
// that exists in two namespaces (web-0 of two StatefulSets) is neither judged on the other's samples nor
// refused as a pod "in several series". v is returned as it is, without a copy, when nothing is dropped,
// which is the common case.
func inNamespace(v model.Vector, key model.LabelName, namespace string) (model.Vector, int) {
	if key == "" || namespace == "" {
		return v, 0
	}
	other := func(s *model.Sample) bool {
		ns, ok := s.Metric[key]
		return ok && ns != "" && string(ns) != namespace
	}
	first := slices.IndexFunc(v, other)
	if first < 0 {
		return v, 0
	}
	kept := make(model.Vector, first, len(v)-1)
	copy(kept, v[:first])
	for _, s := range v[first+1:] {
		if !other(s) {
			kept = append(kept, s)
		}
	}
	return kept, len(v) - len(kept)
}

// serverTimeout is the evaluation timeout sent to Prometheus: the smaller of the configured timeout and
// what is left of ctx, so that Prometheus gives up when the controller does.
//
// NOTE: Prometheus parses the parameter with its own duration syntax, which refuses fractions ("1.5s"),
// while time.Duration.String produces them. The value is therefore truncated to whole seconds (or whole
// milliseconds under a second), whose String form Prometheus accepts.
func serverTimeout(ctx context.Context, limit time.Duration) time.Duration {
	if deadline, ok := ctx.Deadline(); ok {
		// The context deadline is wall-clock time by construction, so the wall clock is the right one here.
		if left := time.Until(deadline); left < limit {
			limit = left
		}
	}
	if limit >= time.Second {
		return limit.Truncate(time.Second)
	}
	return limit.Truncate(time.Millisecond)
}

// describeQueryError adds what client_golang leaves out: the body of a non-API error (e.g. the text of a
// 503 from a proxy), which limit a timeout hit, and what was expected when the answer could not be
// decoded (client_golang refuses a "string" result with only "unexpected value type"). head is the
// beginning of the answer's body, as read.
func (d *prometheusDetector) describeQueryError(ctx context.Context, err error, head *answerHead) error {
	var (
		apiErr *promv1.Error
		urlErr *url.Error
	)
	switch {
	case errors.Is(err, errAnswerTooLarge):
		// Without the request that the transport's error (a *url.Error) prefixes: the address is said already.
		return errAnswerTooLarge
	case errors.As(err, &apiErr):
		// An answer client_golang could not read as JSON (bad_response): the JSON decoder's own words
		// ("readObjectStart: expect { or n, ...") say little to a reader of the status; what the answer was
		// says more (an HTML page from a proxy, an answer cut short).
		if why := head.notJSON(); apiErr.Type == promv1.ErrBadResponse && why != "" {
			return fmt.Errorf("%s: %s", d.decoding(), why)
		}
		if apiErr.Detail != "" {
			return fmt.Errorf("%w (body %s)", err, snippet([]byte(apiErr.Detail)))
		}
		return err
	case errors.As(err, &urlErr) || ctx.Err() != nil:
		return timeoutError(ctx, d.timeout, err)
	default:
		return fmt.Errorf("%s: %w", d.decoding(), err)
	}
}

// decoding names what was being decoded, for errors.
func (d *prometheusDetector) decoding() string {
	return fmt.Sprintf("decoding the answer to %s promQL %q (expected an instant vector with %s)", d.kind, d.promQL, d.analyzer.expects())
}

// answerHeadKey is the context key under which Detect hands limitedTransport the answerHead to fill.
type answerHeadKey struct{}

// answerHead keeps the first headBytes bytes of an answer's body and counts the rest, so that an answer
// that cannot be decoded can be described by what it was. The body is read by client_golang before Query
// returns, so Detect reads it after without a lock.
type answerHead struct {
	status int // the HTTP status code
	b      []byte
	total  int64
}

const headBytes = 512

func (h *answerHead) record(p []byte) {
	if room := headBytes - len(h.b); room > 0 {
		h.b = append(h.b, p[:min(room, len(p))]...)
	}
	h.total += int64(len(p))
}

// notJSON says why the answer was not JSON, with how it begins, or "" when that cannot be told from its
// head (a long answer that begins like JSON, or none read).
func (h *answerHead) notJSON() string {
	if h == nil || h.total == 0 {
		return ""
	}
	first := bytes.TrimLeft(h.b, " \t\r\n")
	switch {
	case len(first) > 0 && first[0] != '{':
		return fmt.Sprintf("the answer (HTTP %d) is not JSON: %d bytes beginning %s", h.status, h.total, snippet(first))
	case h.total <= int64(len(h.b)) && !json.Valid(h.b):
		return fmt.Sprintf("the answer (HTTP %d) is not complete JSON: %d bytes, %s", h.status, h.total, snippet(h.b))
	}
	return ""
}

// valueType names a query result's type as Prometheus does ("scalar", "matrix", "string").
func valueType(v model.Value) string {
	if v == nil {
		return "null result"
	}
	return v.Type().String()
}

// podOf returns the pod a sample is about, or an error naming the missing label and showing the series:
// a series that cannot be attributed to a pod means the query does not aggregate by podNameKey.
func podOf(s *model.Sample, podNameKey model.LabelName) (string, error) {
	pod := s.Metric[podNameKey]
	if pod == "" {
		return "", fmt.Errorf("series %s has no label %q (podNameKey): the query must keep the pod name label", s.Metric, podNameKey)
	}
	return string(pod), nil
}

// forEachValue reads a vector that must hold one value per pod and calls fn with the value of each managed
// pod, leaving NaN out: it comes from 0/0 in the query (an idle fleet, an error rate without requests) and
// says nothing either way. It returns how many samples were about pods that are not managed.
//
// A pod in several series is an error: which of its values to judge would be a guess (the query probably
// lacks an aggregation by pod), so it is refused rather than silently picked.
func forEachValue(v model.Vector, podNameKey model.LabelName, pods map[string]struct{}, fn func(pod string, x float64)) (ignored int, err error) {
	seen := make(map[string]struct{}, len(v))
	for _, s := range v {
		pod, err := podOf(s, podNameKey)
		if err != nil {
			return 0, err
		}
		// One map operation instead of a lookup and an insert: the map does not fit in the CPU caches on
		// large fleets, and each access is a cache miss.
		n := len(seen)
		seen[pod] = struct{}{}
		if len(seen) == n {
			return 0, fmt.Errorf("pod %q appears in several series (one is %s): the query must return one value per pod, e.g. aggregate \"by (%s)\"",
				pod, s.Metric, podNameKey)
		}
		x, err := floatOf(s)
		if err != nil {
			return 0, err
		}
		if _, managed := pods[pod]; !managed {
			ignored++
			continue
		}
		if !math.IsNaN(x) {
			fn(pod, x)
		}
	}
	return ignored, nil
}

// floatOf returns a sample's float value; a native histogram has none and is refused.
func floatOf(s *model.Sample) (float64, error) {
	if s.Histogram != nil {
		return 0, fmt.Errorf("series %s is a native histogram, expected a float sample", s.Metric)
	}
	return float64(s.Value), nil
}

// errAnswerTooLarge fails a Prometheus answer larger than maxBodyBytes.
var errAnswerTooLarge = fmt.Errorf("the Prometheus answer is larger than %d MiB, the most a detector reads", maxBodyBytes>>20)

// limitAnswers returns a copy of client whose responses fail with errAnswerTooLarge past maxBodyBytes.
//
// NOTE: client_golang reads a whole answer into memory before decoding it, without a bound: the cap must be
// on the body it reads. The copy keeps client's transport, so its connection pool (shared by every
// detector), TLS settings and credentials are those of client.
func limitAnswers(client *http.Client) *http.Client {
	limited := *client
	next := limited.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	limited.Transport = limitedTransport{next: next}
	return &limited
}

// limitedTransport sends through next and caps the body of every response.
type limitedTransport struct {
	next http.RoundTripper
}

func (t limitedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	// A declared length over the cap is refused before a byte is read.
	if resp.ContentLength > maxBodyBytes {
		_ = resp.Body.Close()
		return nil, errAnswerTooLarge
	}
	head, _ := req.Context().Value(answerHeadKey{}).(*answerHead)
	if head != nil { // a redirect's body, drained by net/http, is not the answer's
		*head = answerHead{status: resp.StatusCode, b: head.b[:0]}
	}
	resp.Body = &limitedBody{body: resp.Body, left: maxBodyBytes, head: head}
	return resp, nil
}

// limitedBody reads body and fails once more than left bytes came.
type limitedBody struct {
	body io.ReadCloser
	left int64
	head *answerHead // nil: not recorded
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left < 0 {
		return 0, errAnswerTooLarge
	}
	// One byte more than what is left tells a body that ends exactly at the cap from a longer one.
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.body.Read(p)
	b.left -= int64(n)
	if b.head != nil {
		b.head.record(p[:n])
	}
	if b.left < 0 {
		return 0, errAnswerTooLarge
	}
	return n, err
}

func (b *limitedBody) Close() error {
	return b.body.Close()
}
