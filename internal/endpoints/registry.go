package endpoints

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/clock"

	"github.com/kubervisor/kubervisor/internal/metrics"
)

// DefaultPollInterval is how often Start reads the endpoints file when PollInterval is not set.
const DefaultPollInterval = 2 * time.Second

// maxTargets bounds the Targets a generation keeps: one per endpoint and namespace in use. Past it the
// cache starts again empty; a Target is cheap to make again (its round tripper is the endpoint's).
const maxTargets = 4096

// Registry holds the detector endpoints the manager loaded from its endpoints file and hands out Targets.
// It is safe for concurrent use; Resolve never waits for a load.
type Registry struct {
	// PollInterval is how often Start reads the file to see whether it changed. DefaultPollInterval when 0.
	PollInterval time.Duration
	// Clock dates loads and ticks Start. clock.RealClock when nil.
	Clock clock.WithTicker

	path string
	log  logr.Logger

	// loadMu makes loads one at a time; Resolve never takes it.
	loadMu sync.Mutex
	// fingerprint is the hash of what the last load read (the file, and the TLS files named by a file
	// that did not build); Start loads when it differs. Guarded by loadMu.
	fingerprint [sha256.Size]byte
	// watch are the TLS files the last, failed, load read: fixing one of them is a change to load.
	// Guarded by loadMu.
	watch []string

	current atomic.Pointer[state]
	problem atomic.Pointer[string]
}

// state is one loaded configuration, replaced as a whole by a load.
type state struct {
	// absent is set when the file does not exist (an optional Secret not created): no endpoint, no failure.
	absent     bool
	generation uint64
	// loadedAt is when the configuration loaded; zero before the first successful load.
	loadedAt  time.Time
	def       string
	endpoints map[string]*endpoint
	names     []string

	mu      sync.Mutex
	targets map[targetKey]*Target
}

type targetKey struct{ name, namespace string }

// NewRegistry returns a registry of the endpoints file at path; path "" means the manager has no
// endpoints file, so only the plain detector fields work. Nothing is read before Load.
func NewRegistry(path string, log logr.Logger) *Registry {
	r := &Registry{path: path, log: log}
	r.current.Store(&state{})
	return r
}

// clock returns the registry's clock.
func (r *Registry) clock() clock.WithTicker {
	if r.Clock == nil {
		return clock.RealClock{}
	}
	return r.Clock
}

// Load reads, parses and builds the endpoints file. On success the new configuration replaces the old
// one at once and Generation moves. On failure the last good configuration stays in use, Problem says
// so, the failure is logged, and the error is returned.
func (r *Registry) Load() error {
	r.loadMu.Lock()
	defer r.loadMu.Unlock()
	if r.path == "" {
		r.swap(&state{endpoints: map[string]*endpoint{}})
		return nil
	}

	data, readErr := os.ReadFile(r.path)
	if errors.Is(readErr, fs.ErrNotExist) {
		// NOTE: the file comes from an optional Secret (config/manager, the chart): absent, no endpoint is
		// defined, which is no failure. Start loads it once it appears.
		r.watch, r.fingerprint = nil, r.hash(nil, readErr)
		r.swap(&state{endpoints: map[string]*endpoint{}, absent: true})
		return nil
	}
	var cfg *Config
	endpoints, err := map[string]*endpoint(nil), readErr
	if readErr == nil {
		cfg, err = Parse(data, filepath.Dir(r.path))
		if err == nil {
			endpoints, err = compile(cfg)
		}
	}
	r.watch = nil
	if err != nil && cfg != nil {
		r.watch = tlsFiles(cfg)
	}
	r.fingerprint = r.hash(data, readErr)

	if err != nil {
		if readErr != nil {
			err = fmt.Errorf("cannot read: %w", osError(readErr))
		}
		r.fail(err)
		return fmt.Errorf("endpoints file %s: %w", r.path, err)
	}
	r.swap(&state{def: cfg.Default, endpoints: endpoints, names: cfg.Names()})
	return nil
}

// swap makes s the current configuration; loadMu is held.
func (r *Registry) swap(s *state) {
	old := r.current.Load()
	s.generation = old.generation + 1
	s.loadedAt = r.clock().Now()
	s.targets = map[targetKey]*Target{}
	r.current.Store(s)
	r.problem.Store(nil)
	metrics.EndpointsReloads.WithLabelValues("success").Inc()
	metrics.EndpointsLastReloadSuccessful.Set(1)
	r.log.Info("Loaded detector endpoints", "path", r.path, "generation", s.generation, "endpoints", s.names, "default", s.def)
	for _, name := range s.names {
		for _, w := range s.endpoints[name].Warnings {
			r.log.Info("Detector endpoint has a risky setting", "endpoint", name, "warning", w)
		}
	}
	// Detectors still holding an old Target finish their requests; the old pools keep no idle connection.
	for _, ep := range old.endpoints {
		closeIdle(ep.rt)
	}
}

// fail records a failed load; loadMu is held.
func (r *Registry) fail(err error) {
	s := r.current.Load()
	using := "no configuration has loaded, so no endpoint is usable"
	if !s.loadedAt.IsZero() {
		using = "using the configuration loaded at " + s.loadedAt.UTC().Format(time.RFC3339)
	}
	problem := fmt.Sprintf("endpoints file %s: %v; %s", r.path, err, using)
	r.problem.Store(&problem)
	metrics.EndpointsReloads.WithLabelValues("failure").Inc()
	metrics.EndpointsLastReloadSuccessful.Set(0)
	r.log.Error(err, "Cannot load detector endpoints, keeping the last good configuration", "path", r.path, "loadedAt", s.loadedAt)
}

