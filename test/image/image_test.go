package image

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// TestWriteTarballReadsBack writes an image as containerd imports it and reads it back: the tag, the
// configuration, the entries with their parents, modes and owner, and the content.
func TestWriteTarballReadsBack(t *testing.T) {
	dir := t.TempDir()
	bin, data := filepath.Join(dir, "bin"), filepath.Join(dir, "data")
	if err := os.WriteFile(bin, []byte("#!binary"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(data, []byte("certificates"), 0o600); err != nil {
		t.Fatal(err)
	}
	img, err := Assemble(Spec{
		Files: []File{
			{Path: "/app", Source: bin, Mode: 0o755},
			{Path: "/etc/ssl/certs/ca.crt", Source: data, Mode: 0o644},
		},
		Entrypoint: []string{"/app", "-listen", ":8080"}, User: NonRootUser, WorkingDir: "/",
	})
	if err != nil {
		t.Fatal(err)
	}
	tarPath := filepath.Join(dir, "image.tar")
	const ref = "registry.example/team/app:v1"
	if err := WriteTarball(tarPath, ref, img); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tarPath + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("the temporary file is left behind: %v", err)
	}

	// The tag as ctr reads it (manifest.json's RepoTags), then the image under it.
	manifest, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(tarPath) })
	if err != nil {
		t.Fatal(err)
	}
	if len(manifest) != 1 || !slices.Equal(manifest[0].RepoTags, []string{ref}) {
		t.Fatalf("manifest.json = %+v, want one image tagged %s", manifest, ref)
	}
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	back, err := tarball.ImageFromPath(tarPath, &tag)
	if err != nil {
		t.Fatal(err)
	}

	cf, err := back.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
		t.Errorf("platform %s/%s, want linux/%s", cf.OS, cf.Architecture, runtime.GOARCH)
	}
	wantConfig := v1.Config{Entrypoint: []string{"/app", "-listen", ":8080"}, User: NonRootUser, WorkingDir: "/"}
	if diff := cmp.Diff(wantConfig, cf.Config); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}

	entries, err := ListFiles(back)
	if err != nil {
		t.Fatal(err)
	}
	wantEntries := []Entry{
		{Path: "/app", Mode: 0o755, Size: 8},
		{Path: "/etc", Dir: true, Mode: 0o755},
		{Path: "/etc/ssl", Dir: true, Mode: 0o755},
		{Path: "/etc/ssl/certs", Dir: true, Mode: 0o755},
		{Path: "/etc/ssl/certs/ca.crt", Mode: 0o644, Size: 12},
	}
	if diff := cmp.Diff(wantEntries, entries); diff != "" {
		t.Errorf("ListFiles() (-want +got):\n%s", diff)
	}
	content, err := ReadFile(back, "/etc/ssl/certs/ca.crt")
	if err != nil || string(content) != "certificates" {
		t.Errorf("ReadFile() = %q, %v; want the source's content", content, err)
	}
	if _, err := ReadFile(back, "/missing"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadFile() of a missing file: error %v, want fs.ErrNotExist", err)
	}
}

func TestAssembleAndWriteRefuse(t *testing.T) {
	src := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(src, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for what, spec := range map[string]Spec{
		"a relative entrypoint": {Entrypoint: []string{"manager"}},
		"no entrypoint":         {},
		"a relative path":       {Entrypoint: []string{"/m"}, Files: []File{{Path: "m", Source: src}}},
		"an unclean path":       {Entrypoint: []string{"/m"}, Files: []File{{Path: "/a/../m", Source: src}}},
		"a path given twice":    {Entrypoint: []string{"/m"}, Files: []File{{Path: "/m", Source: src}, {Path: "/m", Source: src}}},
		"a missing source":      {Entrypoint: []string{"/m"}, Files: []File{{Path: "/m", Source: src + ".missing"}}},
	} {
		if _, err := Assemble(spec); err == nil {
			t.Errorf("Assemble() with %s: no error", what)
		}
	}
	img, err := Assemble(Spec{Entrypoint: []string{"/m"}, Files: []File{{Path: "/m", Source: src}}})
	if err != nil {
		t.Fatal(err)
	}
	// containerd would tag an image without an explicit tag :latest, which no pod spec here names.
	err = WriteTarball(filepath.Join(t.TempDir(), "i.tar"), "kubervisor/controller", img)
	if err == nil || !strings.Contains(err.Error(), "explicit") {
		t.Errorf("WriteTarball() without a tag: error %v, want one saying the tag must be explicit", err)
	}
}

func TestCheckStaticRefusesADynamicBinary(t *testing.T) {
	// /bin/sh is dynamically linked on the distributions this runs on (Debian's dash).
	f, err := os.Open("/bin/sh")
	if err != nil {
		t.Skip("no /bin/sh:", err)
	}
	defer func() { _ = f.Close() }()
	if err := CheckStatic(f); err == nil || !strings.Contains(err.Error(), "PT_INTERP") {
		t.Errorf("CheckStatic(/bin/sh) = %v, want an error naming PT_INTERP", err)
	}
	if err := CheckStatic(strings.NewReader("#!/bin/sh\n")); err == nil {
		t.Error("CheckStatic() of a script: no error")
	}
}
