package detector

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
)

// analyzer turns the instant vector a breaker's PromQL returned into a Result. It is pure (no I/O, no
// clock) so that it can be tested and benchmarked without a Prometheus.
type analyzer interface {
	analyze(v model.Vector, pods map[string]struct{}) (Result, error)
	// expects describes the vector the PromQL must return, for error messages.
	expects() string
}

// prometheusDetector runs one instant query per evaluation and hands the vector to its analyzer.
type prometheusDetector struct {
	breaker  string
	kind     string // the detector's field name, for messages
	address  string // as the user wrote it, for messages
	promQL   string
	api      promv1.API
	analyzer analyzer
	timeout  time.Duration
	now      func() time.Time
}

func newPrometheusDetector(breaker, kind, address, promQL string, a analyzer, opts Options) (*prometheusDetector, error) {
	if promQL == "" {
		return nil, fmt.Errorf("breaker %q: %s: empty promQL", breaker, kind)
	}
	u, err := parseAddress(address)
	if err != nil {
		return nil, fmt.Errorf("breaker %q: %s: prometheusService: %w", breaker, kind, err)
	}
	// The client is built once per detector and reused by every evaluation; the HTTP transport beneath is
	// shared by all detectors through Options.HTTPClient.
	client, err := api.NewClient(api.Config{Address: u.String(), Client: opts.HTTPClient})
	if err != nil {
		return nil, fmt.Errorf("breaker %q: %s: prometheusService %q: %w", breaker, kind, address, err)
	}
	return &prometheusDetector{
		breaker:  breaker,
		kind:     kind,
		address:  address,
		promQL:   promQL,
		api:      promv1.NewAPI(client),
		analyzer: a,
		timeout:  opts.Timeout,
		now:      opts.Now,
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

	value, warnings, err := d.api.Query(ctx, d.promQL, d.now(), opts...)
	if err != nil {
		return Result{}, fmt.Errorf("querying Prometheus at %s for breaker %q: %w", d.address, d.breaker, d.describeQueryError(ctx, err))
	}
	vector, ok := value.(model.Vector)
	if !ok {
		return Result{}, fmt.Errorf("querying Prometheus at %s for breaker %q: %s promQL %q returned a %s, expected an instant vector with %s",
			d.address, d.breaker, d.kind, d.promQL, valueType(value), d.analyzer.expects())
	}
	res, err := d.analyzer.analyze(vector, req.Pods)
	if err != nil {
		return Result{}, fmt.Errorf("reading the answer of Prometheus at %s for breaker %q (%s promQL %q): %w", d.address, d.breaker, d.kind, d.promQL, err)
	}
	if len(warnings) > 0 {
		res.Warnings = []string(warnings)
	}
	return res, nil
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
// decoded (client_golang refuses a "string" result with only "unexpected value type").
func (d *prometheusDetector) describeQueryError(ctx context.Context, err error) error {
	var (
		apiErr *promv1.Error
		urlErr *url.Error
	)
	switch {
	case errors.As(err, &apiErr):
		if apiErr.Detail != "" {
			return fmt.Errorf("%w (body %s)", err, snippet([]byte(apiErr.Detail)))
		}
		return err
	case errors.As(err, &urlErr) || ctx.Err() != nil:
		return timeoutError(ctx, d.timeout, err)
	default:
		return fmt.Errorf("decoding the answer to %s promQL %q (expected an instant vector with %s): %w",
			d.kind, d.promQL, d.analyzer.expects(), err)
	}
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

// floatOf returns a sample's float value; a native histogram has none and is refused.
func floatOf(s *model.Sample) (float64, error) {
	if s.Histogram != nil {
		return 0, fmt.Errorf("series %s is a native histogram, expected a float sample", s.Metric)
	}
	return float64(s.Value), nil
}
