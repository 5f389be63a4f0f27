package endpoints

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"text/template"
	"time"

	"golang.org/x/net/http/httpguts"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

// MaxTimeout is the longest timeout an endpoint may set. A detector query is bounded by its breaker's
// evaluation period anyway; a longer timeout is a typo.
const MaxTimeout = 5 * time.Minute

const schemeHTTP = "http"

// sampleNamespace is the namespace header templates are executed with at load, so that a template that
// cannot execute is refused then and not at the first evaluation of some breaker.
const sampleNamespace = "kubervisor-sample"

// File is the endpoints file as administrators write it, in YAML or JSON.
type File struct {
	// default names the endpoint of breakers that name none. Optional.
	Default string `json:"default,omitempty"`
	// endpoints are the named connections breakers may use.
	Endpoints []Endpoint `json:"endpoints,omitempty"`
}

// Endpoint is one named connection to a detector (Prometheus, Thanos, Mimir, a custom service).
//
// It holds no secret: credentials are always files, so the endpoints file can be reviewed and diffed
// without revealing one, and so that a token or password is re-read when it rotates.
type Endpoint struct {
	// name is a DNS-1123 label, unique in the file; breakers name it.
	Name string `json:"name"`
	// url is the base URL: http or https, a host, optionally a path prefix; no user information, query or
	// fragment.
	URL string `json:"url"`
	// timeout is a Go duration (> 0, at most 5m) bounding one query. Optional.
	Timeout string `json:"timeout,omitempty"`
	// tls configures the server's verification and the client certificate. Optional.
	TLS *TLS `json:"tls,omitempty"`
	// bearerTokenFile holds the token sent as "Authorization: Bearer <token>", e.g. a projected
	// ServiceAccount token with an audience. Optional; not together with basicAuth.
	BearerTokenFile string `json:"bearerTokenFile,omitempty"`
	// basicAuth sends a username and password. Optional; not together with bearerTokenFile.
	BasicAuth *BasicAuth `json:"basicAuth,omitempty"`
	// headers are sent on every request; a value is a Go template where {{ .Namespace }} is the
	// KubervisorService's namespace. Optional.
	Headers map[string]string `json:"headers,omitempty"`
}

// TLS configures how an endpoint's server is verified and how the manager authenticates to it.
type TLS struct {
	// caFile holds the PEM certificates of the authorities that sign the server's certificate. Optional: the
	// system's authorities otherwise.
	CAFile string `json:"caFile,omitempty"`
	// certFile and keyFile hold the client certificate and its key (mutual TLS); both or neither.
	CertFile string `json:"certFile,omitempty"`
	KeyFile  string `json:"keyFile,omitempty"`
	// serverName is the name the server's certificate must hold, when it is not the URL's host.
	ServerName string `json:"serverName,omitempty"`
	// insecureSkipVerify turns off the server's verification. Allowed, with a warning on every breaker
	// that uses the endpoint.
	InsecureSkipVerify bool `json:"insecureSkipVerify,omitempty"`
}

// BasicAuth sends a username and a password read from files.
type BasicAuth struct {
	// username, or usernameFile that holds it: exactly one.
	Username     string `json:"username,omitempty"`
	UsernameFile string `json:"usernameFile,omitempty"`
	// passwordFile holds the password. Required.
	PasswordFile string `json:"passwordFile,omitempty"`
}

// ConfigError lists every problem of an endpoints file, each as `endpoint "<name>": <field>: <problem>`.
type ConfigError struct {
	Problems []string
}

// Error joins the problems with "; ", so the whole list fits in one status message.
func (e *ConfigError) Error() string {
	return strings.Join(e.Problems, "; ")
}

// Config is a parsed and validated endpoints file: every relative path is resolved, every header template
// has executed once.
type Config struct {
	// Default is the default endpoint's name, "" when none.
	Default string
	// Endpoints by name.
	Endpoints map[string]*Parsed
}

