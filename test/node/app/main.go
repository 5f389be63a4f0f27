// Command app is the application of the real-node fleet: each pod of the fleet runs it from the image
// kubervisor/node-fleet:e2e (test/image). It is test/fleet's pretend price service as a real process:
// GET / answers a price (or a 500), /metrics serves the metrics test/fleet's PromQL reads, /healthz is
// the readiness probe, and tests change a pod's behaviour through its IP:
//
//	curl -X POST 'POD_IP:8080/fault?errorRate=0.5&deviation=3'
//	curl -X POST 'POD_IP:8080/heal'
//	curl -X POST 'POD_IP:8080/ready?value=false'
//
// On SIGTERM it goes on serving for -shutdown-delay with /healthz failing, as an application behind
// EndpointSlices must (its clients see it leave only after the kubelet and the EndpointSlice controller
// have said so), then stops accepting connections, finishes the requests in flight (for -shutdown-timeout
// at most) and exits.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	var (
		listen          string
		basePrice       float64
		delay           time.Duration
		initial         = behaviour{Ready: true}
		shutdownDelay   time.Duration
		shutdownTimeout time.Duration
	)
	flag.StringVar(&listen, "listen", ":8080", "address of the HTTP endpoint")
	flag.Float64Var(&basePrice, "price", 100, "the price a healthy pod answers (±1%)")
	flag.DurationVar(&delay, "delay", 50*time.Millisecond, "how long a healthy pod takes to answer (times the deviation)")
	flag.Float64Var(&initial.ErrorRate, "error-rate", 0, "share of requests answered 500 at start and after /heal")
	flag.Float64Var(&initial.Deviation, "deviation", 1, "factor on the price and the delay at start and after /heal")
	flag.DurationVar(&shutdownDelay, "shutdown-delay", 3*time.Second, "how long it goes on serving after SIGTERM, with /healthz failing")
	flag.DurationVar(&shutdownTimeout, "shutdown-timeout", 5*time.Second, "how long requests in flight may finish after SIGTERM")
	flag.Parse()

	a, err := newApp(basePrice, delay, initial)
	if err == nil {
		err = run(a, listen, shutdownDelay, shutdownTimeout)
	}
	if err != nil {
		log.Printf("Fleet app failed: %v", err)
		os.Exit(1)
	}
}

func run(a *app, listen string, shutdownDelay, shutdownTimeout time.Duration) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log.Printf("Fleet app serving on %s", ln.Addr())
	return serve(ctx, ln, a, shutdownDelay, shutdownTimeout)
}

// serve serves a on ln until ctx ends, then shuts down: /healthz fails at once, a goes on serving for
// delay, then ln is closed and the requests in flight have timeout at most to finish.
func serve(ctx context.Context, ln net.Listener, a *app, delay, timeout time.Duration) error {
	h := a.handler()
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	log.Printf("Fleet app shutting down: not ready, serving for %v more", delay)
	a.terminate()
	time.Sleep(delay)
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
		return fmt.Errorf("requests still in flight after %v: %w", timeout, err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
