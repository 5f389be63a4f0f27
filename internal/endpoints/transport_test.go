package endpoints

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// endpointError is the *Error behind a client's error; the test fails without one.
func endpointError(t *testing.T, err error) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is no *endpoints.Error", err, err)
	}
	return e
}

// wantError checks that a request failed with an *Error of that reason and text.
func wantError(t *testing.T, status int, err error, reason Reason, message string) {
	t.Helper()
	if err == nil {
		t.Fatalf("request answered %d, want the error %q", status, message)
	}
	e := endpointError(t, err)
	if e.Reason != reason || e.Message != message {
		t.Errorf("error\n got: %s: %s\nwant: %s: %s", e.Reason, e.Message, reason, message)
	}
}

func ok(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }

func TestHTTPSWithTheEndpointsCA(t *testing.T) {
	dir := t.TempDir()
	ca := newAuthority(t, "test CA")
	srv := tlsServer(t, ca, nil, ok)
	writeFile(t, dir, "ca.crt", ca.pem)

	target := resolve(t, dir, fmt.Sprintf("default: a\nendpoints:\n- name: a\n  url: %s\n  tls:\n    caFile: ca.crt\n", srv.URL), "shop")
	if status, err := get(t, target); err != nil || status != http.StatusOK {
		t.Fatalf("GET = %d, %v; want 200", status, err)
	}
}

func TestHTTPSUnknownAuthority(t *testing.T) {
	dir := t.TempDir()
	ca, other := newAuthority(t, "test CA"), newAuthority(t, "other CA")
	srv := tlsServer(t, ca, nil, ok)
	writeFile(t, dir, "other.crt", other.pem)

	for name, tlsBlock := range map[string]string{
		"system authorities": "",
		"another authority":  "  tls:\n    caFile: other.crt\n",
	} {
		t.Run(name, func(t *testing.T) {
			target := resolve(t, dir, fmt.Sprintf("default: a\nendpoints:\n- name: a\n  url: %s\n%s", srv.URL, tlsBlock), "shop")
			status, err := get(t, target)
			wantError(t, status, err, ReasonTLS, "endpoint a: TLS: the server's certificate is not signed by a known authority: check tls.caFile")
		})
	}
}

func TestHTTPSServerName(t *testing.T) {
	dir := t.TempDir()
	ca := newAuthority(t, "test CA")
	_, _, pair := ca.issue(t, "server", "thanos.example")
	srv := tlsServerWith(t, pair, nil, ok)
	writeFile(t, dir, "ca.crt", ca.pem)

	file := fmt.Sprintf("default: a\nendpoints:\n- name: a\n  url: %s\n  tls:\n    caFile: ca.crt\n", srv.URL)
	status, err := get(t, resolve(t, dir, file, "shop"))
	wantError(t, status, err, ReasonTLS, "endpoint a: TLS: the server's certificate does not name the host "+
		"(x509: cannot validate certificate for 127.0.0.1 because it doesn't contain any IP SANs): check the url's host or tls.serverName")

	status, err = get(t, resolve(t, dir, file+"    serverName: thanos.example\n", "shop"))
	if err != nil || status != http.StatusOK {
		t.Fatalf("with serverName: GET = %d, %v; want 200", status, err)
	}
}

func TestHTTPSInsecureSkipVerify(t *testing.T) {
	dir := t.TempDir()
	srv := tlsServer(t, newAuthority(t, "test CA"), nil, ok)
	target := resolve(t, dir, fmt.Sprintf("default: a\nendpoints:\n- name: a\n  url: %s\n  tls:\n    insecureSkipVerify: true\n", srv.URL), "shop")
	if status, err := get(t, target); err != nil || status != http.StatusOK {
		t.Fatalf("GET = %d, %v; want 200", status, err)
	}
	want := []string{"endpoint a: tls.insecureSkipVerify is set: the server's certificate is not verified"}
	if len(target.Warnings) != 1 || target.Warnings[0] != want[0] {
		t.Errorf("Warnings = %q, want %q", target.Warnings, want)
	}
}

func TestHTTPSToAPlainHTTPServer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(ok))
	t.Cleanup(srv.Close)
	url := strings.Replace(srv.URL, "http://", "https://", 1)
	status, err := get(t, resolve(t, t.TempDir(), fmt.Sprintf("default: a\nendpoints:\n- name: a\n  url: %s\n", url), "shop"))
	wantError(t, status, err, ReasonTLS, "endpoint a: TLS: the server does not speak TLS: check the url's scheme")
}