// Parsed is one validated endpoint.
type Parsed struct {
	// Spec is the endpoint as written, with its file paths made absolute.
	Spec Endpoint
	// URL is the parsed url.
	URL *url.URL
	// Timeout is the parsed timeout, 0 when none is set.
	Timeout time.Duration
	// Warnings are the endpoint's risky but accepted settings, each starting with "endpoint <name>: ".
	Warnings []string

	// headers are the header templates by canonical name.
	headers map[string]*template.Template
}

// Names returns the endpoints' names, sorted.
func (c *Config) Names() []string {
	return slices.Sorted(maps.Keys(c.Endpoints))
}

// Parse decodes and validates an endpoints file. Unknown fields are errors. Relative paths are resolved
// against dir, the directory of the file. A file that does not validate returns a *ConfigError naming
// every problem; one that does not decode returns the decoder's error.
func Parse(data []byte, dir string) (*Config, error) {
	var f File
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		return nil, decodeError(data, err)
	}
	var problems []string
	cfg := &Config{Default: f.Default, Endpoints: map[string]*Parsed{}}
	firstIndex := map[string]int{}
	for i, e := range f.Endpoints {
		where := fmt.Sprintf("endpoints[%d]", i)
		if e.Name != "" {
			where = fmt.Sprintf("endpoint %q", e.Name)
		}
		p, errs := parseEndpoint(e, dir)
		for _, err := range errs {
			problems = append(problems, where+": "+err)
		}
		if e.Name == "" {
			continue
		}
		if j, dup := firstIndex[e.Name]; dup {
			problems = append(problems, fmt.Sprintf("%s: name: defined more than once (endpoints[%d] and endpoints[%d])", where, j, i))
			continue
		}
		firstIndex[e.Name] = i
		cfg.Endpoints[e.Name] = p
	}
	if f.Default != "" {
		if _, ok := firstIndex[f.Default]; !ok {
			names := "none is defined"
			if len(firstIndex) > 0 {
				names = "defined: " + strings.Join(slices.Sorted(maps.Keys(firstIndex)), ", ")
			}
			problems = append(problems, fmt.Sprintf("default: %q names no endpoint (%s)", f.Default, names))
		}
	}
	if len(problems) > 0 {
		return nil, &ConfigError{Problems: problems}
	}
	return cfg, nil
}

// decodeError turns a strict decoding failure into a message an administrator can act on. An unknown
// field is located (`endpoint "thanos": tls.caFil: unknown field`), every one of them at once; any other
// failure (bad YAML, a duplicate key, a value of the wrong type) is the decoder's message without its
// plumbing prefixes.
func decodeError(data []byte, strictErr error) error {
	var raw any
	if err := yaml.Unmarshal(data, &raw); err == nil {
		if problems := unknownFields(raw); len(problems) > 0 {
			return &ConfigError{Problems: problems}
		}
	}
	msg := strictErr.Error()
	for _, prefix := range []string{"error unmarshaling JSON: ", "while decoding JSON: ", "json: ", "error converting YAML to JSON: "} {
		msg = strings.TrimPrefix(msg, prefix)
	}
	return errors.New(msg)
}

// unknownFields walks the generic form of the file and names every key the format does not define.
func unknownFields(raw any) []string {
	top, ok := raw.(map[string]any)
	if !ok {
		return nil
	}
	problems := unknownKeys("", top, reflect.TypeFor[File]())
	list, _ := top["endpoints"].([]any)
	for i, item := range list {
		e, ok := item.(map[string]any)
		if !ok {
			continue
		}
		where := fmt.Sprintf("endpoints[%d]", i)
		if name, ok := e["name"].(string); ok && name != "" {
			where = fmt.Sprintf("endpoint %q", name)
		}
		var found []string
		found = append(found, unknownKeys("", e, reflect.TypeFor[Endpoint]())...)
		if t, ok := e["tls"].(map[string]any); ok {
			found = append(found, unknownKeys("tls.", t, reflect.TypeFor[TLS]())...)
		}
		if b, ok := e["basicAuth"].(map[string]any); ok {
			found = append(found, unknownKeys("basicAuth.", b, reflect.TypeFor[BasicAuth]())...)
		}
		for _, f := range found {
			problems = append(problems, where+": "+f)
		}
	}
	return problems
}

