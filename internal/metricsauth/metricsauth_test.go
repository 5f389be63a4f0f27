package metricsauth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	authnv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clocktesting "k8s.io/utils/clock/testing"
)

// fakeReviewer knows two tokens ("good", user prometheus, and "stranger") and allows prometheus `get
// /metrics`; it counts the reviews it is asked for, and the TokenReviews by token.
type fakeReviewer struct {
	authns, authzs int
	asked          map[string]int // TokenReviews by token
	err            error          // every review fails with err
	// The next TokenReviews and SubjectAccessReviews fail with these errors, one each, before err.
	authnErrs, authzErrs []error
}

// next pops the first of errs, else is err.
func next(errs *[]error, err error) error {
	if len(*errs) == 0 {
		return err
	}
	err, *errs = (*errs)[0], (*errs)[1:]
	return err
}

func (f *fakeReviewer) Authenticate(_ context.Context, token string) (authnv1.UserInfo, bool, error) {
	f.authns++
	if f.asked == nil {
		f.asked = map[string]int{}
	}
	f.asked[token]++
	if err := next(&f.authnErrs, f.err); err != nil {
		return authnv1.UserInfo{}, false, err
	}
	switch token {
	case "good":
		return authnv1.UserInfo{Username: "prometheus", Groups: []string{"monitoring"}}, true, nil
	case "stranger":
		return authnv1.UserInfo{Username: "stranger"}, true, nil
	}
	return authnv1.UserInfo{}, false, nil
}

func (f *fakeReviewer) Authorize(_ context.Context, user authnv1.UserInfo, verb, path string) (bool, string, error) {
	f.authzs++
	if err := next(&f.authzErrs, f.err); err != nil {
		return false, "", err
	}
	if user.Username == "prometheus" && verb == "get" && path == "/metrics" {
		return true, "", nil
	}
	return false, "no rule", nil
}

func serve(t *testing.T, h http.Handler, method, path, authorization string) int {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code
}

func filtered(t *testing.T, r Reviewer, clk *clocktesting.FakePassiveClock) http.Handler {
	t.Helper()
	h, err := New(r, clk)(logr.Discard(), http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestFilterAnswers(t *testing.T) {
	cases := map[string]struct {
		method, path, authorization string
		want                        int
	}{
		"no header":                {"GET", "/metrics", "", http.StatusUnauthorized},
		"not a bearer token":       {"GET", "/metrics", "Basic Z29vZA==", http.StatusUnauthorized},
		"an empty bearer token":    {"GET", "/metrics", "Bearer ", http.StatusUnauthorized},
		"a refused token":          {"GET", "/metrics", "Bearer forged", http.StatusUnauthorized},
		"a user without the right": {"GET", "/metrics", "Bearer stranger", http.StatusForbidden},
		"another path":             {"GET", "/debug", "Bearer good", http.StatusForbidden},
		"another verb":             {"POST", "/metrics", "Bearer good", http.StatusForbidden},
		"the reader":               {"GET", "/metrics", "Bearer good", http.StatusOK},
		"the scheme in lower case": {"GET", "/metrics", "bearer good", http.StatusOK},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			h := filtered(t, &fakeReviewer{}, clocktesting.NewFakePassiveClock(time.Now()))
			if got := serve(t, h, tc.method, tc.path, tc.authorization); got != tc.want {
				t.Errorf("status %d, want %d", got, tc.want)
			}
		})
	}
}

func TestFilterReviewErrorsAreServerErrorsAndNotCached(t *testing.T) {
	r := &fakeReviewer{err: errors.New("API server unreachable")}
	h := filtered(t, r, clocktesting.NewFakePassiveClock(time.Now()))
	if got := serve(t, h, "GET", "/metrics", "Bearer good"); got != http.StatusInternalServerError {
		t.Fatalf("status %d, want 500", got)
	}
	r.err = nil
	if got := serve(t, h, "GET", "/metrics", "Bearer good"); got != http.StatusOK {
		t.Fatalf("status %d after the API server came back, want 200", got)
	}
}

