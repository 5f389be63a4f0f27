package endpoints

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	promconfig "github.com/prometheus/common/config"
)

// Reason classifies an endpoint failure, for callers that report it (a condition reason, a metric label).
type Reason string

// The reasons of an *Error.
const (
	// ReasonUnknownEndpoint: the breaker names an endpoint the manager does not define, or names none and
	// there is no default.
	ReasonUnknownEndpoint Reason = "UnknownEndpoint"
	// ReasonUnauthorized: the server answered 401.
	ReasonUnauthorized Reason = "Unauthorized"
	// ReasonForbidden: the server answered 403.
	ReasonForbidden Reason = "Forbidden"
	// ReasonRedirect: the server answered with a redirect, which is never followed.
	ReasonRedirect Reason = "Redirect"
	// ReasonTLS: the TLS handshake failed (the server's certificate, or the client's).
	ReasonTLS Reason = "TLS"
	// ReasonCredentialFile: a token, password, CA, certificate or key file could not be read.
	ReasonCredentialFile Reason = "CredentialFile"
	// ReasonConnection: anything else on the way (refused connection, timeout, DNS).
	ReasonConnection Reason = "Connection"
)

// Error is a failure to use an endpoint, worded so that an administrator knows what to check. Its text
// never holds a credential or a header value.
type Error struct {
	// Endpoint is the endpoint's name; for ReasonUnknownEndpoint the name asked for ("" for the default).
	Endpoint string
	// Reason classifies the failure.
	Reason Reason
	// Message is the whole text of the error.
	Message string
	// Err is the cause, if any (errors.Is(err, context.DeadlineExceeded) keeps working).
	Err error
}

// Error returns Message.
func (e *Error) Error() string { return e.Message }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Target is one endpoint as a breaker of a KubervisorService in one namespace uses it.
type Target struct {
	// Name is the endpoint's name.
	Name string
	// URL is its base URL (a copy: the caller may change it).
	URL *url.URL
	// Client sends the endpoint's TLS, credentials and the headers templated for the namespace. Its
	// failures are *Error (wrapped by net/http in a *url.Error). It sets no timeout of its own: bound each
	// request with a context (Timeout, or the breaker's evaluation period). It never follows a redirect, so
	// credentials and headers reach no other server.
	Client *http.Client
	// Timeout is the endpoint's timeout, 0 when the endpoint sets none.
	Timeout time.Duration
	// Warnings name the endpoint's risky settings, e.g. "endpoint thanos: tls.insecureSkipVerify is set:
	// the server's certificate is not verified".
	Warnings []string
	// Generation is the registry's generation the Target comes from: when Registry.Generation has moved
	// past it, resolve the endpoint again.
	Generation uint64
}

// endpoint is a parsed endpoint with its round tripper, shared by every namespace that uses it.
type endpoint struct {
	*Parsed
	// rt is built by prometheus/common/config: it holds the connection pool, the TLS settings and the
	// credentials.
	rt http.RoundTripper
	// certAsked: the server asked the latest handshake for a client certificate, and the endpoint has
	// none (see tlsConfig).
	certAsked atomic.Bool
}

// httpClientConfig translates an endpoint into prometheus/common's client configuration.
func httpClientConfig(p *Parsed) promconfig.HTTPClientConfig {
	cfg := promconfig.HTTPClientConfig{EnableHTTP2: true}
	if t := p.Spec.TLS; t != nil {
		cfg.TLSConfig = promconfig.TLSConfig{
			CAFile:             t.CAFile,
			CertFile:           t.CertFile,
			KeyFile:            t.KeyFile,
			ServerName:         t.ServerName,
			InsecureSkipVerify: t.InsecureSkipVerify,
		}
	}
	if p.Spec.BearerTokenFile != "" {
		cfg.Authorization = &promconfig.Authorization{Type: "Bearer", CredentialsFile: p.Spec.BearerTokenFile}
	}
	if b := p.Spec.BasicAuth; b != nil {
		cfg.BasicAuth = &promconfig.BasicAuth{Username: b.Username, UsernameFile: b.UsernameFile, PasswordFile: b.PasswordFile}
	}
	return cfg
}