// unknownKeys returns "<prefix><key>: unknown field" for each key of m that is no JSON field of t.
func unknownKeys(prefix string, m map[string]any, t reflect.Type) []string {
	known := map[string]bool{}
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		known[name] = true
	}
	var out []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if !known[k] {
			out = append(out, fmt.Sprintf("%s%s: unknown field", prefix, k))
		}
	}
	return out
}

// parseEndpoint validates one endpoint and returns it with its paths resolved against dir, or the list of
// its problems, each as "<field>: <problem>".
func parseEndpoint(e Endpoint, dir string) (*Parsed, []string) {
	var problems []string
	add := func(field, format string, args ...any) {
		problems = append(problems, field+": "+fmt.Sprintf(format, args...))
	}

	if e.Name == "" {
		add("name", "required")
	} else {
		for _, msg := range validation.IsDNS1123Label(e.Name) {
			add("name", "%q is not a DNS-1123 label: %s", e.Name, msg)
		}
	}
	u, msg := parseURL(e.URL)
	if msg != "" {
		add("url", "%s", msg)
	}
	timeout, msg := parseTimeout(e.Timeout)
	if msg != "" {
		add("timeout", "%s", msg)
	}
	spec := withAbsolutePaths(e, dir)
	if t := spec.TLS; t != nil {
		if t.CertFile != "" && t.KeyFile == "" {
			add("tls.keyFile", "required with tls.certFile")
		}
		if t.KeyFile != "" && t.CertFile == "" {
			add("tls.certFile", "required with tls.keyFile")
		}
		if u != nil && u.Scheme == schemeHTTP {
			add("tls", "set, but the url's scheme is http: use https")
		}
	}
	if b := spec.BasicAuth; b != nil {
		if spec.BearerTokenFile != "" {
			add("basicAuth", "not together with bearerTokenFile: choose one")
		}
		switch {
		case b.Username == "" && b.UsernameFile == "":
			add("basicAuth", "username or usernameFile is required")
		case b.Username != "" && b.UsernameFile != "":
			add("basicAuth", "username and usernameFile are exclusive")
		}
		if b.PasswordFile == "" {
			add("basicAuth.passwordFile", "required (a password is always read from a file)")
		}
	}
	headers, headerProblems := parseHeaders(e.Headers)
	problems = append(problems, headerProblems...)
	if len(problems) > 0 {
		return nil, problems
	}

	p := &Parsed{Spec: spec, URL: u, Timeout: timeout, headers: headers}
	if spec.TLS != nil && spec.TLS.InsecureSkipVerify {
		p.Warnings = append(p.Warnings, fmt.Sprintf("endpoint %s: tls.insecureSkipVerify is set: the server's certificate is not verified", e.Name))
	}
	if u.Scheme == schemeHTTP && (spec.BearerTokenFile != "" || spec.BasicAuth != nil) {
		p.Warnings = append(p.Warnings, fmt.Sprintf("endpoint %s: credentials are sent unencrypted: the url's scheme is http", e.Name))
	}
	return p, nil
}

// parseTimeout returns the timeout (0 when unset) or why it is refused.
func parseTimeout(raw string) (time.Duration, string) {
	if raw == "" {
		return 0, ""
	}
	d, err := time.ParseDuration(raw)
	switch {
	case err != nil:
		return 0, fmt.Sprintf("%q is not a duration such as 10s or 1m30s", raw)
	case d <= 0:
		return 0, raw + " must be positive"
	case d > MaxTimeout:
		return 0, fmt.Sprintf("%s is longer than the maximum %s", raw, MaxTimeout)
	}
	return d, ""
}

