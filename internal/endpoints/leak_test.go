package endpoints

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestNoCredentialLeaks collects every text this package produces across failures (request errors, load
// errors, Problem, Warnings, Resolve errors and the registry's log) while servers echo everything they are
// sent, and checks that none holds a token, a password, a username read from a file or a header value.
func TestNoCredentialLeaks(t *testing.T) {
	const (
		token    = "tok-SECRET-1"
		password = "pw-SECRET-2"
		username = "user-SECRET-3"
		apiKey   = "key-SECRET-4"
		tenant   = "org-shop-SECRET-5" // the tenant header as rendered for namespace shop
	)
	secrets := []string{token, password, username, apiKey, tenant}

	dir := t.TempDir()
	writeFile(t, dir, "token", []byte(token))
	writeFile(t, dir, "password", []byte(password))
	writeFile(t, dir, "username", []byte(username))
	writeFile(t, dir, "ca.crt", newAuthority(t, "other CA").pem)

	// echoing answers status, and puts every header it received in its body, in WWW-Authenticate and in a
	// redirect's Location.
	echoing := func(status int) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			var all []string
			for name, values := range r.Header {
				all = append(all, name+"="+strings.Join(values, ","))
			}
			joined := strings.Join(all, ";")
			w.Header().Set("WWW-Authenticate", joined)
			if status == http.StatusFound {
				w.Header().Set("Location", "http://elsewhere.example/login?"+strings.ReplaceAll(joined, " ", "+"))
			}
			w.WriteHeader(status)
			_, _ = w.Write([]byte(joined))
		}
	}
	echo := func(status int) *httptest.Server {
		srv := httptest.NewServer(echoing(status))
		t.Cleanup(srv.Close)
		return srv
	}
	serverCA := newAuthority(t, "CA")
	writeFile(t, dir, "right.crt", serverCA.pem)
	tlsSrv := tlsServer(t, serverCA, nil, echoing(http.StatusUnauthorized))
	slow := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	t.Cleanup(slow.Close)
	closed := httptest.NewServer(http.HandlerFunc(ok))
	closed.Close()

	headers := "  headers:\n    X-Scope-OrgID: \"org-{{ .Namespace }}-SECRET-5\"\n    X-Api-Key: " + apiKey + "\n"
	bearer := "  bearerTokenFile: token\n" + headers
	basic := "  basicAuth:\n    usernameFile: username\n    passwordFile: password\n" + headers
	var texts []string
	var logs logSink

	// Requests that fail.
	for _, tc := range []struct{ url, auth string }{
		{echo(http.StatusUnauthorized).URL, bearer},
		{echo(http.StatusUnauthorized).URL, basic},
		{echo(http.StatusForbidden).URL, bearer},
		{echo(http.StatusFound).URL, basic},
		{tlsSrv.URL, bearer + "  tls:\n    caFile: ca.crt\n"},
		{tlsSrv.URL, basic + "  tls:\n    caFile: right.crt\n    serverName: wrong.example\n"},
		{tlsSrv.URL, basic + "  tls:\n    insecureSkipVerify: true\n"},
		{strings.Replace(echo(http.StatusOK).URL, "http:", "https:", 1), bearer},
		{closed.URL, basic},
		{slow.URL, bearer},
		{echo(http.StatusOK).URL, "  bearerTokenFile: missing-token\n" + headers},
	} {
		r := loadRegistry(t, dir, fmt.Sprintf("default: a\nendpoints:\n- name: a\n  url: %s\n%s", tc.url, tc.auth), logs.logger())
		target, err := r.Resolve("", "shop")
		if err != nil {
			t.Fatal(err)
		}
		texts = append(texts, target.Warnings...)
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, target.URL.String()+"/api/v1/query", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := target.Client.Do(req)
		cancel()
		if err == nil {
			_ = resp.Body.Close()
			t.Errorf("%s with %q answered %d; want an error", tc.url, tc.auth, resp.StatusCode)
			continue
		}
		texts = append(texts, err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", endpointError(t, err).Message))
	}

	// Files that do not load, after one that did: Load's error, Problem, Resolve's error, the log.
	r := loadRegistry(t, dir, "default: a\nendpoints:\n- name: a\n  url: https://h.example\n"+bearer, logs.logger())
	for _, broken := range []string{
		"endpoints:\n- name: a\n  url: https://user-SECRET-3:pw-SECRET-2@h.example\n",
		"endpoints:\n- name: a\n  url: https://user-SECRET-3:pw-SECRET-2%zz@h.example\n",
		"endpoints:\n- name: a\n  url: https://h.example\n  headers:\n    Authorization: Bearer tok-SECRET-1\n",
		"endpoints:\n- name: a\n  url: https://h.example\n  headers:\n    X-Api-Key: \"key-SECRET-4\\n\"\n",
		"endpoints:\n- name: a\n  url: https://h.example\n  bearerToken: tok-SECRET-1\n",
		"endpoints:\n- name: a\n  url: https://h.example\n  basicAuth:\n    username: u\n    password: pw-SECRET-2\n",
		"endpoints:\n- name: a\n  url: https://h.example\n  tls:\n    caFile: password\n",
		"endpoints:\n- name: a\n  url: https://h.example\n  tls:\n    certFile: token\n    keyFile: password\n",
	} {
		writeFile(t, dir, "endpoints.yaml", []byte(broken))
		if err := r.Load(); err != nil {
			texts = append(texts, err.Error())
		} else {
			t.Errorf("the file loaded:\n%s", broken)
		}
		texts = append(texts, r.Problem())
		if _, err := r.Resolve("x", "shop"); err != nil {
			texts = append(texts, err.Error())
		}
	}
	texts = append(texts, logs.text())

	for _, text := range texts {
		for _, secret := range secrets {
			if strings.Contains(text, secret) {
				t.Errorf("%q holds the secret %q", text, secret)
			}
		}
	}
	if len(texts) < 30 || !strings.Contains(logs.text(), "Cannot load detector endpoints") {
		t.Errorf("collected %d texts and the log %q: the test saw less than it should", len(texts), logs.text())
	}
}
