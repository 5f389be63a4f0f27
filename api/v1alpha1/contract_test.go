package v1alpha1

import (
	"go/ast"
	"go/parser"
	"go/token"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/intstr"
)

func TestParsePeriod(t *testing.T) {
	i := func(v int) *intstr.IntOrString { x := intstr.FromInt32(int32(v)); return &x }
	s := func(v string) *intstr.IntOrString { x := intstr.FromString(v); return &x }
	cases := map[string]struct {
		in      *intstr.IntOrString
		want    time.Duration
		wantErr bool
	}{
		"nil gives the default":  {in: nil, want: 7 * time.Second},
		"integer seconds":        {in: i(15), want: 15 * time.Second},
		"duration string":        {in: s("500ms"), want: 500 * time.Millisecond},
		"compound duration":      {in: s("1m30s"), want: 90 * time.Second},
		"exactly 24h":            {in: s("24h"), want: 24 * time.Hour},
		"integer zero":           {in: i(0), wantErr: true},
		"negative string":        {in: s("-5s"), wantErr: true},
		"over 24h":               {in: i(86401), wantErr: true},
		"not a duration":         {in: s("soon"), wantErr: true},
		"number without a unit":  {in: s("15"), wantErr: true},
		"zero duration string":   {in: s("0s"), wantErr: true},
		"just over 24h (string)": {in: s("24h0m1s"), wantErr: true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := ParsePeriod(tc.in, 7*time.Second)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if !tc.wantErr && got != tc.want {
				t.Errorf("ParsePeriod = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestFloorAndDryRun(t *testing.T) {
	count, ratio := int32(3), int32(40)
	b := &BreakerStrategy{Name: "b"}
	if c, r := b.Floor(); c != DefaultMinPodsAvailable || r != 0 {
		t.Errorf("defaults = (%d, %d), want (%d, 0)", c, r, DefaultMinPodsAvailable)
	}
	b.MinPodsAvailableCount, b.MinPodsAvailableRatio = &count, &ratio
	if c, r := b.Floor(); c != 3 || r != 40 {
		t.Errorf("Floor = (%d, %d), want (3, 40)", c, r)
	}
	spec := &KubervisorServiceSpec{}
	if spec.IsDryRun(b) {
		t.Error("dry run without any dryRun set")
	}
	b.DryRun = true
	if !spec.IsDryRun(b) {
		t.Error("breaker dryRun ignored")
	}
	b.DryRun, spec.DryRun = false, true
	if !spec.IsDryRun(b) {
		t.Error("spec dryRun ignored")
	}
}

// TestPodKeysHaveThePrefix reads the Label* and Annotation* constants of contract.go and checks that each
// begins with KeyPrefix: the pod cache keeps in full only pods with such a key (TrimPod), so a key without
// the prefix would leave a pod that carries only it as a stub.
func TestPodKeysHaveThePrefix(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "contract.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, spec := range g.Specs {
			for i, name := range spec.(*ast.ValueSpec).Names {
				if !strings.HasPrefix(name.Name, "Label") && !strings.HasPrefix(name.Name, "Annotation") {
					continue
				}
				if name.Name == "AnnotationDeletionCost" {
					// Kubernetes' own key, which Kubervisor sets only on pods that carry its labels as well.
					continue
				}
				lit, ok := spec.(*ast.ValueSpec).Values[i].(*ast.BasicLit)
				if !ok {
					t.Fatalf("%s is not a string literal", name.Name)
				}
				key, _ := strconv.Unquote(lit.Value)
				seen = append(seen, key)
				if !strings.HasPrefix(key, KeyPrefix) {
					t.Errorf("%s = %q does not begin with %q", name.Name, key, KeyPrefix)
				}
			}
		}
	}
	// The walk found the keys (a parse that finds none would pass the loop above).
	for _, key := range []string{LabelTraffic, LabelName, AnnotationBreakAt, AnnotationRequest, AnnotationRequestOutcome} {
		if !slices.Contains(seen, key) {
			t.Errorf("%q not found among the constants of contract.go", key)
		}
	}
}
