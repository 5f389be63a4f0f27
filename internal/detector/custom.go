package detector

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/kubervisor/kubervisor/api/v1alpha1"
)

// customDetector asks an HTTP service for the anomalous pods (SPEC §2.1, customService).
type customDetector struct {
	breaker string
	address string // as the user wrote it, for messages
	url     *url.URL
	client  *http.Client
	timeout time.Duration
}

func newCustomDetector(breaker string, c *v1alpha1.CustomService, opts Options) (*customDetector, error) {
	raw := c.URL
	if opts.Endpoint != nil {
		raw = ""
	}
	u, client, name, err := opts.target("url", raw)
	if err != nil {
		return nil, fmt.Errorf("breaker %q: customService: %w", breaker, err)
	}
	if opts.Endpoint != nil && c.URL != "" {
		// url is a path under the endpoint's URL (admission refuses anything else with endpoint).
		p, err := url.Parse(c.URL)
		if err != nil || p.Host != "" || p.Scheme != "" {
			return nil, fmt.Errorf("breaker %q: customService: url %q: with an endpoint, url is a path", breaker, c.URL)
		}
		u = u.JoinPath(p.Path)
		u.RawQuery = p.RawQuery
		name += ", path " + p.Path
	}
	return &customDetector{breaker: breaker, address: name, url: u, client: client, timeout: opts.Timeout}, nil
}

// Detect sends GET url?namespace=…&kubervisorservice=…&breaker=… and reads the ranked pod names.
func (d *customDetector) Detect(ctx context.Context, req Request) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()

	named, err := d.ask(ctx, req)
	if err != nil {
		return Result{}, fmt.Errorf("asking the custom service at %s for breaker %q: %w", d.address, d.breaker, err)
	}
	return rankNames(named, &req), nil
}

// ask does the HTTP exchange and returns the pods in the answer's order, duplicates included.
func (d *customDetector) ask(ctx context.Context, req Request) ([]namedPod, error) {
	u := *d.url
	// The service may need its own query parameters (e.g. a token or a tenant): keep them, and set ours.
	q := u.Query()
	q.Set("namespace", req.Namespace)
	q.Set("kubervisorservice", req.KubervisorService)
	q.Set("breaker", req.Breaker)
	u.RawQuery = q.Encode()

	httpReq, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	httpReq.Header.Set("Accept", "application/json, application/yaml;q=0.9, */*;q=0.1")
	resp, err := d.client.Do(httpReq)
	if err != nil {
		return nil, timeoutError(ctx, d.timeout, err)
	}
	defer func() { _ = resp.Body.Close() }()

	if resp.StatusCode != http.StatusOK {
		// Only the start of an error body is shown; there is no point in reading megabytes of it.
		head, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return nil, fmt.Errorf("answered %s, expected 200 OK; body %s", resp.Status, snippet(head))
	}
	// Read one byte more than the cap to tell "exactly at the cap" from "over it".
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBodyBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading the answer: %w", timeoutError(ctx, d.timeout, err))
	}
	if len(body) > maxBodyBytes {
		return nil, fmt.Errorf("answer larger than %d MiB", maxBodyBytes>>20)
	}
	named, err := parseNames(body)
	if err != nil {
		return nil, fmt.Errorf("%w; body %s", err, snippet(body))
	}
	return named, nil
}

// answerShapes is how every parsing error says what was expected.
const answerShapes = `expected a v1 PodList or {"pods": ["name", ...]}, in JSON or YAML`

// podListItem is the only part of a v1 Pod the detector reads: the name and the namespace. Decoding into
// this rather than corev1.Pod keeps a 16 MiB PodList cheap and tolerates whatever else the service puts in.
type podListItem struct {
	Kind     string   `json:"kind"`
	Metadata namedPod `json:"metadata"`
}

// namedPod is a pod the answer names. Namespace is "" when the answer does not say ({"pods": [...]}, or
// a PodList item without metadata.namespace).
type namedPod struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
}

