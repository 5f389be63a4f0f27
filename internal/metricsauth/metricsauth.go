// Package metricsauth puts the metrics endpoint behind the API server's authentication and authorization:
// a request carries a bearer token, which a TokenReview authenticates, and the user it names must be
// allowed the request's verb on its path (a non-resource SubjectAccessReview, e.g. `get` on `/metrics`,
// which config/rbac/metrics_reader_role.yaml grants). Answers are cached: authentications for
// AuthenticationTTL, allowed decisions for AllowTTL and denied ones for DenyTTL, so a scrape every few
// seconds costs a review now and then, not one per scrape.
//
// The caches are bounded LRUs (apimachinery's LRUExpireCache), and built so that no request can make another
// one's review happen more often:
//   - Tokens are cached under their HMAC-SHA256 with a key drawn at random when the filter is made: the
//     cache holds neither a token nor a plain hash of one. A plain SHA-256 read out of the process (a heap
//     dump, a core file) would still confirm a leaked or guessed token, and be the same in every process
//     and across restarts; the keyed hash means nothing without this process's key.
//   - Tokens the API server refused are cached apart from those it authenticated, in a smaller LRU: a flood
//     of junk tokens evicts only junk, never the scraper's token, which would otherwise be reviewed again on
//     every scrape of a flood. Decisions are cached by user, verb and path; only authenticated users reach
//     them, so one LRU serves.
//   - Requests that miss the cache for the same token (or decision) at the same time share one review
//     (singleflight): a burst of scrapes with a new token, or after its answer expired, costs one
//     TokenReview, not one per request.
//   - A review that fails transiently (the API server overloaded, restarting, timing out, a connection
//     dropped) is tried again after a short back-off (reviewBackoff), within ReviewTimeout in all. A failed
//     review is never cached: the request is answered 500, and the next one asks again.
//
// NOTE: controller-runtime's metrics/filters package does the same through k8s.io/apiserver's delegating
// authenticator and authorizer; linking k8s.io/apiserver (with CEL, gRPC and OpenTelemetry behind it) made
// the manager binary 79 MB instead of 49 MB and its resident memory larger by as much (docs/scaling.md).
// Client certificates are not accepted: Prometheus scrapes with its service account's token.
package metricsauth

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sync/singleflight"
	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/cache"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/util/wait"
	authenticationv1 "k8s.io/client-go/kubernetes/typed/authentication/v1"
	authorizationv1 "k8s.io/client-go/kubernetes/typed/authorization/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/clock"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// How long answers are cached, and how long a review may take, its retries included.
const (
	AuthenticationTTL = time.Minute
	AllowTTL          = 5 * time.Minute
	DenyTTL           = 30 * time.Second
	ReviewTimeout     = 10 * time.Second
	// How many answers each cache holds; a full one forgets its least recently used answer. Refused tokens
	// have the smallest: a request can put any token there, and only the API server can make one authenticated.
	maxAuthenticated = 4096
	maxRefused       = 1024
	maxDecisions     = 4096
)

// reviewBackoff spaces the attempts of a review that fails transiently: 4 attempts, 50, 100 and 200 ms
// apart (plus up to 10%): a review that keeps failing at once gives up after less than half a second.
var reviewBackoff = wait.Backoff{Steps: 4, Duration: 50 * time.Millisecond, Factor: 2, Jitter: 0.1}

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
	g := newGate(r, clk)
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

// tokenKey is what a token is cached under: its HMAC-SHA256 with the gate's key.
type tokenKey [sha256.Size]byte

// gate holds the caches of one filter.
type gate struct {
	r             Reviewer
	hmacKey       []byte                // random, never leaves the process
	authenticated *cache.LRUExpireCache // tokenKey -> authentication, for the tokens the API server authenticated
	refused       *cache.LRUExpireCache // tokenKey -> authentication, for those it refused
	decisions     *cache.LRUExpireCache // decisionKey -> decision
	authns        singleflight.Group    // the TokenReviews under way, by string(tokenKey)
	authzs        singleflight.Group    // the SubjectAccessReviews under way, by decisionKey
}

