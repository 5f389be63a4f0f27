package logging

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	uzap "go.uber.org/zap"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
)

// countingSink counts the WithValues calls that reach it; lines are discarded.
type countingSink struct {
	withValues *int
	lines      *int
}

func (s countingSink) Init(logr.RuntimeInfo)          {}
func (s countingSink) Enabled(int) bool               { return true }
func (s countingSink) Info(int, string, ...any)       { *s.lines++ }
func (s countingSink) Error(error, string, ...any)    { *s.lines++ }
func (s countingSink) WithName(string) logr.LogSink   { return s }
func (s countingSink) WithValues(...any) logr.LogSink { *s.withValues++; return s }
func (s countingSink) WithCallDepth(int) logr.LogSink { return s }
func (s countingSink) String() string                 { return "counting" }

func TestWithValuesReachesTheSinkOnlyWhenALineIsWritten(t *testing.T) {
	var withValues, lines int
	l := Lazy(logr.New(countingSink{withValues: &withValues, lines: &lines}))
	for i := range 100 {
		l = l.WithValues("i", i)
	}
	if withValues != 0 {
		t.Fatalf("WithValues reached the sink %d times before any line", withValues)
	}
	l.Info("one")
	l.V(1).Info("two")
	if withValues != 2 || lines != 2 {
		t.Fatalf("after two lines: %d WithValues, %d lines reached the sink, want 2 and 2", withValues, lines)
	}
}

// decode reads the zap logger's JSON lines.
func decode(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for s := range strings.SplitSeq(strings.TrimSpace(buf.String()), "\n") {
		m := map[string]any{}
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			t.Fatalf("line %q: %v", s, err)
		}
		out = append(out, m)
	}
	return out
}

func TestLinesCarryTheirValuesNamesAndCallers(t *testing.T) {
	var buf bytes.Buffer
	root := Lazy(zap.New(zap.WriteTo(&buf), zap.RawZapOpts(uzap.AddCaller())))
	parent := root.WithName("controller").WithValues("KubervisorService", "ns/a")
	// Two children of one parent: neither sees the other's values (no shared backing array).
	first := parent.WithValues("reconcileID", "1")
	second := parent.WithValues("reconcileID", "2")
	first.Info("first", "pods", 3)
	second.Error(errors.New("boom"), "second")
	lines := decode(t, &buf)
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want 2: %s", len(lines), buf.String())
	}
	for i, want := range []map[string]any{
		{"msg": "first", "logger": "controller", "KubervisorService": "ns/a", "reconcileID": "1", "pods": float64(3)},
		{"msg": "second", "logger": "controller", "KubervisorService": "ns/a", "reconcileID": "2", "error": "boom"},
	} {
		for k, v := range want {
			if lines[i][k] != v {
				t.Errorf("line %d: %s = %v, want %v (line %v)", i, k, lines[i][k], v, lines[i])
			}
		}
		if c, _ := lines[i]["caller"].(string); !strings.HasPrefix(c, "logging/lazy_test.go:") {
			t.Errorf("line %d: caller %q, want this test file", i, c)
		}
	}
}

func TestCallDepthIsPassedOn(t *testing.T) {
	var buf bytes.Buffer
	l := Lazy(zap.New(zap.WriteTo(&buf), zap.RawZapOpts(uzap.AddCaller()))).WithValues("k", "v")
	helper := func() { l.WithCallDepth(1).Info("from a helper") }
	helper() // the caller reported is this line, not the helper's
	lines := decode(t, &buf)
	c, _ := lines[0]["caller"].(string)
	if !strings.HasPrefix(c, "logging/lazy_test.go:") || lines[0]["k"] != "v" {
		t.Fatalf("line %v", lines[0])
	}
	var buf2 bytes.Buffer
	l2 := Lazy(zap.New(zap.WriteTo(&buf2), zap.RawZapOpts(uzap.AddCaller())))
	l2.Info("direct")
	direct, _ := decode(t, &buf2)[0]["caller"].(string)
	if c == direct {
		t.Fatalf("the helper's line and the direct line report the same caller %q", c)
	}
}
