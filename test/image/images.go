package image

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"sigs.k8s.io/yaml"
)

// The images' references. The manager's tag is the chart's appVersion by default (ManagerRef), so that
// `helm install` of dist/chart runs the imported image with the chart's IfNotPresent pull policy.
const (
	// ManagerRepository is the repository of the manager image (the chart's manager.image.repository).
	ManagerRepository = "kubervisor/controller"
	// PauseRef is the sandbox image containerd 1.6 runs for every pod by default (its CRI plugin's
	// sandbox_image, `containerd config default | grep sandbox_image` on Debian's 1.6.20); importing it
	// under that name spares the node a registry.
	PauseRef = "registry.k8s.io/pause:3.6"
	// NodeFleetRef is the image of the real-node fleet app (test/node/app).
	NodeFleetRef = "kubervisor/node-fleet:e2e"

	// NonRootUser is the user and group of the manager and the fleet app: distroless's "nonroot".
	NonRootUser = "65532:65532"
	// pauseUser is the user of the upstream pause image.
	pauseUser = "65535:65535"
	// CACertsPath is where the manager image holds the CA bundle (Prometheus over TLS), copied from
	// the same path on the host, as the Dockerfile copies it from its build stage.
	CACertsPath = "/etc/ssl/certs/ca-certificates.crt"
)

// ManagerRef is the reference of the manager image with tag.
func ManagerRef(tag string) string { return ManagerRepository + ":" + tag }

// ManagerSpec is the manager image: the binary at /manager and the CA bundle of caCerts, run as
// NonRootUser. The Dockerfile's final stage must describe the same image (its test checks it).
func ManagerSpec(binary, caCerts string) Spec {
	return Spec{
		Files: []File{
			{Path: "/manager", Source: binary, Mode: 0o755},
			{Path: CACertsPath, Source: caCerts, Mode: 0o644},
		},
		Entrypoint: []string{"/manager"},
		User:       NonRootUser,
		WorkingDir: "/",
	}
}

// binarySpec is an image holding only a binary at /name.
func binarySpec(name, binary, user string) Spec {
	return Spec{
		Files:      []File{{Path: "/" + name, Source: binary, Mode: 0o755}},
		Entrypoint: []string{"/" + name},
		User:       user,
		WorkingDir: "/",
	}
}

// ChartAppVersion returns the appVersion of the chart in dist/chart under root.
func ChartAppVersion(root string) (string, error) {
	p := filepath.Join(root, "dist", "chart", "Chart.yaml")
	data, err := os.ReadFile(p)
	if err != nil {
		return "", fmt.Errorf("reading the chart's appVersion: %w", err)
	}
	var chart struct {
		AppVersion string `json:"appVersion"`
	}
	if err := yaml.Unmarshal(data, &chart); err != nil {
		return "", fmt.Errorf("parsing %s: %w", p, err)
	}
	if chart.AppVersion == "" {
		return "", fmt.Errorf("%s has no appVersion", p)
	}
	return chart.AppVersion, nil
}

// Options says where BuildAll works.
type Options struct {
	// Root of the repository (the Go packages are built there).
	Root string
	// Out is the directory of the tarballs (created if missing).
	Out string
	// ManagerTag is the manager image's tag; empty means the chart's appVersion.
	ManagerTag string
	// CACerts is the host's CA bundle the manager image holds; empty means CACertsPath.
	CACerts string
}

// Tarball is an image written by BuildAll.
type Tarball struct {
	// Ref is the image's reference, as a pod spec names it.
	Ref string
	// Path of the docker-archive tarball, for `ctr -n k8s.io images import`.
	Path string
}

// BuildAll builds the manager, pause and fleet app images and writes their tarballs into opts.Out
// (controller.tar, pause.tar, node-fleet.tar), in that order.
func BuildAll(ctx context.Context, opts Options) ([]Tarball, error) {
	if opts.Root == "" || opts.Out == "" {
		return nil, errors.New("image: a repository root and an output directory are required")
	}
	if opts.ManagerTag == "" {
		tag, err := ChartAppVersion(opts.Root)
		if err != nil {
			return nil, err
		}
		opts.ManagerTag = tag
	}
	if opts.CACerts == "" {
		opts.CACerts = CACertsPath
	}
	if err := os.MkdirAll(opts.Out, 0o755); err != nil {
		return nil, err
	}
	bins, err := os.MkdirTemp(opts.Out, ".bin-")
	if err != nil {
		return nil, err
	}
	defer func() { _ = os.RemoveAll(bins) }()

	images := []struct {
		file, ref, pkg string
		spec           func(binary string) Spec
	}{
		{"controller.tar", ManagerRef(opts.ManagerTag), "./cmd", func(b string) Spec { return ManagerSpec(b, opts.CACerts) }},
		{"pause.tar", PauseRef, "./test/image/pause", func(b string) Spec { return binarySpec("pause", b, pauseUser) }},
		{"node-fleet.tar", NodeFleetRef, "./test/node/app", func(b string) Spec { return binarySpec("app", b, NonRootUser) }},
	}
	out := make([]Tarball, 0, len(images))
	for _, im := range images {
		binary := filepath.Join(bins, im.file+".bin")
		if err := BuildBinary(ctx, opts.Root, im.pkg, binary); err != nil {
			return nil, err
		}
		img, err := Assemble(im.spec(binary))
		if err != nil {
			return nil, fmt.Errorf("assembling %s: %w", im.ref, err)
		}
		dst := filepath.Join(opts.Out, im.file)
		if err := WriteTarball(dst, im.ref, img); err != nil {
			return nil, err
		}
		out = append(out, Tarball{Ref: im.ref, Path: dst})
	}
	return out, nil
}
