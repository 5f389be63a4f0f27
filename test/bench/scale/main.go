// Command scale is `make bench-scale`: N pods under M KubervisorServices on the local cluster, the real
// manager binary under the RBAC of config/default, and the figures of SPEC §9 measured.
//
// It starts the local cluster of test/cluster from $KUBEBUILDER_ASSETS, with the API server's audit log
// recording every request of the manager's identity (level Metadata), and only the EndpointSlice
// controller in kube-controller-manager. In namespace bench it creates -kvs groups, each a Service and
// its share of -pods bare pods (labelled for the Service, kubervisor/traffic=yes), which the fake kubelet
// makes Running and Ready. It starts the manager (leader election on, metrics over HTTP), creates one
// KubervisorService per group, with one customService breaker asking a loopback detector that answers
// after -latency, and measures:
//
//   - adoption: from the creation of the KubervisorServices until every pod carries kubervisor/name
//     and every KubervisorService was Ready=True, with the manager's CPU and requests meanwhile;
//   - reaction: the detector then names one pod in -anomaly-rate of the groups; the time from its first
//     answer naming the pod until a watch sees kubervisor/traffic=no (the floor allows one ejection per
//     group, and the activator's 1h period keeps ejected pods out);
//   - the steady state, over -steady after a pause: requests per minute by verb and resource from the
//     audit log (leader election apart) and by method from the manager's rest_client_requests_total,
//     the manager's CPU seconds per minute (/proc/<pid>/stat) and RSS (/proc/<pid>/status), the interval
//     between two calls of one breaker and its lateness against -period, and the detector's calls/s.
//
// Each figure is printed with the load average (/proc/loadavg) read when it was measured.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

func main() {
	cfg := Config{Log: os.Stderr}
	var extra string
	var asJSON bool
	flag.IntVar(&cfg.Pods, "pods", 10000, "pods, split evenly over the groups")
	flag.IntVar(&cfg.KVS, "kvs", 1000, "groups: one Service and one KubervisorService each")
	flag.DurationVar(&cfg.Period, "period", 5*time.Second, "evaluationPeriod of every breaker")
	flag.DurationVar(&cfg.Latency, "latency", 0, "how long the loopback detector takes to answer")
	flag.Float64Var(&cfg.AnomalyRate, "anomaly-rate", 0.01, "share of groups whose detector names one pod")
	flag.DurationVar(&cfg.Steady, "steady", 60*time.Second, "how long the steady state is measured")
	flag.DurationVar(&cfg.Settle, "settle", 0, "pause between the ejections and the steady window (default 2 periods + 5s)")
	flag.IntVar(&cfg.Unsupervised, "unsupervised", 0,
		"pods no KubervisorService supervises, in namespace bench-other (what the pod cache holds besides)")
	flag.IntVar(&cfg.Shards, "shards", 1, "managers, each with its own --kubervisorservice-selector and leader-election Lease")
	flag.IntVar(&cfg.Workers, "workers", 0, "the manager's --max-concurrent-reconciles (0: the manager's default)")
	flag.StringVar(&extra, "extra-manager-args", "", "more flags for the manager, separated by spaces (e.g. --max-concurrent-evaluations=64)")
	flag.StringVar(&cfg.Manager, "manager", "", "the manager binary (default bin/manager, built if missing)")
	flag.DurationVar(&cfg.Timeout, "timeout", 10*time.Minute, "bound of each wait (pods running, adoption, ejections)")
	flag.StringVar(&cfg.CPUProfile, "cpuprofile", "", "write a CPU profile of the manager over the steady window to this file")
	flag.StringVar(&cfg.AllocProfile, "allocprofile", "", "write an allocation profile of the manager over the steady window to this file")
	flag.StringVar(&cfg.HeapProfile, "heapprofile", "", "write a heap profile of the manager at the end of the steady window (after a GC) to this file")
	flag.StringVar(&cfg.AdoptionCPUProfile, "adoption-cpuprofile", "", "write a CPU profile of the manager over adoption to this file")
	flag.StringVar(&cfg.APIServerAdoptionCPUProfile, "apiserver-adoption-cpuprofile", "",
		"write a CPU profile of kube-apiserver over adoption to this file")
	flag.IntVar(&cfg.AdoptionProfileSeconds, "adoption-profile-seconds", 60, "how long the adoption CPU profile lasts")
	flag.BoolVar(&cfg.RestartAPIServer, "restart-apiserver", false,
		"after the steady window, restart kube-apiserver and observe the manager for -steady (reconnection, resync, writes, ejections, panics)")
	flag.BoolVar(&cfg.KeepWorkDir, "keep", false, "keep the work directory (audit log, manager log)")
	flag.BoolVar(&asJSON, "json", false, "print the results as JSON too")
	flag.Parse()
	cfg.ManagerArgs = strings.Fields(extra)

	// The benchmark's own informers log nothing worth the terminal.
	klog.SetLogger(logr.Discard())
	logf.SetLogger(logr.Discard())

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	res, err := Run(ctx, cfg)
	if res != nil {
		fmt.Print(res.Table())
		if asJSON {
			out, _ := json.MarshalIndent(res, "", "  ") // plain data: it always marshals
			fmt.Println(string(out))
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench-scale: %v\n", err)
		os.Exit(1)
	}
}