func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	serverCA, clientCA, otherCA := newAuthority(t, "server CA"), newAuthority(t, "client CA"), newAuthority(t, "other CA")
	srv := tlsServer(t, serverCA, clientCA.pool(), ok)
	writeFile(t, dir, "ca.crt", serverCA.pem)
	certPEM, keyPEM, _ := clientCA.issue(t, "kubervisor")
	writeFile(t, dir, "tls.crt", certPEM)
	writeFile(t, dir, "tls.key", keyPEM)
	otherCert, otherKey, _ := otherCA.issue(t, "kubervisor")
	writeFile(t, dir, "other.crt", otherCert)
	writeFile(t, dir, "other.key", otherKey)

	base := fmt.Sprintf("default: a\nendpoints:\n- name: a\n  url: %s\n  tls:\n    caFile: ca.crt\n", srv.URL)

	t.Run("with the client certificate", func(t *testing.T) {
		status, err := get(t, resolve(t, dir, base+"    certFile: tls.crt\n    keyFile: tls.key\n", "shop"))
		if err != nil || status != http.StatusOK {
			t.Fatalf("GET = %d, %v; want 200", status, err)
		}
	})
	t.Run("without a client certificate", func(t *testing.T) {
		status, err := get(t, resolve(t, dir, base, "shop"))
		wantError(t, status, err, ReasonTLS,
			"endpoint a: TLS: the server asked for a client certificate and refused the connection without one: set tls.certFile and tls.keyFile")
	})
	t.Run("with a certificate the server does not trust", func(t *testing.T) {
		status, err := get(t, resolve(t, dir, base+"    certFile: other.crt\n    keyFile: other.key\n", "shop"))
		wantError(t, status, err, ReasonTLS, "endpoint a: TLS: the server refused the handshake (tls: unknown certificate authority): "+
			"check tls.certFile and tls.keyFile, and that the server trusts their authority")
	})
}

// TestCAFileRotation proves that a rewritten CA file is used by the next request, without a reload.
func TestCAFileRotation(t *testing.T) {
	dir := t.TempDir()
	ca, old := newAuthority(t, "new CA"), newAuthority(t, "old CA")
	srv := tlsServer(t, ca, nil, ok)
	caFile := writeFile(t, dir, "ca.crt", old.pem)
	target := resolve(t, dir, fmt.Sprintf("default: a\nendpoints:\n- name: a\n  url: %s\n  tls:\n    caFile: ca.crt\n", srv.URL), "shop")

	status, err := get(t, target)
	wantError(t, status, err, ReasonTLS, "endpoint a: TLS: the server's certificate is not signed by a known authority: check tls.caFile")

	writeFile(t, dir, filepath.Base(caFile), ca.pem)
	if status, err := get(t, target); err != nil || status != http.StatusOK {
		t.Fatalf("after the CA file changed: GET = %d, %v; want 200", status, err)
	}
}

// authServer answers 200 when check accepts the request, else 401; it records what it was sent.
type authServer struct {
	mu       sync.Mutex
	requests []http.Header
}

func (a *authServer) handler(check func(*http.Request) bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.requests = append(a.requests, r.Header.Clone())
		a.mu.Unlock()
		if !check(r) {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusOK)
	}
}

func (a *authServer) last() http.Header {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.requests[len(a.requests)-1]
}

func TestBearerTokenFileIsReadOnEachRequest(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	valid := "token-one"
	var seen authServer
	srv := httptest.NewServer(seen.handler(func(r *http.Request) bool {
		mu.Lock()
		defer mu.Unlock()
		return r.Header.Get("Authorization") == "Bearer "+valid
	}))
	t.Cleanup(srv.Close)
	writeFile(t, dir, "token", []byte("token-one\n"))
	target := resolve(t, dir, fmt.Sprintf("default: a\nendpoints:\n- name: a\n  url: %s\n  bearerTokenFile: token\n", srv.URL), "shop")

	if status, err := get(t, target); err != nil || status != http.StatusOK {
		t.Fatalf("GET = %d, %v; want 200", status, err)
	}

	// The token rotates: the server accepts only the new one, and the file holds it.
	mu.Lock()
	valid = "token-two"
	mu.Unlock()
	writeFile(t, dir, "token", []byte("token-two\n"))
	if status, err := get(t, target); err != nil || status != http.StatusOK {
		t.Fatalf("after rotation: GET = %d, %v; want 200", status, err)
	}
	if got := seen.last().Get("Authorization"); got != "Bearer token-two" {
		t.Errorf("after rotation the server received Authorization %q", got)
	}

	// A token the server refuses.
	writeFile(t, dir, "token", []byte("revoked\n"))
	status, err := get(t, target)
	wantError(t, status, err, ReasonUnauthorized, "endpoint a: 401 Unauthorized: check the bearer token file")
}

