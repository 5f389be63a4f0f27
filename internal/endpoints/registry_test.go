package endpoints

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kubervisor/kubervisor/internal/metrics"
)

const twoEndpoints = `default: a
endpoints:
- name: a
  url: https://a.example
- name: b
  url: https://b.example
`

type reloadCounts struct{ success, failure, last float64 }

func readReloadMetrics() reloadCounts {
	return reloadCounts{
		success: testutil.ToFloat64(metrics.EndpointsReloads.WithLabelValues("success")),
		failure: testutil.ToFloat64(metrics.EndpointsReloads.WithLabelValues("failure")),
		last:    testutil.ToFloat64(metrics.EndpointsLastReloadSuccessful),
	}
}

func TestRegistryKeepsTheLastGoodConfiguration(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "endpoints.yaml", []byte(twoEndpoints))
	clock := clocktesting.NewFakeClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	var logs logSink
	r := NewRegistry(path, logs.logger())
	r.Clock = clock

	before := readReloadMetrics()
	if err := r.Load(); err != nil {
		t.Fatalf("Load: %v", err)
	}
	if r.Generation() != 1 || r.Problem() != "" || !cmp.Equal(r.Names(), []string{"a", "b"}) {
		t.Fatalf("after a good load: generation %d, problem %q, names %v", r.Generation(), r.Problem(), r.Names())
	}
	if got, want := readReloadMetrics(), (reloadCounts{before.success + 1, before.failure, 1}); got != want {
		t.Errorf("metrics after a good load = %+v, want %+v", got, want)
	}

	// The file breaks: the old configuration stays.
	clock.Step(time.Minute)
	writeFile(t, dir, "endpoints.yaml", []byte("default: a\nendpoints:\n- name: a\n"))
	err := r.Load()
	wantErr := fmt.Sprintf(`endpoints file %s: endpoint "a": url: required`, path)
	if err == nil || err.Error() != wantErr {
		t.Fatalf("Load of a broken file = %v, want %s", err, wantErr)
	}
	if r.Generation() != 1 {
		t.Errorf("Generation moved to %d on a failed load", r.Generation())
	}
	target, err := r.Resolve("", "shop")
	if err != nil || target.URL.String() != "https://a.example" || target.Generation != 1 {
		t.Fatalf("Resolve after a failed load = %+v, %v; want the old endpoint a", target, err)
	}
	wantProblem := fmt.Sprintf(`endpoints file %s: endpoint "a": url: required; using the configuration loaded at 2026-03-01T12:00:00Z`, path)
	if r.Problem() != wantProblem {
		t.Errorf("Problem\n got: %s\nwant: %s", r.Problem(), wantProblem)
	}
	if got, want := readReloadMetrics(), (reloadCounts{before.success + 1, before.failure + 1, 0}); got != want {
		t.Errorf("metrics after a failed load = %+v, want %+v", got, want)
	}

	// The file is fixed.
	writeFile(t, dir, "endpoints.yaml", []byte("endpoints:\n- name: c\n  url: http://c.example:9090\n"))
	if err := r.Load(); err != nil {
		t.Fatalf("Load of the fixed file: %v", err)
	}
	if r.Generation() != 2 || r.Problem() != "" || !cmp.Equal(r.Names(), []string{"c"}) {
		t.Errorf("after the fix: generation %d, problem %q, names %v", r.Generation(), r.Problem(), r.Names())
	}
	if got, want := readReloadMetrics(), (reloadCounts{before.success + 2, before.failure + 1, 1}); got != want {
		t.Errorf("metrics after the fix = %+v, want %+v", got, want)
	}
	_, err = r.Resolve("a", "shop")
	wantResolve := fmt.Sprintf(`unknown endpoint "a": the manager's endpoints file (%s) defines c`, path)
	if err == nil || err.Error() != wantResolve {
		t.Errorf("Resolve of a removed endpoint = %v, want %s", err, wantResolve)
	}
}

func TestRegistryWithoutAGoodLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "endpoints.yaml")
	r := NewRegistry(path, nopLogger())
	// Unreadable (an absent file is no failure: TestAbsentFileDefinesNone).
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}

	_, err := r.Resolve("a", "shop")
	want := fmt.Sprintf(`unknown endpoint "a": the manager's endpoints file (%s) has not been loaded yet`, path)
	if err == nil || err.Error() != want {
		t.Errorf("Resolve before Load = %v, want %s", err, want)
	}

	err = r.Load()
	want = fmt.Sprintf("endpoints file %s: cannot read: is a directory", path)
	if err == nil || err.Error() != want {
		t.Fatalf("Load of an unreadable file = %v, want %s", err, want)
	}
	wantProblem := fmt.Sprintf("endpoints file %s: cannot read: is a directory; no configuration has loaded, so no endpoint is usable", path)
	if r.Problem() != wantProblem {
		t.Errorf("Problem\n got: %s\nwant: %s", r.Problem(), wantProblem)
	}
	_, err = r.Resolve("a", "shop")
	if err == nil || err.Error() != `unknown endpoint "a": `+wantProblem {
		t.Errorf("Resolve after a failed first load = %v", err)
	}
}