// parseNames reads either answer shape, JSON or YAML, and returns the pods in order.
func parseNames(body []byte) ([]namedPod, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, fmt.Errorf("empty answer, %s", answerShapes)
	}
	doc := body
	// JSON is valid YAML, but the YAML path is much slower: take it only when needed.
	if !json.Valid(body) {
		var err error
		if doc, err = yaml.YAMLToJSON(body); err != nil {
			return nil, fmt.Errorf("answer is neither JSON nor YAML (%v), %s", err, answerShapes)
		}
	}
	if trimmed := bytes.TrimSpace(doc); len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, fmt.Errorf("answer is not an object, %s", answerShapes)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(doc, &fields); err != nil {
		return nil, fmt.Errorf("decoding the answer: %w", err)
	}

	rawPods, hasPods := fields["pods"]
	rawItems, hasItems := fields["items"]
	var kind string
	if rawKind, ok := fields["kind"]; ok {
		if err := json.Unmarshal(rawKind, &kind); err != nil {
			return nil, fmt.Errorf("kind is not a string: %w", err)
		}
	}
	switch {
	case hasPods && (hasItems || kind != ""):
		return nil, fmt.Errorf("answer mixes the two shapes (pods with items or kind), %s", answerShapes)
	case hasPods:
		var names []string
		if err := json.Unmarshal(rawPods, &names); err != nil {
			return nil, fmt.Errorf("pods is not a list of names: %w", err)
		}
		named := make([]namedPod, len(names))
		for i, n := range names {
			if n == "" {
				return nil, fmt.Errorf("pods[%d] is an empty name", i)
			}
			named[i].Name = n
		}
		return named, nil
	case kind == "PodList" || (hasItems && (kind == "" || kind == "List")):
		// "List" is what kubectl get pods -o json|yaml prints; accept it when its items are pods.
		var items []podListItem
		if hasItems {
			if err := json.Unmarshal(rawItems, &items); err != nil {
				return nil, fmt.Errorf("items is not a list of pods: %w", err)
			}
		}
		named := make([]namedPod, len(items))
		for i, it := range items {
			if it.Kind != "" && it.Kind != "Pod" {
				return nil, fmt.Errorf("items[%d] is a %s, expected a Pod", i, it.Kind)
			}
			if it.Metadata.Name == "" {
				return nil, fmt.Errorf("items[%d] has no metadata.name", i)
			}
			named[i] = it.Metadata
		}
		return named, nil
	case kind != "":
		return nil, fmt.Errorf("answer is a %s, %s", kind, answerShapes)
	default:
		keys := make([]string, 0, len(fields))
		for k := range fields {
			keys = append(keys, strconv.Quote(k))
		}
		slices.Sort(keys)
		return nil, fmt.Errorf("answer has neither pods nor items (keys: %s), %s", strings.Join(keys, ", "), answerShapes)
	}
}

// rankNames keeps the managed pods of an answer in its order, the first being the worst. A pod given
// twice keeps its first place. Ranks are counted over the whole answer so that the reason matches what the
// service said, even when it named pods this KubervisorService does not manage or pods of another
// namespace (SPEC §5 step 8); a pod without a namespace is taken to be in the request's.
func rankNames(named []namedPod, req *Request) Result {
	var res Result
	seen := make(map[namedPod]struct{}, len(named))
	unique := named[:0:0]
	for _, p := range named {
		// Without a namespace of its own the pod is the request's; without a request namespace the check
		// is off and every pod is taken as the request's, so that a name is still ranked once.
		if p.Namespace == "" || req.Namespace == "" {
			p.Namespace = req.Namespace
		}
		if _, dup := seen[p]; dup {
			continue
		}
		seen[p] = struct{}{}
		unique = append(unique, p)
	}
	for i, p := range unique {
		if p.Namespace != req.Namespace {
			res.Ignored++
			res.IgnoredOtherNamespace++
			continue
		}
		if _, managed := req.Pods[p.Name]; !managed {
			res.Ignored++
			continue
		}
		res.Anomalies = append(res.Anomalies, Anomaly{
			Pod:    p.Name,
			Score:  float64(len(unique) - i),
			Reason: fmt.Sprintf("flagged by custom service (rank %d of %d)", i+1, len(unique)),
		})
	}
	// An answer that names no managed pod says nothing about this fleet, like an empty vector.
	res.NoData = len(res.Anomalies) == 0
	return res
}
