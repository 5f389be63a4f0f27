package cluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Process is a child process owned by the harness. It runs in its own process group, so Stop and Kill
// reach everything it spawned, and its stdout and stderr are appended to a log file.
type Process struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{}

	mu      sync.Mutex
	waitErr error
}

// StartProcess starts path with args as a new process group whose output is appended to logPath
// (created if missing). env is added to the harness's own environment. name is used in messages.
func StartProcess(name, path string, args []string, logPath string, env []string) (*Process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening log file of %s: %w", name, err)
	}
	// NOTE: the "===" markers are for a human reading the log; a failed write of one is not worth
	// failing the start for (the process's own output would fail the same way, unreported).
	_, _ = fmt.Fprintf(logFile, "=== %s: starting %s %s\n", time.Now().Format(time.RFC3339Nano), path, strings.Join(args, " "))

	cmd := exec.Command(path, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Env = append(os.Environ(), env...)
	// NOTE: Setpgid puts the child and its descendants in one group that Stop signals as a whole;
	// Pdeathsig kills the leader if the harness dies without running Stop (e.g. a test binary timeout).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = logFile.Close() // the start error is the one to report
		return nil, fmt.Errorf("starting %s (%s): %w", name, path, err)
	}
	p := &Process{name: name, logPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		_, _ = fmt.Fprintf(logFile, "=== %s: %s exited: %v\n", time.Now().Format(time.RFC3339Nano), name, cmd.ProcessState)
		_ = logFile.Close() // nobody is left to report it to; the exit status is in waitErr
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

// Name is the name given at start.
func (p *Process) Name() string { return p.name }

// Pid is the process id of the group leader (also the process group id).
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// LogPath is the file that receives the process's stdout and stderr.
func (p *Process) LogPath() string { return p.logPath }

// Done is closed when the group leader has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Running reports whether the group leader has not exited yet.
func (p *Process) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Err is the error the group leader exited with (nil while it runs or after a clean exit).
func (p *Process) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.waitErr
}

// Signal sends sig to the whole process group.
func (p *Process) Signal(sig syscall.Signal) error {
	err := syscall.Kill(-p.Pid(), sig)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

// Stop sends SIGTERM to the process group, waits up to grace for the leader to exit, then sends
// SIGKILL to whatever is left of the group, so that no descendant survives. It returns an error only
// when the process could not be stopped.
func (p *Process) Stop(grace time.Duration) error {
	if p.Running() {
		if err := p.Signal(syscall.SIGTERM); err != nil {
			return fmt.Errorf("sending SIGTERM to %s: %w", p.name, err)
		}
		select {
		case <-p.done:
		case <-time.After(grace):
		}
	}
	return p.Kill()
}

// Kill sends SIGKILL to the process group and waits until the leader and every other member of the
// group are dead.
func (p *Process) Kill() error {
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("sending SIGKILL to %s: %w", p.name, err)
	}
	deadline := time.After(30 * time.Second)
	select {
	case <-p.done:
	case <-deadline:
		return fmt.Errorf("%s (pid %d) did not exit after SIGKILL", p.name, p.Pid())
	}
	// NOTE: kill(2) returns before the signalled processes are dead; members that outlive the
	// leader (orphans now) are waited for by scanning /proc, where zombies count as dead.
	for {
		members := liveGroupMembers(p.Pid())
		if len(members) == 0 {
			return nil
		}
		_ = p.Signal(syscall.SIGKILL)
		select {
		case <-deadline:
			return fmt.Errorf("processes %v of the group of %s survived SIGKILL", members, p.name)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// ProcessAlive reports whether pid names a live process: it exists and is not a zombie (an orphan
// that nobody reaped is dead for every purpose of these tests).
func ProcessAlive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses and may hold spaces.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return false
	}
	state := s[i+2]
	return state != 'Z' && state != 'X'
}

// LiveChildren returns the pids of the live (non-zombie) direct children of pid.
func LiveChildren(pid int) []int {
	return scanProcs(func(_ byte, ppid, _ int) bool { return ppid == pid })
}

// liveGroupMembers returns the pids of the live (non-zombie) members of process group pgid.
func liveGroupMembers(pgid int) []int {
	return scanProcs(func(_ byte, _, pgrp int) bool { return pgrp == pgid })
}

// scanProcs returns the live (non-zombie) processes for which match(state, ppid, pgrp) holds.
func scanProcs(match func(state byte, ppid, pgrp int) bool) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// The fields after the command name (in parentheses, which may hold spaces): state ppid pgrp.
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if i < 0 || i+2 >= len(s) {
			continue
		}
		var state byte
		var ppid, pgrp int
		if _, err := fmt.Sscanf(s[i+2:], "%c %d %d", &state, &ppid, &pgrp); err != nil {
			continue
		}
		if state != 'Z' && state != 'X' && match(state, ppid, pgrp) {
			out = append(out, pid)
		}
	}
	return out
}
