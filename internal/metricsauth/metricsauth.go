// Package metricsauth puts the metrics endpoint behind the API server's authentication and authorization:
// a request carries a bearer token, which a TokenReview authenticates, and the user it names must be
// allowed the request's verb on its path (a non-resource SubjectAccessReview, e.g. `get` on `/metrics`,
// which config/rbac/metrics_reader_role.yaml grants). Answers are cached: authentications for
// AuthenticationTTL, allowed decisions for AllowTTL and denied ones for DenyTTL, so a scrape every few
// seconds costs a review now and then, not one per scrape.
//
// NOTE: controller-runtime's metrics/filters package does the same through k8s.io/apiserver's delegating
// authenticator and authorizer; linking k8s.io/apiserver (with CEL, gRPC and OpenTelemetry behind it) made
// the manager binary 79 MB instead of 49 MB and its resident memory larger by as much (docs/scaling.md).
// Client certificates are not accepted: Prometheus scrapes with its service account's token.
package metricsauth

import (
	"context"
	"crypto/sha256"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	authenticationv1 "k8s.io/client-go/kubernetes/typed/authentication/v1"
	authorizationv1 "k8s.io/client-go/kubernetes/typed/authorization/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// How long answers are cached, and how long a review may take.
const (
	AuthenticationTTL = time.Minute
	AllowTTL          = 5 * time.Minute
	DenyTTL           = 30 * time.Second
	ReviewTimeout     = 10 * time.Second
	// maxEntries bounds each cache; a full cache forgets its expired entries, then everything.
	maxEntries = 4096
)

// Reviewer asks the API server: who holds this token, and may that user do this.
type Reviewer interface {
	// Authenticate returns the user the token names; ok is false for a token the API server refuses.
	Authenticate(ctx context.Context, token string) (user authnv1.UserInfo, ok bool, err error)
	// Authorize reports whether user may do verb on the non-resource path, and the API server's reason.
	Authorize(ctx context.Context, user authnv1.UserInfo, verb, path string) (allowed bool, reason string, err error)
}

// FilterProvider is a metricsserver.Options.FilterProvider: the filter reviews with the API server of c.
func FilterProvider(c *rest.Config, httpClient *http.Client) (metricsserver.Filter, error) {
	authn, err := authenticationv1.NewForConfigAndClient(c, httpClient)
	if err != nil {
		return nil, fmt.Errorf("creating the TokenReview client: %w", err)
	}
	authz, err := authorizationv1.NewForConfigAndClient(c, httpClient)
	if err != nil {
		return nil, fmt.Errorf("creating the SubjectAccessReview client: %w", err)
	}
	return New(apiReviewer{authn: authn, authz: authz}, clock.RealClock{}), nil
}

// New returns a filter that authenticates and authorizes each request with r, caching the answers by clk.
func New(r Reviewer, clk clock.PassiveClock) metricsserver.Filter {
	g := &gate{r: r, clock: clk, users: newTTLCache[[32]byte, authentication](), decisions: newTTLCache[string, decision]()}
	return func(log logr.Logger, next http.Handler) (http.Handler, error) {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if code, msg := g.check(req, log); code != http.StatusOK {
				http.Error(w, msg, code)
				return
			}
			next.ServeHTTP(w, req)
		}), nil
	}
}

// authentication is a TokenReview's answer.
type authentication struct {
	user authnv1.UserInfo
	ok   bool
}

// decision is a SubjectAccessReview's answer.
type decision struct {
	allowed bool
	reason  string
}

// gate holds the caches of one filter.
type gate struct {
	r         Reviewer
	clock     clock.PassiveClock
	users     *ttlCache[[32]byte, authentication] // by the token's SHA-256: the cache holds no token
	decisions *ttlCache[string, decision]
}

// check returns http.StatusOK when the request may go on, else the status and message to answer.
func (g *gate) check(req *http.Request, log logr.Logger) (int, string) {
	token, ok := bearerToken(req)
	if !ok {
		return http.StatusUnauthorized, "Unauthorized"
	}
	authn, err := g.authenticate(req.Context(), token)
	switch {
	case err != nil:
		log.Error(err, "Authentication failed")
		return http.StatusInternalServerError, "Authentication failed"
	case !authn.ok:
		log.V(4).Info("Authentication failed: the token was refused")
		return http.StatusUnauthorized, "Unauthorized"
	}
	verb := strings.ToLower(req.Method)
	d, err := g.authorize(req.Context(), authn.user, verb, req.URL.Path)
	if err != nil {
		msg := fmt.Sprintf("Authorization for user %s failed", authn.user.Username)
		log.Error(err, msg)
		return http.StatusInternalServerError, msg
	}
	if !d.allowed {
		msg := fmt.Sprintf("Authorization denied for user %s", authn.user.Username)
		log.V(4).Info(msg, "verb", verb, "path", req.URL.Path, "reason", d.reason)
		return http.StatusForbidden, msg
	}
	return http.StatusOK, ""
}

