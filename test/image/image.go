// Package image builds the project's container images without a container engine or a registry: a
// static Go binary (BuildBinary), assembled with the files it needs into a one-layer image FROM scratch
// (Assemble), written as a docker-archive tarball that `ctr -n k8s.io images import` loads into
// containerd (WriteTarball). ListFiles and ReadFile read an image back, for tests.
//
// The images themselves (the manager, the pause image of the node's sandboxes, the real-node fleet
// app) are in images.go; `go run ./test/image/cmd/build-images` (make images) writes them.
package image

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// File is one file of an image's layer.
type File struct {
	// Path in the image, absolute (/manager).
	Path string
	// Source is the host file whose content the image holds.
	Source string
	// Mode holds the permission bits (0o755 for a binary, 0o644 for data).
	Mode fs.FileMode
}

// Spec is an image FROM scratch: one layer of files, owned by root as Docker's COPY leaves them, and
// the configuration a container runs with. The image sets no environment (no PATH either: a scratch
// image has no shell to search for commands), so Entrypoint names a binary by its absolute path.
type Spec struct {
	// Files of the layer; their parent directories are added (0755), as COPY creates them.
	Files []File
	// Entrypoint in exec form.
	Entrypoint []string
	// User the container runs as ("65532:65532").
	User string
	// WorkingDir of the container ("/").
	WorkingDir string
}

// layerTime is the modification time of every entry of a layer, so that the same inputs give the same
// layer digest.
var layerTime = time.Unix(0, 0).UTC()

// BuildBinary compiles the Go package pkg (a path relative to the repository root, like ./cmd) into a
// static Linux binary out for this machine's architecture, with the flags of the Dockerfile's build
// stage, and checks that it is static. NOTE: without the Dockerfile's -a: it only forces a rebuild of
// every dependency (the Docker build starts with an empty cache anyway) and gives the same binary.
func BuildBinary(ctx context.Context, root, pkg, out string) error {
	out, err := filepath.Abs(out) // the go command runs in root
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if output, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building %s: %w\n%s", pkg, err, output)
	}
	f, err := os.Open(out)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	if err := CheckStatic(f); err != nil {
		return fmt.Errorf("binary of %s: %w", pkg, err)
	}
	return nil
}

// CheckStatic returns an error unless r is a Linux ELF executable without a program interpreter
// (PT_INTERP): a dynamically linked binary cannot start in an image without a libc.
func CheckStatic(r io.ReaderAt) error {
	f, err := elf.NewFile(r)
	if err != nil {
		return fmt.Errorf("reading the ELF header: %w", err)
	}
	defer func() { _ = f.Close() }()
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return fmt.Errorf("ELF type %v is not an executable", f.Type)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return errors.New("dynamically linked: the binary has a program interpreter (PT_INTERP)")
		}
	}
	return nil
}

// Assemble builds the image of spec from scratch, for linux and this machine's architecture (that of
// BuildBinary's binaries).
func Assemble(spec Spec) (v1.Image, error) {
	if len(spec.Entrypoint) == 0 || !path.IsAbs(spec.Entrypoint[0]) {
		return nil, fmt.Errorf("entrypoint %q: the first word must be an absolute path (a scratch image has no PATH)", spec.Entrypoint)
	}
	layerTar, err := layerTarball(spec.Files)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return nil, fmt.Errorf("compressing the layer: %w", err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config.Entrypoint = slices.Clone(spec.Entrypoint)
	cf.Config.User = spec.User
	cf.Config.WorkingDir = spec.WorkingDir
	return mutate.ConfigFile(img, cf)
}

// layerTarball returns the uncompressed tar of a layer holding files and their parent directories.
func layerTarball(files []File) ([]byte, error) {
	var dirs []string
	seen := map[string]bool{}
	for _, f := range files {
		if !path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path || f.Path == "/" {
			return nil, fmt.Errorf("image path %q is not a clean absolute file path", f.Path)
		}
		if seen[f.Path] {
			return nil, fmt.Errorf("image path %q is given twice", f.Path)
		}
		seen[f.Path] = true
		for d := path.Dir(f.Path); d != "/"; d = path.Dir(d) {
			if !slices.Contains(dirs, d) {
				dirs = append(dirs, d)
			}
		}
	}
	// Sorted, a directory comes before what it holds.
	slices.Sort(dirs)

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range dirs {
		hdr := &tar.Header{Typeflag: tar.TypeDir, Name: d[1:] + "/", Mode: 0o755, ModTime: layerTime, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
	}
	for _, f := range files {
		data, err := os.ReadFile(f.Source)
		if err != nil {
			return nil, fmt.Errorf("reading the content of %s: %w", f.Path, err)
		}
		hdr := &tar.Header{
			Typeflag: tar.TypeReg, Name: f.Path[1:], Mode: int64(f.Mode.Perm()), Size: int64(len(data)),
			ModTime: layerTime, Format: tar.FormatPAX,
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteTarball writes img to the file at dst as a docker-archive tarball tagged ref (with an explicit
// tag: registry.k8s.io/pause:3.6). It writes a temporary file first, so that dst is never a partial
// image.
func WriteTarball(dst, ref string, img v1.Image) error {
	tag, err := name.NewTag(ref)
	if err == nil && !strings.HasSuffix(ref, ":"+tag.TagStr()) {
		err = errors.New("the tag must be explicit")
	}
	if err != nil {
		return fmt.Errorf("image reference %q: %w", ref, err)
	}
	tmp := dst + ".tmp"
	if err := tarball.WriteToFile(tmp, tag, img); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("writing the image %s: %w", ref, err)
	}
	return os.Rename(tmp, dst)
}

// Entry is one entry of an image's file system.
type Entry struct {
	// Path is absolute (/etc/ssl/certs).
	Path string
	// Dir is true for a directory.
	Dir bool
	// Mode holds the permission bits.
	Mode fs.FileMode
	// Size of a file's content.
	Size int64
	// UID and GID own the entry.
	UID, GID int
}

// ListFiles returns the entries of img's file system (its layers flattened), sorted by path.
func ListFiles(img v1.Image) ([]Entry, error) {
	var out []Entry
	err := walk(img, func(hdr *tar.Header, _ io.Reader) error {
		out = append(out, Entry{
			Path: "/" + strings.TrimSuffix(path.Clean(hdr.Name), "/"), Dir: hdr.Typeflag == tar.TypeDir,
			Mode: fs.FileMode(hdr.Mode).Perm(), Size: hdr.Size, UID: hdr.Uid, GID: hdr.Gid,
		})
		return nil
	})
	slices.SortFunc(out, func(a, b Entry) int { return strings.Compare(a.Path, b.Path) })
	return out, err
}

// ReadFile returns the content of the file at the absolute path p of img.
func ReadFile(img v1.Image, p string) ([]byte, error) {
	var data []byte
	found := false
	err := walk(img, func(hdr *tar.Header, r io.Reader) error {
		if found || "/"+path.Clean(hdr.Name) != p {
			return nil
		}
		found = true
		var err error
		data, err = io.ReadAll(r)
		return err
	})
	if err == nil && !found {
		err = fmt.Errorf("%s: %w", p, fs.ErrNotExist)
	}
	return data, err
}

// walk calls fn for every entry of img's flattened file system.
func walk(img v1.Image, fn func(*tar.Header, io.Reader) error) error {
	rc := mutate.Extract(img)
	defer func() { _ = rc.Close() }()
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading the image's files: %w", err)
		}
		if err := fn(hdr, tr); err != nil {
			return err
		}
	}
}