// TestFilterCachesAnswers counts the reviews: one of each per TTL, not one per scrape.
func TestFilterCachesAnswers(t *testing.T) {
	r := &fakeReviewer{}
	clk := clocktesting.NewFakePassiveClock(time.Now())
	h := filtered(t, r, clk)
	scrape := func(token string, want int) {
		t.Helper()
		if got := serve(t, h, "GET", "/metrics", "Bearer "+token); got != want {
			t.Fatalf("status %d, want %d", got, want)
		}
	}
	for range 5 {
		scrape("good", http.StatusOK)
		scrape("stranger", http.StatusForbidden)
	}
	if r.authns != 2 || r.authzs != 2 {
		t.Fatalf("10 scrapes of 2 tokens sent %d TokenReviews and %d SubjectAccessReviews, want 2 and 2", r.authns, r.authzs)
	}
	clk.SetTime(clk.Now().Add(DenyTTL + time.Nanosecond)) // an answer is good through the last instant of its TTL
	scrape("good", http.StatusOK)
	scrape("stranger", http.StatusForbidden)
	if r.authns != 2 || r.authzs != 3 {
		t.Fatalf("after the deny TTL: %d TokenReviews and %d SubjectAccessReviews, want 2 and 3 (the denial asked again)", r.authns, r.authzs)
	}
	clk.SetTime(clk.Now().Add(AuthenticationTTL))
	scrape("good", http.StatusOK)
	if r.authns != 3 || r.authzs != 3 {
		t.Fatalf("after the authentication TTL: %d TokenReviews and %d SubjectAccessReviews, want 3 and 3", r.authns, r.authzs)
	}
	clk.SetTime(clk.Now().Add(AllowTTL))
	scrape("good", http.StatusOK)
	if r.authns != 4 || r.authzs != 4 {
		t.Fatalf("after the allow TTL: %d TokenReviews and %d SubjectAccessReviews, want 4 and 4", r.authns, r.authzs)
	}
}

// TestRefusedTokensExpire: a refused token is asked about once per AuthenticationTTL, like an accepted one.
func TestRefusedTokensExpire(t *testing.T) {
	r := &fakeReviewer{}
	clk := clocktesting.NewFakePassiveClock(time.Now())
	h := filtered(t, r, clk)
	for range 3 {
		if got := serve(t, h, "GET", "/metrics", "Bearer forged"); got != http.StatusUnauthorized {
			t.Fatalf("status %d, want 401", got)
		}
	}
	clk.SetTime(clk.Now().Add(AuthenticationTTL))
	serve(t, h, "GET", "/metrics", "Bearer forged")
	if r.asked["forged"] != 1 {
		t.Fatalf("the refused token was reviewed %d times within its TTL, want 1", r.asked["forged"])
	}
	clk.SetTime(clk.Now().Add(time.Nanosecond))
	serve(t, h, "GET", "/metrics", "Bearer forged")
	if r.asked["forged"] != 2 {
		t.Fatalf("the refused token was reviewed %d times after its TTL, want 2", r.asked["forged"])
	}
}

// TestJunkTokensDoNotEvictTheScrapersToken floods the filter with more distinct refused tokens than any of
// its caches holds, between two scrapes with the good token: the second scrape is answered from the cache,
// the good token was reviewed once.
func TestJunkTokensDoNotEvictTheScrapersToken(t *testing.T) {
	const junk = 100_000
	r := &fakeReviewer{}
	h := filtered(t, r, clocktesting.NewFakePassiveClock(time.Now()))
	if got := serve(t, h, "GET", "/metrics", "Bearer good"); got != http.StatusOK {
		t.Fatalf("status %d, want 200", got)
	}
	for i := range junk {
		if got := serve(t, h, "GET", "/metrics", "Bearer junk-"+strconv.Itoa(i)); got != http.StatusUnauthorized {
			t.Fatalf("junk token %d: status %d, want 401", i, got)
		}
	}
	if got := serve(t, h, "GET", "/metrics", "Bearer good"); got != http.StatusOK {
		t.Fatalf("status %d after the flood, want 200", got)
	}
	if r.asked["good"] != 1 {
		t.Fatalf("the good token was reviewed %d times, want 1: the junk evicted it", r.asked["good"])
	}
	if r.authzs != 1 {
		t.Fatalf("%d SubjectAccessReviews, want 1", r.authzs)
	}
	// The refused tokens are cached too, the latest of them at least.
	serve(t, h, "GET", "/metrics", "Bearer junk-"+strconv.Itoa(junk-1))
	if r.authns != junk+1 {
		t.Fatalf("%d TokenReviews, want %d (one per token)", r.authns, junk+1)
	}
}

