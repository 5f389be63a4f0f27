// Command build-images writes the images of the real-node tests as docker-archive tarballs, without a
// container engine, and prints their references:
//
//	go run ./test/image/cmd/build-images -out bin/images [-tag 0.1.0]
//	ctr -n k8s.io images import bin/images/controller.tar
//
// It runs from the repository root (make images does).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/kubervisor/kubervisor/test/image"
)

func main() {
	opts := image.Options{Root: "."}
	flag.StringVar(&opts.Out, "out", "bin/images", "directory of the tarballs")
	flag.StringVar(&opts.ManagerTag, "tag", "", "tag of the manager image (default: the appVersion of dist/chart/Chart.yaml)")
	flag.StringVar(&opts.CACerts, "ca-certs", image.CACertsPath, "CA bundle the manager image holds")
	flag.Parse()

	if err := run(opts); err != nil {
		fmt.Fprintln(os.Stderr, "build-images:", err)
		os.Exit(1)
	}
}

func run(opts image.Options) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	tarballs, err := image.BuildAll(ctx, opts)
	if err != nil {
		return err
	}
	for _, t := range tarballs {
		fmt.Printf("%s\t%s\n", t.Ref, t.Path)
	}
	return nil
}