func TestBasicAuth(t *testing.T) {
	dir := t.TempDir()
	var seen authServer
	srv := httptest.NewServer(seen.handler(func(r *http.Request) bool {
		user, password, ok := r.BasicAuth()
		return ok && user == "kubervisor" && password == "s3cret-pass"
	}))
	t.Cleanup(srv.Close)
	writeFile(t, dir, "username", []byte("kubervisor\n"))
	writeFile(t, dir, "password", []byte("s3cret-pass\n"))
	writeFile(t, dir, "wrong", []byte("not-the-pass\n"))

	for name, basicAuth := range map[string]string{
		"username":     "    username: kubervisor\n    passwordFile: password\n",
		"usernameFile": "    usernameFile: username\n    passwordFile: password\n",
	} {
		t.Run(name, func(t *testing.T) {
			target := resolve(t, dir, fmt.Sprintf("default: a\nendpoints:\n- name: a\n  url: %s\n  basicAuth:\n%s", srv.URL, basicAuth), "shop")
			if status, err := get(t, target); err != nil || status != http.StatusOK {
				t.Fatalf("GET = %d, %v; want 200", status, err)
			}
		})
	}
	t.Run("wrong password", func(t *testing.T) {
		target := resolve(t, dir, fmt.Sprintf("default: a\nendpoints:\n- name: a\n  url: %s\n  basicAuth:\n    username: kubervisor\n    passwordFile: wrong\n",
			srv.URL), "shop")
		status, err := get(t, target)
		wantError(t, status, err, ReasonUnauthorized, "endpoint a: 401 Unauthorized: check the basic auth username and password files")
	})
}

func TestUnauthorizedWithoutCredentials(t *testing.T) {
	var seen authServer
	srv := httptest.NewServer(seen.handler(func(*http.Request) bool { return false }))
	t.Cleanup(srv.Close)
	status, err := get(t, resolve(t, t.TempDir(), fmt.Sprintf("default: a\nendpoints:\n- name: a\n  url: %s\n", srv.URL), "shop"))
	wantError(t, status, err, ReasonUnauthorized,
		"endpoint a: 401 Unauthorized: the endpoint requires credentials and sends none: set bearerTokenFile or basicAuth")
}

func TestForbidden(t *testing.T) {
	dir := t.TempDir()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusForbidden)
		_, _ = w.Write([]byte("user system:serviceaccount:x cannot get namespaces"))
	}))
	t.Cleanup(srv.Close)
	writeFile(t, dir, "token", []byte("t"))
	status, err := get(t, resolve(t, dir, fmt.Sprintf("default: a\nendpoints:\n- name: a\n  url: %s\n  bearerTokenFile: token\n", srv.URL), "shop"))
	wantError(t, status, err, ReasonForbidden, "endpoint a: 403 Forbidden: the credentials are valid but not allowed to query")
}

func TestUnreadableCredentialFiles(t *testing.T) {
	dir := t.TempDir()
	srv := httptest.NewServer(http.HandlerFunc(ok))
	t.Cleanup(srv.Close)
	missing := filepath.Join(dir, "missing")
	for name, tc := range map[string]struct{ auth, want string }{
		"bearer token": {
			auth: "  bearerTokenFile: missing\n",
			want: "endpoint a: cannot read bearerTokenFile " + missing + ": no such file or directory",
		},
		"password": {
			auth: "  basicAuth:\n    username: u\n    passwordFile: missing\n",
			want: "endpoint a: cannot read basicAuth.passwordFile " + missing + ": no such file or directory",
		},
		"username": {
			auth: "  basicAuth:\n    usernameFile: missing\n    passwordFile: missing\n",
			want: "endpoint a: cannot read basicAuth.usernameFile " + missing + ": no such file or directory",
		},
	} {
		t.Run(name, func(t *testing.T) {
			status, err := get(t, resolve(t, dir, fmt.Sprintf("default: a\nendpoints:\n- name: a\n  url: %s\n%s", srv.URL, tc.auth), "shop"))
			wantError(t, status, err, ReasonCredentialFile, tc.want)
		})
	}
}

