// Package logging holds the manager's logr sink wrapper.
package logging

import "github.com/go-logr/logr"

// Lazy wraps a logger so that WithValues only remembers its key/value pairs; they reach the wrapped sink
// (and are encoded) when a line is written, not before.
//
// NOTE: controller-runtime gives every reconcile a logger with the object's name and a reconcile ID, and
// zap encodes those values as soon as WithValues is called. A breaker pass that logs nothing (the steady
// state: hundreds of passes a second at 1,000 KubervisorServices) paid that encoding for nothing; with Lazy
// it pays an append. A written line costs one WithValues more than before.
func Lazy(l logr.Logger) logr.Logger {
	sink := l.GetSink()
	if sink == nil {
		return l
	}
	// One more frame, lazySink's own, between the caller and the wrapped sink. (l's sink was initialized
	// by logr.New already; Init below must not do it again.)
	if cd, ok := sink.(logr.CallDepthLogSink); ok {
		sink = cd.WithCallDepth(1)
	}
	return logr.New(&lazySink{sink: sink})
}

// lazySink is the logr.LogSink of Lazy: sink with the name and call depth already applied, kv the values
// still to add to it.
type lazySink struct {
	sink logr.LogSink
	kv   []any
}

var (
	_ logr.LogSink          = &lazySink{}
	_ logr.CallDepthLogSink = &lazySink{}
)

// Init does nothing: the wrapped sink was initialized by the logger Lazy was given.
func (l *lazySink) Init(logr.RuntimeInfo) {}

func (l *lazySink) Enabled(level int) bool { return l.sink.Enabled(level) }

func (l *lazySink) Info(level int, msg string, kv ...any) {
	l.withValues().Info(level, msg, kv...)
}

func (l *lazySink) Error(err error, msg string, kv ...any) {
	l.withValues().Error(err, msg, kv...)
}

// withValues is the wrapped sink with the remembered values added.
func (l *lazySink) withValues() logr.LogSink {
	if len(l.kv) == 0 {
		return l.sink
	}
	return l.sink.WithValues(l.kv...)
}

// WithValues copies: two loggers derived from one must not share the backing array.
func (l *lazySink) WithValues(kv ...any) logr.LogSink {
	all := make([]any, 0, len(l.kv)+len(kv))
	all = append(append(all, l.kv...), kv...)
	return &lazySink{sink: l.sink, kv: all}
}

func (l *lazySink) WithName(name string) logr.LogSink {
	return &lazySink{sink: l.sink.WithName(name), kv: l.kv}
}

func (l *lazySink) WithCallDepth(depth int) logr.LogSink {
	cd, ok := l.sink.(logr.CallDepthLogSink)
	if !ok {
		return l
	}
	return &lazySink{sink: cd.WithCallDepth(depth), kv: l.kv}
}