// build makes the endpoint's round tripper with prometheus/common/config.
//
// NOTE: that round tripper is what makes rotation work without a reload, as read in its v0.70.0 code
// (config/http_config.go): the bearer token and the basic-auth username and password files are
// FileSecrets, read again (and trimmed) on every request; the CA, certificate and key files are read and
// hashed on every request by its tlsRoundTripper, which builds a new transport (and closes the old one's
// idle connections) when one of them changed; the client certificate is read at each handshake. The CA,
// certificate and key must be readable and valid here, at load: they are parsed now, and a bad one
// refuses the whole file. Token and password files are only read when a request is sent.
func build(p *Parsed) (*endpoint, []string) {
	var problems []string
	if t := p.Spec.TLS; t != nil {
		if t.CAFile != "" {
			if pem, err := os.ReadFile(t.CAFile); err != nil {
				problems = append(problems, fmt.Sprintf("tls.caFile: cannot read %s: %v", t.CAFile, osError(err)))
			} else if !x509.NewCertPool().AppendCertsFromPEM(pem) {
				problems = append(problems, fmt.Sprintf("tls.caFile: %s holds no PEM certificate", t.CAFile))
			}
		}
		if t.CertFile != "" && t.KeyFile != "" {
			if _, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile); err != nil {
				problems = append(problems, "tls.certFile, tls.keyFile: "+keyPairError(err, t))
			}
		}
	}
	if len(problems) > 0 {
		return nil, problems
	}
	cfg := httpClientConfig(p)
	if err := cfg.Validate(); err != nil {
		return nil, []string{fmt.Sprintf("the HTTP client configuration is invalid: %v", err)}
	}
	ep := &endpoint{Parsed: p}
	rt, err := promconfig.NewRoundTripperFromConfig(cfg, p.Spec.Name, promconfig.WithUserAgent("kubervisor"),
		promconfig.WithNewTLSConfigFunc(ep.tlsConfig))
	if err != nil {
		return nil, []string{fmt.Sprintf("cannot build the HTTP client: %v", err)}
	}
	ep.rt = rt
	return ep, nil
}

// tlsConfig is prometheus/common's TLS configuration of the endpoint, which, for an endpoint without a
// client certificate, records whether the server asks for one (certAsked).
//
// NOTE: in TLS 1.3 the client's handshake ends before the server checks the client's certificate. A
// server that requires one and gets none sends an alert and closes the connection, and the client sees
// either the alert, or, when the server's close overtook it (a reset drops the alert), a broken pipe, a
// reset or an HTTP/2 connection "not established": one refusal, several errors, and a breaker's message
// would change from one evaluation to the next. Knowing that the server asked for a certificate makes
// them one message (classify).
func (e *endpoint) tlsConfig(ctx context.Context, cfg *promconfig.TLSConfig, opts ...promconfig.TLSConfigOption) (*tls.Config, error) {
	c, err := promconfig.NewTLSConfigWithContext(ctx, cfg, opts...)
	if err != nil || c.GetClientCertificate != nil || len(c.Certificates) > 0 {
		return c, err
	}
	verify := c.VerifyConnection
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		// Called at every handshake, before the server's certificate request is answered.
		e.certAsked.Store(false)
		if verify != nil {
			return verify(cs)
		}
		return nil
	}
	c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		e.certAsked.Store(true)
		return &tls.Certificate{}, nil // none, as without this function
	}
	return c, nil
}

// keyPairError words a failure of tls.LoadX509KeyPair. Its errors name files or describe the PEM
// blocks, never their content.
func keyPairError(err error, t *TLS) string {
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		return fmt.Sprintf("cannot read %s: %v", pe.Path, pe.Err)
	}
	return fmt.Sprintf("%s and %s are not a certificate and its key: %v", t.CertFile, t.KeyFile, err)
}

// osError is the operating system's reason of a file error, without the path it repeats.
func osError(err error) error {
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		return pe.Err
	}
	return err
}