// hash fingerprints the file's content (or its read error) and the watched TLS files; loadMu is held.
func (r *Registry) hash(data []byte, readErr error) [sha256.Size]byte {
	h := sha256.New()
	if readErr != nil {
		_, _ = fmt.Fprintf(h, "unreadable: %v\x00", readErr)
	}
	_, _ = h.Write(data)
	for _, p := range r.watch {
		b, err := os.ReadFile(p)
		_, _ = fmt.Fprintf(h, "\x00%s\x00%v\x00", p, err)
		_, _ = h.Write(b)
	}
	return [sha256.Size]byte(h.Sum(nil))
}

// tlsFiles lists the CA, certificate and key files a configuration reads at load.
func tlsFiles(cfg *Config) []string {
	var files []string
	for _, name := range cfg.Names() {
		if t := cfg.Endpoints[name].Spec.TLS; t != nil {
			for _, p := range []string{t.CAFile, t.CertFile, t.KeyFile} {
				if p != "" {
					files = append(files, p)
				}
			}
		}
	}
	return files
}

// Start polls the file every PollInterval and loads it when its content changed, until ctx is done. The
// first Load is the caller's. It reads the file rather than watching it: a Secret volume changes by
// swapping a symbolic link, which file notifications report unreliably. A file that fails to load is
// tried again when it, or a TLS file it names, changes.
func (r *Registry) Start(ctx context.Context) error {
	if r.path == "" {
		<-ctx.Done()
		return nil
	}
	interval := r.PollInterval
	if interval <= 0 {
		interval = DefaultPollInterval
	}
	ticker := r.clock().NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C():
			if r.changed() {
				_ = r.Load() // Load logs and records its failure.
			}
		}
	}
}

// changed says whether the file (or a watched TLS file) differs from what the last load read.
func (r *Registry) changed() bool {
	r.loadMu.Lock()
	defer r.loadMu.Unlock()
	data, err := os.ReadFile(r.path)
	return r.hash(data, err) != r.fingerprint
}

// NeedLeaderElection is false: every replica needs the endpoints, leader or not.
func (r *Registry) NeedLeaderElection() bool { return false }

// Generation moves on every successful load. A detector built from a Target of an older generation should
// be built again.
func (r *Registry) Generation() uint64 { return r.current.Load().generation }

// Problem is "" when the last load succeeded, else why it failed and which configuration is in use. It
// names files and fields, never a credential; the caller shows it as a breaker warning.
func (r *Registry) Problem() string {
	if p := r.problem.Load(); p != nil {
		return *p
	}
	return ""
}

// Names returns the names of the loaded endpoints, sorted.
func (r *Registry) Names() []string { return slices.Clone(r.current.Load().names) }

// Resolve returns the Target of an endpoint for a KubervisorService's namespace; name "" is the default
// endpoint. An unknown name, or "" without a default, is an *Error with ReasonUnknownEndpoint. Targets are
// kept per name and namespace until the next load, so a breaker evaluated every second makes no client.
func (r *Registry) Resolve(name, namespace string) (*Target, error) {
	s := r.current.Load()
	ep, err := r.lookup(s, name)
	if err != nil {
		return nil, err
	}
	// A namespace is a DNS label: that keeps header values free of line breaks and of other tenants'
	// names spelled oddly.
	if msgs := validation.IsDNS1123Label(namespace); len(msgs) > 0 {
		return nil, fmt.Errorf("endpoint %s: namespace %q: %s", ep.Spec.Name, namespace, strings.Join(msgs, ", "))
	}
	key := targetKey{ep.Spec.Name, namespace}
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.targets[key]
	if !ok {
		if t, err = ep.target(namespace); err != nil {
			return nil, err
		}
		t.Generation = s.generation
		if len(s.targets) >= maxTargets {
			clear(s.targets)
		}
		s.targets[key] = t
	}
	// The caller may change its copy; the client and its round tripper are shared.
	out := *t
	u := *t.URL
	out.URL = &u
	out.Warnings = slices.Clone(t.Warnings)
	return &out, nil
}

// lookup finds an endpoint by name ("" for the default) in a configuration, or says why it cannot.
func (r *Registry) lookup(s *state, name string) (*endpoint, error) {
	unknown := func(format string, args ...any) error {
		prefix := fmt.Sprintf("unknown endpoint %q: ", name)
		if name == "" {
			prefix = "no default endpoint: "
		}
		return &Error{Endpoint: name, Reason: ReasonUnknownEndpoint, Message: prefix + fmt.Sprintf(format, args...)}
	}
	switch {
	case r.path == "":
		return nil, unknown("no endpoint is defined: the manager was started without --detector-endpoints")
	case s.loadedAt.IsZero() && r.Problem() != "":
		return nil, unknown("%s", r.Problem())
	case s.loadedAt.IsZero():
		return nil, unknown("the manager's endpoints file (%s) has not been loaded yet", r.path)
	case s.absent:
		return nil, unknown("the manager's endpoints file (%s) does not exist: no endpoint is defined", r.path)
	case len(s.names) == 0:
		return nil, unknown("the manager's endpoints file (%s) defines no endpoint", r.path)
	}
	if name == "" {
		if s.def == "" {
			return nil, unknown("the manager's endpoints file (%s) sets no default: name one of %s", r.path, strings.Join(s.names, ", "))
		}
		name = s.def
	}
	ep, ok := s.endpoints[name]
	if !ok {
		return nil, unknown("the manager's endpoints file (%s) defines %s", r.path, strings.Join(s.names, ", "))
	}
	return ep, nil
}
