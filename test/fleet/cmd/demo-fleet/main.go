// Command demo-fleet runs the demo fleet of test/fleet against a cluster: it serves the metrics of
// the pods a selector (or a Deployment) picks on one 127.0.0.1 endpoint for Prometheus, and lets a
// user inject faults over HTTP:
//
//	demo-fleet --kubeconfig KUBECONFIG -n shop --deployment pricer --service pricer --listen 127.0.0.1:9100
//	curl -X POST '127.0.0.1:9100/fault?pod=pricer-xxx&errors=0.8'
//	curl -X POST '127.0.0.1:9100/heal'
//
// With --run-kubelet it also binds the fleet's pods and marks them Running and Ready, for a cluster
// whose harness runs no fake kubelet.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client/config"

	"github.com/kubervisor/kubervisor/test/cluster"
	"github.com/kubervisor/kubervisor/test/fleet"
)

func main() {
	// NOTE: --kubeconfig is controller-runtime's flag (registered by its config package, which
	// test/cluster imports); config.GetConfig reads it, then $KUBECONFIG.
	var opts fleet.Options
	flag.StringVar(&opts.Namespace, "n", "default", "namespace of the fleet's pods")
	flag.StringVar(&opts.Selector, "selector", "", "label selector of the fleet's pods")
	flag.StringVar(&opts.Deployment, "deployment", "", "Deployment whose selector picks the fleet's pods (instead of --selector)")
	flag.StringVar(&opts.Service, "service", "", "Service whose ready endpoints receive requests (default: every Ready pod)")
	flag.StringVar(&opts.ListenAddress, "listen", "127.0.0.1:9100", "address of the metrics and control endpoint")
	flag.IntVar(&opts.RequestsPerInterval, "requests", 10, "requests per pod every 100ms")
	flag.BoolVar(&opts.RunKubelet, "run-kubelet", false, "bind the fleet's pods and mark them Running and Ready")
	flag.StringVar(&opts.KubeletOptions.NodeName, "node", cluster.DefaultNodeName, "node of the fake kubelet (--run-kubelet)")
	flag.StringVar(&opts.KubeletOptions.PodCIDR, "pod-cidr", "10.245.0.0/16", "pod IPs of the fake kubelet (--run-kubelet)")
	flag.Parse()

	if err := run(opts); err != nil {
		fmt.Fprintln(os.Stderr, "demo-fleet:", err)
		os.Exit(1)
	}
}

func run(opts fleet.Options) error {
	cfg, err := config.GetConfig()
	if err != nil {
		return fmt.Errorf("loading kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = 200, 400
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	f, err := fleet.Start(ctx, cs, opts)
	if err != nil {
		return err
	}
	defer f.Stop()
	fmt.Printf("demo fleet of %s (%s) serving on %s\n", f.Namespace(), f.Selector(), f.URL())
	fmt.Printf("  discrete PromQL:   %s (key %q, good %v)\n", fleet.DiscreteQuery(f.Namespace()), fleet.DiscreteKey, fleet.DiscreteGoodValues)
	fmt.Printf("  continuous PromQL: %s\n", fleet.ContinuousQuery(f.Namespace()))
	fmt.Printf("  custom detector:   %s%s\n", f.URL(), fleet.CustomDetectorPath)
	fmt.Printf("  faults:            curl -X POST '%s/fault?pod=NAME&errors=0.8'   (or &deviation=3; /heal to undo)\n", f.URL())
	<-ctx.Done()
	return nil
}