// target makes the Target of an endpoint for one namespace: it executes the header templates and wraps
// the shared round tripper.
func (e *endpoint) target(namespace string) (*Target, error) {
	headers := make(map[string]string, len(e.headers))
	for name, tmpl := range e.headers {
		v, err := render(tmpl, namespace)
		if err != nil {
			// NOTE: unreachable in practice: the template executed at load with a sample namespace, and
			// only the value of .Namespace differs here.
			return nil, fmt.Errorf("endpoint %s: header %s: %w", e.Spec.Name, name, err)
		}
		headers[name] = v
	}
	u := *e.URL
	return &Target{
		Name:     e.Spec.Name,
		URL:      &u,
		Client:   &http.Client{Transport: &transport{endpoint: e, headers: headers}},
		Timeout:  e.Timeout,
		Warnings: append([]string(nil), e.Warnings...),
	}, nil
}

// transport sends one namespace's requests to an endpoint.
type transport struct {
	endpoint *endpoint
	// headers are the endpoint's headers rendered for the namespace, by canonical name.
	headers map[string]string
}

// RoundTrip sets the endpoint's headers, replacing any the request holds, and strips credentials the
// request holds, so the endpoint's credentials are always the ones sent. It turns a failure, a 401, a 403
// and a redirect into an *Error.
func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	// NOTE: a clone with its own header map. prometheus/common's round trippers write the Authorization
	// header into the request they are given (its cloneRequest shares the header map) and leave a request
	// that already has one alone: the caller's request must neither receive the token nor pass one.
	r := req.Clone(req.Context())
	for name := range r.Header {
		canonical := http.CanonicalHeaderKey(name)
		if _, ours := t.headers[canonical]; ours || canonical == "Authorization" || canonical == "Proxy-Authorization" {
			delete(r.Header, name)
		}
	}
	for name, value := range t.headers {
		r.Header.Set(name, value)
	}
	resp, err := t.endpoint.rt.RoundTrip(r)
	if err != nil {
		return nil, t.endpoint.classify(err)
	}
	if e := t.endpoint.refuse(r.URL, resp); e != nil {
		// Drain a little so the connection can be reused, then close.
		_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
		_ = resp.Body.Close()
		return nil, e
	}
	return resp, nil
}

// CloseIdleConnections closes the idle connections of the endpoint's pool (shared by every namespace).
func (t *transport) CloseIdleConnections() {
	closeIdle(t.endpoint.rt)
}

