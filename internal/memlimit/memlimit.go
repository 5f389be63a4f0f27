// Package memlimit sets the Go runtime's memory limit from the container's: without it the garbage collector
// lets the heap grow to twice the live data before collecting, and a manager whose cache nears the limit is
// OOM-killed instead of collecting harder (SPEC §12).
package memlimit

import (
	"errors"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
)

// Share is the part of the container's memory limit given to the Go runtime; the rest covers what the
// runtime does not count (stacks of the kernel, fragmentation, cgo-free but mapped memory).
const Share = 0.9

// Limit reads the memory limit of the cgroup the process runs in under root ("/" in production): cgroup v2's
// memory.max, else v1's memory.limit_in_bytes. It returns 0 when there is none (unlimited, not in a
// container, unreadable).
func Limit(root string) int64 {
	for _, p := range []string{"sys/fs/cgroup/memory.max", "sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		data, err := os.ReadFile(filepath.Join(root, p))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0
		}
		s := strings.TrimSpace(string(data))
		if s == "max" {
			return 0
		}
		v, err := strconv.ParseInt(s, 10, 64)
		// NOTE: cgroup v1 says "no limit" with a huge number (the largest page-aligned int64).
		if err != nil || v <= 0 || v >= math.MaxInt64/2 {
			return 0
		}
		return v
	}
	return 0
}

// Set gives the Go runtime Share of the container's memory limit, unless GOMEMLIMIT is set (the runtime
// then honours it) or there is no limit. It returns the limit set, 0 for none.
func Set(root string) int64 {
	if os.Getenv("GOMEMLIMIT") != "" {
		return 0
	}
	limit := Limit(root)
	if limit == 0 {
		return 0
	}
	soft := int64(float64(limit) * Share)
	debug.SetMemoryLimit(soft)
	return soft
}