// withAbsolutePaths returns a copy of e whose relative file paths are joined to dir.
func withAbsolutePaths(e Endpoint, dir string) Endpoint {
	resolve := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	if e.TLS != nil {
		t := *e.TLS
		t.CAFile, t.CertFile, t.KeyFile = resolve(t.CAFile), resolve(t.CertFile), resolve(t.KeyFile)
		e.TLS = &t
	}
	if e.BasicAuth != nil {
		b := *e.BasicAuth
		b.UsernameFile, b.PasswordFile = resolve(b.UsernameFile), resolve(b.PasswordFile)
		e.BasicAuth = &b
	}
	e.BearerTokenFile = resolve(e.BearerTokenFile)
	return e
}

// parseURL returns the parsed base URL or why it is refused. The message never repeats the URL: one
// written with a password in it must not spread that password to status and logs.
func parseURL(raw string) (*url.URL, string) {
	if raw == "" {
		return nil, "required"
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, "not a valid URL"
	}
	switch {
	case u.User != nil:
		return nil, "must not hold a user or password: use basicAuth or bearerTokenFile, with files"
	case u.Scheme != schemeHTTP && u.Scheme != "https":
		return nil, fmt.Sprintf("the scheme must be http or https, not %q", u.Scheme)
	case u.Opaque != "" || u.Host == "" || u.Hostname() == "":
		return nil, "has no host"
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(raw, "#"):
		return nil, "must not have a query or a fragment: the detector writes the query"
	}
	return u, ""
}

const setByClient = "refused: set by the HTTP client"

// refusedHeaders are headers an endpoint may not set, with the reason.
var refusedHeaders = map[string]string{
	"Authorization":       "refused: use bearerTokenFile or basicAuth (credentials are files, never inline)",
	"Proxy-Authorization": "refused: credentials are files, never inline",
	"Cookie":              "refused: credentials are files, never inline",
	"Host":                "refused: set the url's host, or tls.serverName",
	"Content-Length":      setByClient,
	"Content-Type":        "refused: set by the detector",
	"Transfer-Encoding":   setByClient,
	"Connection":          setByClient,
	"Keep-Alive":          setByClient,
	"Upgrade":             setByClient,
	"Te":                  setByClient,
	"Trailer":             setByClient,
}

// parseHeaders validates the header names and parses each value as a template with only .Namespace
// defined, then executes it once with a sample namespace so that a template that cannot execute is
// refused at load. Problems never quote a value: a header may carry a secret.
func parseHeaders(headers map[string]string) (map[string]*template.Template, []string) {
	var problems []string
	out := map[string]*template.Template{}
	seen := map[string]string{}
	for _, name := range slices.Sorted(maps.Keys(headers)) {
		field := fmt.Sprintf("headers[%s]", name)
		if !httpguts.ValidHeaderFieldName(name) {
			field = fmt.Sprintf("headers[%q]", name)
			problems = append(problems, field+": not a valid HTTP header name")
			continue
		}
		canonical := http.CanonicalHeaderKey(name)
		if why, refused := refusedHeaders[canonical]; refused {
			problems = append(problems, field+": "+why)
			continue
		}
		if other, dup := seen[canonical]; dup {
			problems = append(problems, fmt.Sprintf("%s: the same header as headers[%s] (names are case-insensitive)", field, other))
			continue
		}
		seen[canonical] = name
		tmpl, err := template.New(name).Option("missingkey=error").Parse(headers[name])
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: not a valid template: %v", field, err))
			continue
		}
		value, err := render(tmpl, sampleNamespace)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: the template does not execute (only {{ .Namespace }} is defined): %v", field, err))
			continue
		}
		if !httpguts.ValidHeaderFieldValue(value) {
			problems = append(problems, field+": the value holds characters a header cannot carry (such as a line break)")
			continue
		}
		out[canonical] = tmpl
	}
	return out, problems
}

// render executes a header template for a namespace.
func render(tmpl *template.Template, namespace string) (string, error) {
	var b strings.Builder
	if err := tmpl.Execute(&b, map[string]string{"Namespace": namespace}); err != nil {
		return "", err
	}
	return b.String(), nil
}
