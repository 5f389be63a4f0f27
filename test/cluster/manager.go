package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
)

// StartManager starts the manager binary at path as a child process with args followed by
// --kubeconfig=<ManagerKubeconfigPath> (KUBECONFIG is set too), so it runs as the ServiceAccount of
// config/rbac. Its stdout and stderr are appended to LogPath("manager"), across restarts. It fails if
// a manager started by the harness is still running. It does not wait for the manager to be ready:
// see WaitForHTTP.
func (c *Cluster) StartManager(path string, args []string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.manager != nil && c.manager.Running() {
		return fmt.Errorf("the manager is already running (pid %d)", c.manager.Pid())
	}
	full := append(append([]string{}, args...), "--kubeconfig="+c.managerKubeconfig)
	p, err := StartProcess("manager", path, full, c.LogPath("manager"), []string{"KUBECONFIG=" + c.managerKubeconfig})
	if err != nil {
		return err
	}
	c.manager, c.managerPath, c.managerArgs = p, path, append([]string{}, args...)
	c.logf("manager started (pid %d): %s", p.Pid(), path)
	return nil
}

// StopManager stops the manager gracefully (SIGTERM to its process group, SIGKILL after
// Options.StopGracePeriod). It does nothing if no manager runs.
func (c *Cluster) StopManager() error {
	p := c.Manager()
	if p == nil {
		return nil
	}
	return p.Stop(c.opts.StopGracePeriod)
}

// KillManager kills the manager's process group with SIGKILL, as a crash would.
func (c *Cluster) KillManager() error {
	p := c.Manager()
	if p == nil {
		return nil
	}
	return p.Kill()
}

// RestartManager stops the manager (gracefully) and starts it again with the same path and args.
func (c *Cluster) RestartManager() error {
	c.mu.Lock()
	path, args := c.managerPath, c.managerArgs
	c.mu.Unlock()
	if path == "" {
		return errors.New("the manager was never started")
	}
	if err := c.StopManager(); err != nil {
		return err
	}
	return c.StartManager(path, args)
}

// Manager is the current (or last) manager process, nil before StartManager.
func (c *Cluster) Manager() *Process {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.manager
}

// ManagerLog returns what the manager wrote so far (all runs), for a failing test to print.
func (c *Cluster) ManagerLog() string {
	data, err := os.ReadFile(c.LogPath("manager"))
	if err != nil {
		return fmt.Sprintf("(no manager log: %v)", err)
	}
	return string(data)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("releasing free port %d: %w", port, err)
	}
	return port, nil
}

// FreeAddr returns "127.0.0.1:<port>" with a port that was free a moment ago, e.g. for the manager's
// --metrics-bind-address and --health-probe-bind-address.
func FreeAddr() (string, error) {
	port, err := FreePort()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), nil
}

// WaitForHTTP polls url until it answers 200 (e.g. the manager's /readyz) or timeout passes.
func WaitForHTTP(ctx context.Context, url string, timeout time.Duration) error {
	return waitForHTTP(ctx, &http.Client{Timeout: 2 * time.Second}, url, timeout)
}

// waitForHTTP is WaitForHTTP through hc (e.g. one with TLS and credentials).
func waitForHTTP(ctx context.Context, hc *http.Client, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err == nil {
			_ = resp.Body.Close() // only the status matters
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last: %v)", url, ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