// TestHeadersPerNamespace proves that each namespace sends its own tenant header, and that a request can
// override neither the headers nor the credentials.
func TestHeadersPerNamespace(t *testing.T) {
	dir := t.TempDir()
	var seen authServer
	srv := httptest.NewServer(seen.handler(func(*http.Request) bool { return true }))
	t.Cleanup(srv.Close)
	writeFile(t, dir, "token", []byte("the-token"))
	r := loadRegistry(t, dir, fmt.Sprintf(`default: a
endpoints:
- name: a
  url: %s
  bearerTokenFile: token
  headers:
    X-Scope-OrgID: "tenant-{{ .Namespace }}"
    X-Static: fixed
`, srv.URL), nopLogger())

	for _, namespace := range []string{"shop", "billing"} {
		target, err := r.Resolve("a", namespace)
		if err != nil {
			t.Fatal(err)
		}
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, target.URL.String(), nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Scope-OrgID", "victim")
		req.Header["x-scope-orgid"] = []string{"victim-raw"} // a non-canonical key, as a careless caller may write
		req.Header.Add("X-Static", "other")
		req.Header.Set("Authorization", "Bearer stolen")
		resp, err := target.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()

		got := seen.last()
		want := map[string][]string{
			"X-Scope-Orgid": {"tenant-" + namespace},
			"X-Static":      {"fixed"},
			"Authorization": {"Bearer the-token"},
		}
		for name, values := range want {
			if fmt.Sprint(got.Values(name)) != fmt.Sprint(values) {
				t.Errorf("namespace %s: the server received %s %q, want %q", namespace, name, got.Values(name), values)
			}
		}
		if req.Header.Get("Authorization") != "Bearer stolen" || req.Header.Get("X-Scope-OrgID") != "victim" {
			t.Errorf("namespace %s: the caller's request was changed: %v", namespace, req.Header)
		}
	}
}

// TestTheCallersRequestIsNotChanged proves that the token never lands in the caller's request headers
// (prometheus/common's round trippers write into the request they are given).
func TestTheCallersRequestIsNotChanged(t *testing.T) {
	dir := t.TempDir()
	srv := httptest.NewServer(http.HandlerFunc(ok))
	t.Cleanup(srv.Close)
	writeFile(t, dir, "token", []byte("the-token"))
	target := resolve(t, dir, fmt.Sprintf("default: a\nendpoints:\n- name: a\n  url: %s\n  bearerTokenFile: token\n  headers:\n    X-Tenant: t\n", srv.URL), "shop")
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, target.URL.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := target.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if len(req.Header) != 0 {
		t.Errorf("the caller's request now holds headers %v", req.Header)
	}
}

func TestRedirectsAreNotFollowed(t *testing.T) {
	var hits sync.Map
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Store("other", r.Header.Get("X-Tenant"))
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(other.Close)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+"/login?token=leaked#x", http.StatusFound)
	}))
	t.Cleanup(srv.Close)
	status, err := get(t, resolve(t, t.TempDir(), fmt.Sprintf("default: a\nendpoints:\n- name: a\n  url: %s\n  headers:\n    X-Tenant: t\n", srv.URL), "shop"))
	wantError(t, status, err, ReasonRedirect, "endpoint a: 302 Found: the server redirects to "+other.URL+"/login: "+
		"set the endpoint's url to the final address (redirects are not followed, so that credentials and headers reach no other server)")
	if _, contacted := hits.Load("other"); contacted {
		t.Error("the redirect was followed")
	}
}

func TestConnectionFailuresAreWrapped(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(ok))
	url := srv.URL
	srv.Close() // nothing listens there any more

	target := resolve(t, t.TempDir(), fmt.Sprintf("default: a\nendpoints:\n- name: a\n  url: %s\n", url), "shop")
	_, err := get(t, target)
	e := endpointError(t, err)
	if e.Reason != ReasonConnection || e.Endpoint != "a" || !strings.HasPrefix(e.Message, "endpoint a: dial tcp ") ||
		!strings.HasSuffix(e.Message, "connect: connection refused") {
		t.Errorf("error %s: %q, want a refused connection of endpoint a", e.Reason, e.Message)
	}
}

func TestTimeoutsAreWrapped(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(release); srv.Close() })
	target := resolve(t, t.TempDir(), fmt.Sprintf("default: a\nendpoints:\n- name: a\n  url: %s\n  timeout: 50ms\n", srv.URL), "shop")
	if target.Timeout != 50*time.Millisecond {
		t.Errorf("Timeout = %s, want 50ms", target.Timeout)
	}
	ctx, cancel := context.WithTimeout(t.Context(), target.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target.URL.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = target.Client.Do(req)
	e := endpointError(t, err)
	if e.Reason != ReasonConnection || e.Message != "endpoint a: context deadline exceeded" || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %s: %q (deadline exceeded: %v), want endpoint a's deadline", e.Reason, e.Message, errors.Is(err, context.DeadlineExceeded))
	}
}