// gatedReviewer holds each review until n reviews of its kind are under way, or for a moment if fewer come:
// without singleflight the n requests of TestConcurrentMissesShareOneReview all reach it and are let through
// together; with it, one review waits out the moment while the other requests wait for its answer.
type gatedReviewer struct {
	n                    int32
	moment               time.Duration
	authns, authzs       atomic.Int32
	allAuthns, allAuthzs chan struct{}
}

func (g *gatedReviewer) wait(calls *atomic.Int32, all chan struct{}) {
	if calls.Add(1) == g.n {
		close(all)
	}
	select {
	case <-all:
	case <-time.After(g.moment):
	}
}

func (g *gatedReviewer) Authenticate(context.Context, string) (authnv1.UserInfo, bool, error) {
	g.wait(&g.authns, g.allAuthns)
	return authnv1.UserInfo{Username: "prometheus"}, true, nil
}

func (g *gatedReviewer) Authorize(context.Context, authnv1.UserInfo, string, string) (bool, string, error) {
	g.wait(&g.authzs, g.allAuthzs)
	return true, "", nil
}

// TestConcurrentMissesShareOneReview sends n requests with a new token at once: one TokenReview and one
// SubjectAccessReview answer them all.
func TestConcurrentMissesShareOneReview(t *testing.T) {
	const n = 20
	r := &gatedReviewer{n: n, moment: 200 * time.Millisecond, allAuthns: make(chan struct{}), allAuthzs: make(chan struct{})}
	h := filtered(t, r, clocktesting.NewFakePassiveClock(time.Now()))
	start := make(chan struct{})
	codes := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			req := httptest.NewRequest("GET", "/metrics", nil)
			req.Header.Set("Authorization", "Bearer new")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			codes[i] = rec.Code
		})
	}
	close(start)
	wg.Wait()
	for i, code := range codes {
		if code != http.StatusOK {
			t.Errorf("request %d: status %d, want 200", i, code)
		}
	}
	if a, z := r.authns.Load(), r.authzs.Load(); a != 1 || z != 1 {
		t.Fatalf("%d concurrent requests sent %d TokenReviews and %d SubjectAccessReviews, want 1 and 1", n, a, z)
	}
}

// TestTransientReviewErrorsAreRetried: a review that fails transiently once is asked again, and the request
// succeeds; the answer is cached.
func TestTransientReviewErrorsAreRetried(t *testing.T) {
	r := &fakeReviewer{
		authnErrs: []error{apierrors.NewServiceUnavailable("the API server is starting")},
		authzErrs: []error{apierrors.NewTooManyRequests("slow down", 1)},
	}
	h := filtered(t, r, clocktesting.NewFakePassiveClock(time.Now()))
	for range 2 {
		if got := serve(t, h, "GET", "/metrics", "Bearer good"); got != http.StatusOK {
			t.Fatalf("status %d, want 200", got)
		}
	}
	if r.authns != 2 || r.authzs != 2 {
		t.Fatalf("%d TokenReviews and %d SubjectAccessReviews, want 2 and 2 (a failed attempt and a good one each)", r.authns, r.authzs)
	}
}

// TestPersistentTransientErrorsFailTheRequestAndAreNotCached: a review that fails transiently every time is
// given up after reviewBackoff.Steps attempts, the request is answered 500, and the next request asks again.
func TestPersistentTransientErrorsFailTheRequestAndAreNotCached(t *testing.T) {
	attempts := reviewBackoff.Steps
	t.Run("TokenReview", func(t *testing.T) {
		r := &fakeReviewer{err: apierrors.NewInternalError(errors.New("etcdserver: request timed out"))}
		h := filtered(t, r, clocktesting.NewFakePassiveClock(time.Now()))
		for i := 1; i <= 2; i++ {
			if got := serve(t, h, "GET", "/metrics", "Bearer good"); got != http.StatusInternalServerError {
				t.Fatalf("status %d, want 500", got)
			}
			if r.authns != i*attempts {
				t.Fatalf("%d TokenReviews after %d requests, want %d", r.authns, i, i*attempts)
			}
		}
		r.err = nil
		if got := serve(t, h, "GET", "/metrics", "Bearer good"); got != http.StatusOK {
			t.Fatalf("status %d after the API server recovered, want 200", got)
		}
	})
	t.Run("SubjectAccessReview", func(t *testing.T) {
		r := &fakeReviewer{}
		for range attempts {
			r.authzErrs = append(r.authzErrs, apierrors.NewServerTimeout(schema.GroupResource{}, "create", 1))
		}
		h := filtered(t, r, clocktesting.NewFakePassiveClock(time.Now()))
		if got := serve(t, h, "GET", "/metrics", "Bearer good"); got != http.StatusInternalServerError {
			t.Fatalf("status %d, want 500", got)
		}
		if r.authzs != attempts {
			t.Fatalf("%d SubjectAccessReviews, want %d", r.authzs, attempts)
		}
		if got := serve(t, h, "GET", "/metrics", "Bearer good"); got != http.StatusOK {
			t.Fatalf("status %d after the API server recovered, want 200", got)
		}
		if r.authns != 1 || r.authzs != attempts+1 {
			t.Fatalf("%d TokenReviews and %d SubjectAccessReviews, want 1 and %d (the failed decision asked again)", r.authns, r.authzs, attempts+1)
		}
	})
}

