package image

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// finalStage is the image a Dockerfile's final stage describes, as far as the manager image's test
// compares it.
type finalStage struct {
	// Paths of the entries the stage adds: files as /manager, directories as /etc/ (the parents COPY
	// and WORKDIR create).
	Paths      []string
	Entrypoint []string
	User       string
	WorkingDir string
}

// parseFinalStage reads the final stage of a Dockerfile. It knows FROM scratch, COPY --from=STAGE SRC
// DST, USER, WORKDIR and ENTRYPOINT in exec form, and refuses anything else: an instruction it cannot
// model must fail the test, not pass it unseen.
func parseFinalStage(dockerfile string) (finalStage, error) {
	lines := logicalLines(dockerfile)
	last := -1
	for i, l := range lines {
		if strings.EqualFold(l.instr, "FROM") {
			last = i
		}
	}
	if last < 0 {
		return finalStage{}, fmt.Errorf("no FROM instruction")
	}
	var st finalStage
	wd := "/" // what relative paths are under: WORKDIR's, else the root
	paths := map[string]bool{}
	addParents := func(p string) {
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			paths[d+"/"] = true
		}
	}
	for _, l := range lines[last:] {
		fail := func(format string, args ...any) error {
			return fmt.Errorf("line %d (%s %s): %s; teach parseFinalStage (and test/image) about it",
				l.num, l.instr, l.args, fmt.Sprintf(format, args...))
		}
		words := strings.Fields(l.args)
		switch strings.ToUpper(l.instr) {
		case "FROM":
			if len(words) != 1 || words[0] != "scratch" {
				return finalStage{}, fail("only FROM scratch is modelled: a base image adds files the test cannot see")
			}
		case "COPY":
			if len(words) != 3 || !strings.HasPrefix(words[0], "--from=") || strings.HasPrefix(words[1], "--") {
				return finalStage{}, fail("only COPY --from=STAGE SRC DST (one source, no other flag) is modelled")
			}
			src, dst := words[1], words[2]
			if strings.ContainsAny(src, "*?[") || strings.HasSuffix(src, "/") {
				return finalStage{}, fail("a wildcard or a directory source is not modelled")
			}
			if strings.HasSuffix(dst, "/") {
				dst += path.Base(src)
			}
			dst = path.Join(wd, dst)
			paths[dst] = true
			addParents(dst)
		case "USER":
			if len(words) != 1 {
				return finalStage{}, fail("USER takes one word")
			}
			st.User = words[0]
		case "WORKDIR":
			if len(words) != 1 {
				return finalStage{}, fail("WORKDIR takes one path")
			}
			wd = path.Join(wd, words[0])
			st.WorkingDir = wd
			if wd != "/" {
				paths[st.WorkingDir+"/"] = true
				addParents(st.WorkingDir)
			}
		case "ENTRYPOINT":
			st.Entrypoint = nil
			if !strings.HasPrefix(l.args, "[") || json.Unmarshal([]byte(l.args), &st.Entrypoint) != nil {
				return finalStage{}, fail("only the exec form is modelled (the shell form needs /bin/sh)")
			}
		default:
			return finalStage{}, fail("this instruction is not modelled")
		}
	}
	for p := range paths {
		st.Paths = append(st.Paths, p)
	}
	slices.Sort(st.Paths)
	return st, nil
}

type logicalLine struct {
	num         int // of the line the instruction starts on
	instr, args string
}

// logicalLines returns the instructions of a Dockerfile: comments and blank lines dropped, lines ending
// in a backslash joined with the next.
func logicalLines(dockerfile string) []logicalLine {
	var out []logicalLine
	var cur strings.Builder
	start := 0
	for i, raw := range strings.Split(dockerfile, "\n") {
		line := strings.TrimSpace(raw)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if cont, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(cont + " ")
			continue
		}
		cur.WriteString(line)
		instr, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, logicalLine{num: start, instr: instr, args: strings.TrimSpace(args)})
		cur.Reset()
	}
	return out
}

