// Command pause is the sandbox ("pause") container of the real-node tests: it holds a pod's namespaces
// by doing nothing until SIGINT or SIGTERM, then exits 0, as the upstream pause binary does. As PID 1
// of a pod that shares its process namespace it also reaps the zombies that end up as its children.
package main

import (
	"errors"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	children := make(chan os.Signal, 1)
	if os.Getpid() == 1 {
		signal.Notify(children, syscall.SIGCHLD)
	}
	for {
		select {
		case <-stop:
			os.Exit(0)
		case <-children:
			reap()
		}
	}
}

// reap waits for every child that has exited; signals coalesce, so one SIGCHLD may stand for several.
func reap() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
	}
}