func TestResolveErrors(t *testing.T) {
	dir := t.TempDir()
	noDefault := writeFile(t, dir, "no-default.yaml", []byte("endpoints:\n- name: a\n  url: https://a.example\n- name: b\n  url: https://b.example\n"))
	empty := writeFile(t, dir, "empty.yaml", []byte("endpoints: []\n"))
	withDefault := writeFile(t, dir, "default.yaml", []byte(twoEndpoints))

	cases := map[string]struct {
		path, name, want string
	}{
		"no file, a name": {
			path: "", name: "a",
			want: `unknown endpoint "a": no endpoint is defined: the manager was started without --detector-endpoints`,
		},
		"no file, the default": {
			path: "", name: "",
			want: `no default endpoint: no endpoint is defined: the manager was started without --detector-endpoints`,
		},
		"no default": {
			path: noDefault, name: "",
			want: fmt.Sprintf(`no default endpoint: the manager's endpoints file (%s) sets no default: name one of a, b`, noDefault),
		},
		"unknown name": {
			path: withDefault, name: "x",
			want: fmt.Sprintf(`unknown endpoint "x": the manager's endpoints file (%s) defines a, b`, withDefault),
		},
		"empty file": {
			path: empty, name: "x",
			want: fmt.Sprintf(`unknown endpoint "x": the manager's endpoints file (%s) defines no endpoint`, empty),
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			r := NewRegistry(tc.path, nopLogger())
			if err := r.Load(); err != nil {
				t.Fatal(err)
			}
			_, err := r.Resolve(tc.name, "shop")
			e := endpointError(t, err)
			if e.Reason != ReasonUnknownEndpoint || e.Endpoint != tc.name || e.Error() != tc.want {
				t.Errorf("Resolve(%q)\n got: %s %q: %s\nwant: %s %q: %s", tc.name, e.Reason, e.Endpoint, e, ReasonUnknownEndpoint, tc.name, tc.want)
			}
		})
	}

	t.Run("a namespace that is no DNS label", func(t *testing.T) {
		r := NewRegistry(withDefault, nopLogger())
		if err := r.Load(); err != nil {
			t.Fatal(err)
		}
		for _, ns := range []string{"", "Shop", "a\nb"} {
			if _, err := r.Resolve("a", ns); err == nil {
				t.Errorf("Resolve(a, %q) succeeded", ns)
			}
		}
	})
}

func TestResolveCachesTargetsPerNamespaceAndGeneration(t *testing.T) {
	dir := t.TempDir()
	r := loadRegistry(t, dir, twoEndpoints, nopLogger())

	shop, err := r.Resolve("", "shop")
	if err != nil {
		t.Fatal(err)
	}
	if shop.Name != "a" || shop.Generation != 1 {
		t.Errorf("the default resolved to %s of generation %d, want a of 1", shop.Name, shop.Generation)
	}
	shop.URL.Path = "/changed" // the caller's copy
	again, _ := r.Resolve("a", "shop")
	billing, _ := r.Resolve("a", "billing")
	if again.Client != shop.Client {
		t.Error("a second Resolve for the same namespace made another client")
	}
	if again.URL.Path != "" {
		t.Errorf("a caller's change to its URL reached the cache: %s", again.URL)
	}
	if billing.Client == shop.Client {
		t.Error("two namespaces share a client (and so their headers)")
	}
	if billing.Client.Transport.(*transport).endpoint != shop.Client.Transport.(*transport).endpoint {
		t.Error("two namespaces do not share the endpoint's round tripper")
	}

	if err := r.Load(); err != nil {
		t.Fatal(err)
	}
	next, _ := r.Resolve("a", "shop")
	if next.Client == shop.Client || next.Generation != 2 {
		t.Errorf("after a load: the same client %v, generation %d; want a new client of generation 2", next.Client == shop.Client, next.Generation)
	}
}