// TestOtherReviewErrorsAreNotRetried: an error that would come again (here the manager not allowed to create
// TokenReviews) fails the request at once.
func TestOtherReviewErrorsAreNotRetried(t *testing.T) {
	r := &fakeReviewer{err: apierrors.NewForbidden(schema.GroupResource{Group: "authentication.k8s.io", Resource: "tokenreviews"}, "", nil)}
	h := filtered(t, r, clocktesting.NewFakePassiveClock(time.Now()))
	if got := serve(t, h, "GET", "/metrics", "Bearer good"); got != http.StatusInternalServerError {
		t.Fatalf("status %d, want 500", got)
	}
	if r.authns != 1 {
		t.Fatalf("%d TokenReviews, want 1", r.authns)
	}
}

func TestTransient(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("creating a TokenReview: %w", err) }
	dial := func(errno syscall.Errno) error {
		return &url.Error{Op: "Post", URL: "https://10.96.0.1", Err: &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", errno)}}
	}
	gr := schema.GroupResource{Group: "authentication.k8s.io", Resource: "tokenreviews"}
	badGateway := apierrors.NewGenericServerResponse(http.StatusBadGateway, "POST", gr, "", "", 0, true)
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"429", apierrors.NewTooManyRequests("", 1), true},
		{"500", apierrors.NewInternalError(errors.New("boom")), true},
		{"502 from a proxy", badGateway, true},
		{"503", apierrors.NewServiceUnavailable(""), true},
		{"504", apierrors.NewTimeoutError("", 1), true},
		{"server timeout", apierrors.NewServerTimeout(gr, "create", 1), true},
		{"connection refused", dial(syscall.ECONNREFUSED), true},
		{"connection reset", dial(syscall.ECONNRESET), true},
		{"EOF", &url.Error{Op: "Post", URL: "https://10.96.0.1", Err: io.EOF}, true},
		{"forbidden", apierrors.NewForbidden(gr, "", nil), false},
		{"bad request", apierrors.NewBadRequest(""), false},
		{"unauthorized", apierrors.NewUnauthorized(""), false},
		{"something else", errors.New("API server unreachable"), false},
	} {
		if got := transient(wrap(tc.err)); got != tc.want {
			t.Errorf("%s (%v): transient %t, want %t", tc.name, tc.err, got, tc.want)
		}
	}
}

// TestTokensAreCachedUnderAKeyedHash: the cache holds neither the token nor its SHA-256, and another filter
// (another process) keys the same token differently.
func TestTokensAreCachedUnderAKeyedHash(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(time.Now())
	g := newGate(&fakeReviewer{}, clk)
	if _, err := g.authenticate(t.Context(), "good"); err != nil {
		t.Fatal(err)
	}
	keys := g.authenticated.Keys()
	if len(keys) != 1 {
		t.Fatalf("%d cached tokens, want 1", len(keys))
	}
	k, ok := keys[0].(tokenKey)
	if !ok {
		t.Fatalf("the cache key is a %T, want a tokenKey", keys[0])
	}
	if sum := sha256.Sum256([]byte("good")); k == sum || bytes.Contains(k[:], []byte("good")) {
		t.Fatal("the cache key is the token's SHA-256 or holds the token")
	}
	if other := newGate(&fakeReviewer{}, clk); other.tokenKey("good") == k {
		t.Fatal("two filters key the same token alike: the HMAC key is not random")
	}
}