// TestLoadChecksTLSFiles proves that CA, certificate and key files are read when the file loads, and that
// a bad one refuses the file with its field named.
func TestLoadChecksTLSFiles(t *testing.T) {
	dir := t.TempDir()
	ca := newAuthority(t, "CA")
	certPEM, keyPEM, _ := ca.issue(t, "client")
	_, otherKey, _ := ca.issue(t, "other")
	writeFile(t, dir, "ca.crt", ca.pem)
	writeFile(t, dir, "garbage.crt", []byte("not a certificate"))
	writeFile(t, dir, "tls.crt", certPEM)
	writeFile(t, dir, "tls.key", keyPEM)
	writeFile(t, dir, "other.key", otherKey)

	for name, tc := range map[string]struct{ tls, want string }{
		"missing CA": {
			tls:  "    caFile: missing.crt\n",
			want: fmt.Sprintf(`endpoints file %s: endpoint "a": tls.caFile: cannot read %s: no such file or directory`, filepath.Join(dir, "endpoints.yaml"), filepath.Join(dir, "missing.crt")),
		},
		"CA that is no certificate": {
			tls:  "    caFile: garbage.crt\n",
			want: fmt.Sprintf(`endpoints file %s: endpoint "a": tls.caFile: %s holds no PEM certificate`, filepath.Join(dir, "endpoints.yaml"), filepath.Join(dir, "garbage.crt")),
		},
		"missing key": {
			tls:  "    certFile: tls.crt\n    keyFile: missing.key\n",
			want: fmt.Sprintf(`endpoints file %s: endpoint "a": tls.certFile, tls.keyFile: cannot read %s: no such file or directory`, filepath.Join(dir, "endpoints.yaml"), filepath.Join(dir, "missing.key")),
		},
		"key of another certificate": {
			tls: "    certFile: tls.crt\n    keyFile: other.key\n",
			want: fmt.Sprintf(`endpoints file %s: endpoint "a": tls.certFile, tls.keyFile: %s and %s are not a certificate and its key: tls: private key does not match public key`,
				filepath.Join(dir, "endpoints.yaml"), filepath.Join(dir, "tls.crt"), filepath.Join(dir, "other.key")),
		},
	} {
		t.Run(name, func(t *testing.T) {
			r := NewRegistry(writeFile(t, dir, "endpoints.yaml", []byte("endpoints:\n- name: a\n  url: https://h.example\n  tls:\n"+tc.tls)), nopLogger())
			err := r.Load()
			if err == nil || err.Error() != tc.want {
				t.Errorf("Load\n got: %v\nwant: %s", err, tc.want)
			}
		})
	}
}

// TestMissingClientCertificateIsAlwaysTheSameMessage proves that a server refusing a connection without a
// client certificate gets one message, whichever way the refusal reaches the client. In TLS 1.3 the
// client's handshake ends before the server checks its certificate: the refusal is an alert at the first
// read, or, when the server's close overtook it (a reset drops the alert), a broken pipe, a reset or an
// HTTP/2 connection "not established". The server here closes each connection as soon as the client has
// written, as a busy server may.
func TestMissingClientCertificateIsAlwaysTheSameMessage(t *testing.T) {
	dir := t.TempDir()
	serverCA, clientCA := newAuthority(t, "server CA"), newAuthority(t, "client CA")
	_, _, pair := serverCA.issue(t, "server", "127.0.0.1")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	cfg := &tls.Config{Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clientCA.pool(),
		NextProtos: []string{"h2", "http/1.1"}}
	go func() {
		for i := 0; ; i++ {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				tc := tls.Server(c, cfg)
				_ = tc.Handshake() // fails: no client certificate
				// Closing with the client's first bytes unread sends a reset, which overtakes the alert
				// or not, depending on the delay.
				time.Sleep(time.Duration(i%4) * 5 * time.Millisecond)
				_ = c.Close()
			}()
		}
	}()
	writeFile(t, dir, "ca.crt", serverCA.pem)
	target := resolve(t, dir, fmt.Sprintf("default: a\nendpoints:\n- name: a\n  url: https://%s\n  tls:\n    caFile: ca.crt\n", l.Addr()), "shop")
	messages := map[string]int{}
	for range 40 {
		_, err := get(t, target)
		if err == nil {
			t.Fatal("GET succeeded without a client certificate")
		}
		messages[endpointError(t, err).Message]++
		target.Client.CloseIdleConnections()
	}
	want := "endpoint a: TLS: the server asked for a client certificate and refused the connection without one: set tls.certFile and tls.keyFile"
	if len(messages) != 1 || messages[want] == 0 {
		t.Fatalf("messages = %v; want only %q", messages, want)
	}
}