// secretMount lays out a directory as the kubelet mounts a Secret: the file is a link to ..data/<file>,
// and ..data a link to a timestamped directory that an update replaces by renaming a new link over it.
type secretMount struct {
	t   *testing.T
	dir string
	n   int
}

func (m *secretMount) write(files map[string]string) {
	m.t.Helper()
	m.n++
	version := fmt.Sprintf("..2026_03_01_12_00_%02d", m.n)
	for name, content := range files {
		writeFile(m.t, filepath.Join(m.dir, version), name, []byte(content))
		link := filepath.Join(m.dir, name)
		if _, err := os.Lstat(link); errors.Is(err, os.ErrNotExist) {
			if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
				m.t.Fatal(err)
			}
		}
	}
	tmp := filepath.Join(m.dir, "..data_tmp")
	if err := os.Symlink(version, tmp); err != nil {
		m.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(m.dir, "..data")); err != nil {
		m.t.Fatal(err)
	}
}

func TestStartLoadsAChangedFile(t *testing.T) {
	mount := &secretMount{t: t, dir: t.TempDir()}
	mount.write(map[string]string{"endpoints.yaml": twoEndpoints})
	r := NewRegistry(filepath.Join(mount.dir, "endpoints.yaml"), nopLogger())
	r.PollInterval = 10 * time.Millisecond
	if err := r.Load(); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.Start(ctx) }()

	mount.write(map[string]string{"endpoints.yaml": "endpoints:\n- name: c\n  url: https://c.example\n"})
	for deadline := time.Now().Add(10 * time.Second); r.Generation() < 2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("Start did not load the changed file")
		}
	}
	if !cmp.Equal(r.Names(), []string{"c"}) {
		t.Errorf("after the reload: names %v, want [c]", r.Names())
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Start returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Start did not return when its context ended")
	}
}

// TestChangeDetection proves what Start reloads on: a change of the file's content, and, after a load
// that failed on a TLS file, a change of that file; nothing else.
func TestChangeDetection(t *testing.T) {
	dir := t.TempDir()
	ca := newAuthority(t, "CA")
	r := loadRegistry(t, dir, twoEndpoints, nopLogger())
	if r.changed() {
		t.Error("changed right after a load")
	}
	writeFile(t, dir, "endpoints.yaml", []byte(twoEndpoints))
	if r.changed() {
		t.Error("changed after the same content was written again")
	}
	writeFile(t, dir, "endpoints.yaml", []byte(twoEndpoints+"- name: c\n  url: https://c.example\n  tls:\n    caFile: ca.crt\n"))
	if !r.changed() {
		t.Fatal("not changed after the content changed")
	}
	if err := r.Load(); err == nil {
		t.Fatal("Load succeeded without the CA file")
	}
	if r.changed() {
		t.Error("changed right after a failed load")
	}
	writeFile(t, dir, "ca.crt", ca.pem)
	if !r.changed() {
		t.Fatal("not changed after the missing CA file appeared")
	}
	if err := r.Load(); err != nil {
		t.Fatalf("Load with the CA file: %v", err)
	}
	writeFile(t, dir, "ca.crt", newAuthority(t, "CA 2").pem)
	if r.changed() {
		t.Error("a CA file rotation asks for a reload; the round tripper reads it itself")
	}
}

func TestStartWithoutAFile(t *testing.T) {
	r := NewRegistry("", nopLogger())
	if r.NeedLeaderElection() {
		t.Error("the registry needs leader election; every replica needs endpoints")
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.Start(ctx) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Start returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Start did not return when its context ended")
	}
}

// TestAbsentFileDefinesNone: the file of an optional Secret that was not created is no failure (no
// problem, the reload metric stays successful) and says so when a breaker names an endpoint; once it
// appears, it is loaded.
func TestAbsentFileDefinesNone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "endpoints.yaml")
	r := NewRegistry(path, nopLogger())
	if err := r.Load(); err != nil {
		t.Fatalf("Load of an absent file = %v, want nil", err)
	}
	if p := r.Problem(); p != "" {
		t.Errorf("Problem() = %q, want none", p)
	}
	if _, err := r.Resolve("thanos", "shop"); err == nil || !strings.Contains(err.Error(), "does not exist: no endpoint is defined") {
		t.Errorf("Resolve = %v, want the absent file named", err)
	}
	if err := os.WriteFile(path, []byte("endpoints:\n- name: thanos\n  url: http://thanos:9090\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if !r.changed() {
		t.Fatal("a file that appeared is not seen as a change")
	}
	if err := r.Load(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Resolve("thanos", "shop"); err != nil {
		t.Errorf("Resolve after the file appeared = %v", err)
	}
}