// bearerToken is the token of an "Authorization: Bearer <token>" header.
func bearerToken(req *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(strings.TrimSpace(req.Header.Get("Authorization")), " ")
	token = strings.TrimSpace(token)
	if !ok || !strings.EqualFold(scheme, "bearer") || token == "" {
		return "", false
	}
	return token, true
}

func (g *gate) authenticate(ctx context.Context, token string) (authentication, error) {
	return g.users.getOrAsk(g.clock.Now(), sha256.Sum256([]byte(token)), func() (authentication, time.Duration, error) {
		user, ok, err := g.r.Authenticate(ctx, token)
		return authentication{user: user, ok: ok}, AuthenticationTTL, err
	})
}

func (g *gate) authorize(ctx context.Context, user authnv1.UserInfo, verb, path string) (decision, error) {
	return g.decisions.getOrAsk(g.clock.Now(), decisionKey(user, verb, path), func() (decision, time.Duration, error) {
		allowed, reason, err := g.r.Authorize(ctx, user, verb, path)
		if allowed {
			return decision{allowed: true, reason: reason}, AllowTTL, err
		}
		return decision{reason: reason}, DenyTTL, err
	})
}

// decisionKey names what a SubjectAccessReview decides on: the user (name, UID, groups, extra), verb and path.
func decisionKey(user authnv1.UserInfo, verb, path string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%q %q %q %q %q", user.Username, user.UID, verb, path, user.Groups)
	for _, k := range slices.Sorted(maps.Keys(user.Extra)) {
		fmt.Fprintf(&b, " %q=%q", k, []string(user.Extra[k]))
	}
	return b.String()
}

// ttlCache remembers answers until they expire, at most maxEntries of them.
type ttlCache[K comparable, V any] struct {
	mu sync.Mutex
	m  map[K]ttlEntry[V]
}

type ttlEntry[V any] struct {
	v       V
	expires time.Time
}

func newTTLCache[K comparable, V any]() *ttlCache[K, V] {
	return &ttlCache[K, V]{m: map[K]ttlEntry[V]{}}
}

// getOrAsk returns the unexpired answer for k, or asks for one and keeps it for the TTL ask gives. An
// error is not kept: the next request asks again.
func (c *ttlCache[K, V]) getOrAsk(now time.Time, k K, ask func() (V, time.Duration, error)) (V, error) {
	c.mu.Lock()
	e, hit := c.m[k]
	c.mu.Unlock()
	if hit && now.Before(e.expires) {
		return e.v, nil
	}
	v, ttl, err := ask()
	if err != nil {
		var zero V
		return zero, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.prune(now)
	c.m[k] = ttlEntry[V]{v: v, expires: now.Add(ttl)}
	return v, nil
}

// prune makes room in a full cache: it drops the expired entries, and everything if none had expired.
// c.mu is held.
func (c *ttlCache[K, V]) prune(now time.Time) {
	if len(c.m) < maxEntries {
		return
	}
	for k, e := range c.m {
		if !now.Before(e.expires) {
			delete(c.m, k)
		}
	}
	if len(c.m) >= maxEntries {
		clear(c.m)
	}
}

// apiReviewer reviews with the API server.
type apiReviewer struct {
	authn authenticationv1.TokenReviewsGetter
	authz authorizationv1.SubjectAccessReviewsGetter
}

func (a apiReviewer) Authenticate(ctx context.Context, token string) (authnv1.UserInfo, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, ReviewTimeout)
	defer cancel()
	tr, err := a.authn.TokenReviews().Create(ctx, &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
	if err != nil {
		return authnv1.UserInfo{}, false, fmt.Errorf("creating a TokenReview: %w", err)
	}
	return tr.Status.User, tr.Status.Authenticated, nil
}

func (a apiReviewer) Authorize(ctx context.Context, user authnv1.UserInfo, verb, path string) (bool, string, error) {
	ctx, cancel := context.WithTimeout(ctx, ReviewTimeout)
	defer cancel()
	extra := make(map[string]authzv1.ExtraValue, len(user.Extra))
	for k, v := range user.Extra {
		extra[k] = authzv1.ExtraValue(v)
	}
	sar, err := a.authz.SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		User: user.Username, UID: user.UID, Groups: user.Groups, Extra: extra,
		NonResourceAttributes: &authzv1.NonResourceAttributes{Path: path, Verb: verb},
	}}, metav1.CreateOptions{})
	if err != nil {
		return false, "", fmt.Errorf("creating a SubjectAccessReview: %w", err)
	}
	return sar.Status.Allowed && !sar.Status.Denied, sar.Status.Reason, nil
}
