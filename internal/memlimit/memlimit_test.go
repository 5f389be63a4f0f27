package memlimit

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"
)

func write(t *testing.T, root, path, content string) {
	t.Helper()
	full := filepath.Join(root, path)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestLimit(t *testing.T) {
	for _, tc := range []struct {
		name, path, content string
		want                int64
	}{
		{"cgroup v2, 256Mi", "sys/fs/cgroup/memory.max", "268435456\n", 268435456},
		{"cgroup v2, unlimited", "sys/fs/cgroup/memory.max", "max\n", 0},
		{"cgroup v1, 512Mi", "sys/fs/cgroup/memory/memory.limit_in_bytes", "536870912\n", 536870912},
		{"cgroup v1, unlimited", "sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n", 0},
		{"garbage", "sys/fs/cgroup/memory.max", "lots\n", 0},
		{"no cgroup", "elsewhere", "1", 0},
	} {
		root := t.TempDir()
		write(t, root, tc.path, tc.content)
		if got := Limit(root); got != tc.want {
			t.Errorf("%s: Limit = %d, want %d", tc.name, got, tc.want)
		}
	}
}

// TestSet: 90 % of the container's limit goes to the runtime, unless GOMEMLIMIT says otherwise.
func TestSet(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	root := t.TempDir()
	write(t, root, "sys/fs/cgroup/memory.max", "1000000000\n")
	t.Setenv("GOMEMLIMIT", "")
	if got := Set(root); got != 900000000 || debug.SetMemoryLimit(-1) != 900000000 {
		t.Errorf("Set = %d, runtime limit %d; want 900000000", got, debug.SetMemoryLimit(-1))
	}
	debug.SetMemoryLimit(prev)
	t.Setenv("GOMEMLIMIT", "100MiB")
	if got := Set(root); got != 0 || debug.SetMemoryLimit(-1) != prev {
		t.Errorf("with GOMEMLIMIT set: Set = %d, runtime limit %d; want it left alone", got, debug.SetMemoryLimit(-1))
	}
}