func closeIdle(rt http.RoundTripper) {
	if c, ok := rt.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// refuse returns the *Error a response stands for: 401, 403 and redirects. Other statuses are the
// detector's to judge. The response's body and headers (WWW-Authenticate, Location's query) are never
// quoted: they are the server's words and may echo what was sent.
func (e *endpoint) refuse(sent *url.URL, resp *http.Response) *Error {
	name := e.Spec.Name
	switch code := resp.StatusCode; {
	case code == http.StatusUnauthorized:
		hint := "the endpoint requires credentials and sends none: set bearerTokenFile or basicAuth"
		switch {
		case e.Spec.BearerTokenFile != "":
			hint = "check the bearer token file"
		case e.Spec.BasicAuth != nil:
			hint = "check the basic auth username and password files"
		}
		return &Error{Endpoint: name, Reason: ReasonUnauthorized, Message: fmt.Sprintf("endpoint %s: 401 Unauthorized: %s", name, hint)}
	case code == http.StatusForbidden:
		return &Error{Endpoint: name, Reason: ReasonForbidden,
			Message: fmt.Sprintf("endpoint %s: 403 Forbidden: the credentials are valid but not allowed to query", name)}
	case code >= 300 && code < 400 && resp.Header.Get("Location") != "":
		where := "another address"
		if loc, err := sent.Parse(resp.Header.Get("Location")); err == nil {
			where = (&url.URL{Scheme: loc.Scheme, Host: loc.Host, Path: loc.Path}).String()
		}
		return &Error{Endpoint: name, Reason: ReasonRedirect, Message: fmt.Sprintf(
			"endpoint %s: %d %s: the server redirects to %s: set the endpoint's url to the final address (redirects are not followed, "+
				"so that credentials and headers reach no other server)", name, code, http.StatusText(code), where)}
	}
	return nil
}

// classify turns a transport failure into an *Error that says what to check.
func (e *endpoint) classify(err error) *Error {
	name := e.Spec.Name
	tlsErr := func(format string, args ...any) *Error {
		return &Error{Endpoint: name, Reason: ReasonTLS, Message: fmt.Sprintf("endpoint %s: TLS: ", name) + fmt.Sprintf(format, args...), Err: err}
	}

	if pathErr, ok := errors.AsType[*fs.PathError](err); ok {
		if field := e.fileField(pathErr.Path); field != "" {
			return &Error{Endpoint: name, Reason: ReasonCredentialFile, Err: err,
				Message: fmt.Sprintf("endpoint %s: cannot read %s %s: %v", name, field, pathErr.Path, pathErr.Err)}
		}
	}
	var unknownAuthority x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	var verification *tls.CertificateVerificationError
	var record tls.RecordHeaderError
	var opErr *net.OpError
	remoteAlert := errors.As(err, &opErr) && opErr.Op == "remote error" && strings.HasPrefix(opErr.Err.Error(), "tls: ")
	switch {
	case e.certAsked.Load() && (remoteAlert || closedByPeer(err)):
		return tlsErr("the server asked for a client certificate and refused the connection without one: set tls.certFile and tls.keyFile")
	case errors.As(err, &unknownAuthority):
		return tlsErr("the server's certificate is not signed by a known authority: check tls.caFile")
	case errors.As(err, &hostname):
		return tlsErr("the server's certificate does not name the host (%v): check the url's host or tls.serverName", hostname)
	case errors.As(err, &invalid):
		return tlsErr("the server's certificate is not valid (%v): check the server's certificate and tls.caFile", invalid)
	case errors.As(err, &verification):
		return tlsErr("the server's certificate does not verify (%v): check tls.caFile and tls.serverName", verification.Err)
	case errors.As(err, &record):
		return tlsErr("the server does not speak TLS: check the url's scheme")
	case remoteAlert:
		// The server refused the handshake with an alert: in TLS 1.3 a refused (or missing) client
		// certificate is only seen this way, at the first read.
		if t := e.Spec.TLS; t != nil && t.CertFile != "" {
			return tlsErr("the server refused the handshake (%v): check tls.certFile and tls.keyFile, and that the server trusts their authority", opErr.Err)
		}
		return tlsErr("the server refused the handshake (%v): it may require a client certificate: set tls.certFile and tls.keyFile", opErr.Err)
	}
	return &Error{Endpoint: name, Reason: ReasonConnection, Message: fmt.Sprintf("endpoint %s: %v", name, err), Err: err}
}

// closedByPeer says whether err is the server closing the connection under a request.
func closedByPeer(err error) bool {
	// NOTE: golang.org/x/net/http2 does not export the error of a new connection closed before its first
	// request ("http2: client conn could not be established"); its text is all there is to match.
	return errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) || strings.Contains(err.Error(), "http2: client conn could not be established")
}

// fileField names the field of a file the endpoint reads, "" for a path it does not know.
func (e *endpoint) fileField(path string) string {
	s := e.Spec
	fields := [][2]string{{"bearerTokenFile", s.BearerTokenFile}}
	if s.BasicAuth != nil {
		fields = append(fields,
			[2]string{"basicAuth.usernameFile", s.BasicAuth.UsernameFile}, [2]string{"basicAuth.passwordFile", s.BasicAuth.PasswordFile})
	}
	if s.TLS != nil {
		fields = append(fields, [2]string{"tls.caFile", s.TLS.CAFile}, [2]string{"tls.certFile", s.TLS.CertFile}, [2]string{"tls.keyFile", s.TLS.KeyFile})
	}
	for _, f := range fields {
		if f[1] != "" && f[1] == path {
			return f[0]
		}
	}
	return ""
}

// compile is what the registry stores of a configuration: the built endpoints.
func compile(cfg *Config) (map[string]*endpoint, error) {
	var problems []string
	out := make(map[string]*endpoint, len(cfg.Endpoints))
	for _, name := range cfg.Names() {
		ep, errs := build(cfg.Endpoints[name])
		for _, e := range errs {
			problems = append(problems, fmt.Sprintf("endpoint %q: %s", name, e))
		}
		if ep != nil {
			out[name] = ep
		}
	}
	if len(problems) > 0 {
		for _, ep := range out {
			closeIdle(ep.rt)
		}
		return nil, &ConfigError{Problems: problems}
	}
	return out, nil
}