func newGate(r Reviewer, clk clock.PassiveClock) *gate {
	g := &gate{
		r:             r,
		hmacKey:       make([]byte, sha256.BlockSize),
		authenticated: cache.NewLRUExpireCacheWithClock(maxAuthenticated, clk),
		refused:       cache.NewLRUExpireCacheWithClock(maxRefused, clk),
		decisions:     cache.NewLRUExpireCacheWithClock(maxDecisions, clk),
	}
	_, _ = rand.Read(g.hmacKey) // never fails: crypto/rand ends the program if it cannot read randomness
	return g
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

func (g *gate) tokenKey(token string) tokenKey {
	mac := hmac.New(sha256.New, g.hmacKey)
	mac.Write([]byte(token))
	var k tokenKey
	copy(k[:], mac.Sum(nil))
	return k
}

func (g *gate) authenticate(ctx context.Context, token string) (authentication, error) {
	k := g.tokenKey(token)
	cached := func() (authentication, bool) {
		if a, ok := g.authenticated.Get(k); ok {
			return a.(authentication), true
		}
		if a, ok := g.refused.Get(k); ok {
			return a.(authentication), true
		}
		return authentication{}, false
	}
	return once(&g.authns, string(k[:]), cached, func() (authentication, error) {
		var a authentication
		err := review(ctx, func(ctx context.Context) (err error) {
			a.user, a.ok, err = g.r.Authenticate(ctx, token)
			return err
		})
		switch {
		case err != nil:
			return authentication{}, err
		case a.ok:
			g.authenticated.Add(k, a, AuthenticationTTL)
		default:
			g.refused.Add(k, a, AuthenticationTTL)
		}
		return a, nil
	})
}

func (g *gate) authorize(ctx context.Context, user authnv1.UserInfo, verb, path string) (decision, error) {
	k := decisionKey(user, verb, path)
	cached := func() (decision, bool) {
		d, ok := g.decisions.Get(k)
		if !ok {
			return decision{}, false
		}
		return d.(decision), true
	}
	return once(&g.authzs, k, cached, func() (decision, error) {
		var d decision
		err := review(ctx, func(ctx context.Context) (err error) {
			d.allowed, d.reason, err = g.r.Authorize(ctx, user, verb, path)
			return err
		})
		switch {
		case err != nil:
			return decision{}, err
		case d.allowed:
			g.decisions.Add(k, d, AllowTTL)
		default:
			g.decisions.Add(k, d, DenyTTL)
		}
		return d, nil
	})
}

// once returns the cached answer, else asks for one (ask caches what it gets); the requests that miss the
// cache for the same key while ask runs wait for its answer instead of asking again.
func once[V any](flights *singleflight.Group, key string, cached func() (V, bool), ask func() (V, error)) (V, error) {
	if v, ok := cached(); ok {
		return v, nil
	}
	v, err, _ := flights.Do(key, func() (any, error) {
		if v, ok := cached(); ok { // the answer of a review that ended since the lookup above
			return v, nil
		}
		v, err := ask()
		return v, err
	})
	if err != nil {
		var zero V
		return zero, err
	}
	return v.(V), nil
}

// review calls ask, again after reviewBackoff while it fails transiently, within ReviewTimeout in all. The
// request's cancellation is not passed on: the other requests waiting for the same review need its answer.
func review(ctx context.Context, ask func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ReviewTimeout)
	defer cancel()
	retriable := func(err error) bool { return ctx.Err() == nil && transient(err) }
	return retry.OnError(reviewBackoff, retriable, func() error { return ask(ctx) })
}

// transient tells the errors a review may get past by trying again shortly: the API server overloaded
// (429), failing or unavailable (500, 502, 503, 504, or it asked for a retry), and the connection refused,
// reset, lost or timed out. Anything else (the manager not allowed to create reviews, a bad request) would
// fail the same way again.
func transient(err error) bool {
	var status apierrors.APIStatus
	return apierrors.IsTooManyRequests(err) || apierrors.IsServerTimeout(err) || apierrors.IsInternalError(err) ||
		apierrors.IsServiceUnavailable(err) || apierrors.IsTimeout(err) ||
		errors.As(err, &status) && status.Status().Code == http.StatusBadGateway ||
		utilnet.IsConnectionRefused(err) || utilnet.IsConnectionReset(err) || utilnet.IsHTTP2ConnectionLost(err) ||
		utilnet.IsProbableEOF(err) || utilnet.IsTimeout(err)
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

// apiReviewer reviews with the API server.
type apiReviewer struct {
	authn authenticationv1.TokenReviewsGetter
	authz authorizationv1.SubjectAccessReviewsGetter
}

func (a apiReviewer) Authenticate(ctx context.Context, token string) (authnv1.UserInfo, bool, error) {
	tr, err := a.authn.TokenReviews().Create(ctx, &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
	if err != nil {
		return authnv1.UserInfo{}, false, fmt.Errorf("creating a TokenReview: %w", err)
	}
	return tr.Status.User, tr.Status.Authenticated, nil
}

func (a apiReviewer) Authorize(ctx context.Context, user authnv1.UserInfo, verb, path string) (bool, string, error) {
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
