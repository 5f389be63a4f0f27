package metricsauth

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/go-logr/logr"
	authnv1 "k8s.io/api/authentication/v1"
	clocktesting "k8s.io/utils/clock/testing"
)

// fakeReviewer knows one token ("good", user prometheus) and allows prometheus `get /metrics`; it counts
// the reviews it is asked for.
type fakeReviewer struct {
	authns, authzs int
	err            error
}

func (f *fakeReviewer) Authenticate(_ context.Context, token string) (authnv1.UserInfo, bool, error) {
	f.authns++
	if f.err != nil {
		return authnv1.UserInfo{}, false, f.err
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
	clk.SetTime(clk.Now().Add(DenyTTL))
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

func TestPruneBoundsTheCache(t *testing.T) {
	now := time.Now()
	c := newTTLCache[int, int]()
	for i := range maxEntries {
		c.m[i] = ttlEntry[int]{expires: now.Add(time.Duration(i%2) * time.Minute)} // half expired
	}
	c.prune(now)
	if len(c.m) != maxEntries/2 {
		t.Fatalf("%d entries after pruning a full cache, want %d (the expired ones dropped)", len(c.m), maxEntries/2)
	}
	for i := range maxEntries / 2 {
		c.m[maxEntries+i] = ttlEntry[int]{expires: now.Add(time.Minute)}
	}
	c.prune(now)
	if len(c.m) != 0 {
		t.Fatalf("%d entries after pruning a full cache of live entries, want 0", len(c.m))
	}
}