func TestParseFinalStage(t *testing.T) {
	const builder = "FROM golang:1.26 AS builder\nRUN go build -o manager \\\n  cmd/main.go\n"
	tests := map[string]struct {
		dockerfile string
		want       finalStage
		wantErr    string
	}{
		"the project's final stage": {
			dockerfile: builder + `
# a comment
FROM scratch
COPY --from=builder /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=builder /workspace/manager /manager
USER 65532:65532
WORKDIR /
ENTRYPOINT ["/manager"]
`,
			want: finalStage{
				Paths:      []string{"/etc/", "/etc/ssl/", "/etc/ssl/certs/", "/etc/ssl/certs/ca-certificates.crt", "/manager"},
				Entrypoint: []string{"/manager"}, User: "65532:65532", WorkingDir: "/",
			},
		},
		"a destination directory, a relative destination under WORKDIR, a continued line": {
			dockerfile: builder + "FROM scratch\nWORKDIR /app\nCOPY --from=builder /workspace/manager bin/\n" +
				"ENTRYPOINT [\"/app/bin/manager\", \\\n  \"--leader-elect\"]\n",
			want: finalStage{
				Paths:      []string{"/app/", "/app/bin/", "/app/bin/manager"},
				Entrypoint: []string{"/app/bin/manager", "--leader-elect"}, WorkingDir: "/app",
			},
		},
		"a base image":             {dockerfile: "FROM gcr.io/distroless/static:nonroot\n", wantErr: "only FROM scratch"},
		"RUN in the final stage":   {dockerfile: builder + "FROM scratch\nRUN true\n", wantErr: "line 5 (RUN true): this instruction is not modelled"},
		"ENV":                      {dockerfile: builder + "FROM scratch\nENV A=b\n", wantErr: "not modelled"},
		"ENTRYPOINT in shell form": {dockerfile: builder + "FROM scratch\nENTRYPOINT /manager\n", wantErr: "only the exec form"},
		"COPY from the context":    {dockerfile: builder + "FROM scratch\nCOPY manager /manager\n", wantErr: "only COPY --from"},
		"COPY --chown":             {dockerfile: builder + "FROM scratch\nCOPY --from=builder --chown=1:1 /m /m\n", wantErr: "only COPY --from"},
		"COPY of two sources":      {dockerfile: builder + "FROM scratch\nCOPY --from=builder /a /b /dir/\n", wantErr: "only COPY --from"},
		"COPY of a wildcard":       {dockerfile: builder + "FROM scratch\nCOPY --from=builder /etc/ssl/* /etc/\n", wantErr: "wildcard"},
		"no FROM":                  {dockerfile: "# nothing\n", wantErr: "no FROM"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := parseFinalStage(tc.dockerfile)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseFinalStage() error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseFinalStage(): %v", err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("parseFinalStage() (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDockerfileMatchesManagerImage proves that the repository's Dockerfile and test/image make the same
// manager image: the same entries (files and the directories they create, owned by root), entrypoint,
// user and working directory, and a static binary at the entrypoint.
func TestDockerfileMatchesManagerImage(t *testing.T) {
	const root = "../.." // go test runs in the package's directory
	data, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := parseFinalStage(string(data))
	if err != nil {
		t.Fatalf("the Dockerfile's final stage: %v", err)
	}

	binary := filepath.Join(t.TempDir(), "manager")
	if err := BuildBinary(t.Context(), root, "./cmd", binary); err != nil {
		t.Fatal(err)
	}
	img, err := Assemble(ManagerSpec(binary, CACertsPath))
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	entries, err := ListFiles(img)
	if err != nil {
		t.Fatal(err)
	}
	got := finalStage{Entrypoint: cf.Config.Entrypoint, User: cf.Config.User, WorkingDir: cf.Config.WorkingDir}
	for _, e := range entries {
		p := e.Path
		if e.Dir {
			p += "/"
		}
		got.Paths = append(got.Paths, p)
		if e.UID != 0 || e.GID != 0 {
			t.Errorf("%s is owned by %d:%d; COPY without --chown leaves root (0:0)", e.Path, e.UID, e.GID)
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("the Dockerfile's final stage (-) and the manager image of test/image (+) differ:\n%s", diff)
	}

	if len(got.Entrypoint) == 0 {
		t.Fatal("the manager image has no entrypoint")
	}
	bin, err := ReadFile(img, got.Entrypoint[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckStatic(bytes.NewReader(bin)); err != nil {
		t.Errorf("the manager image's %s: %v", got.Entrypoint[0], err)
	}
}
