package main

import (
	"os"
	"testing"
	"time"
)

// TestRSSOfThisProcess reads this process's resident memory: both figures are there, and the anonymous
// part is a part.
func TestRSSOfThisProcess(t *testing.T) {
	rss, anon, err := rssMiB(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if rss <= 0 || anon <= 0 || anon > rss {
		t.Errorf("rssMiB = %.1f MiB, %.1f MiB anonymous; want 0 < anonymous <= total", rss, anon)
	}
}

// TestProcessCPUCountsThisProcess burns 50 ms of CPU (by this process's own count, however long that takes)
// and sees the harness's share grow by it.
func TestProcessCPUCountsThisProcess(t *testing.T) {
	before := processCPU()
	start, err := cpuSeconds(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
		if now, _ := cpuSeconds(os.Getpid()); now-start >= 0.05 {
			break
		}
	}
	used := cpuSince(before, processCPU())
	if used["harness"] < 0.05 {
		t.Errorf("harness CPU after burning 50 ms: %.2f s, want >= 0.05 s (all: %v)", used["harness"], used)
	}
}
