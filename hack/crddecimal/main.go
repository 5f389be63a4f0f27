// Command crddecimal writes, into the CRD controller-gen generated, the schema of the fields that take a
// decimal written either as a JSON number (2.5) or as a string ("2.5"): the schema controller-gen cannot
// write.
//
// Why by hand: the API server checks an x-kubernetes-int-or-string value as an integer or a string, so it
// refuses 2.5; a structural schema allows no other anyOf of types; what remains is a schema without a type
// (x-kubernetes-preserve-unknown-fields), which takes any JSON value. controller-gen applies no bound to it
// (its pattern and minimum markers need a type), and CEL rules cannot see it. The bounds are therefore
// added here, as OpenAPI keywords, which apply by the value's type: pattern and maxLength to a string,
// minimum to a number; and "not" refuses every other value (an object, a list, a boolean), which the API
// server would otherwise store and every client, the manager's cache included, would then fail to decode.
//
// A decimal field is a *resource.Quantity marked +kubebuilder:validation:Schemaless and
// +kubebuilder:pruning:PreserveUnknownFields, listed in fields below.
//
// Usage, from the repository root (make manifests runs it after controller-gen): go run ./hack/crddecimal
package main

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"
)

// crdPath is the CRD controller-gen writes.
const crdPath = "config/crd/bases/breaker.kubervisor.io_kubervisorservices.yaml"

// maxLength bounds a decimal written as a string.
const maxLength = 16

// The patterns accept what resource.ParseQuantity parses (a decimal, with an optional SI or binary suffix
// or a decimal exponent), minus the minus sign; positivePattern also refuses every spelling of 0.
//
// NOTE: the exponent has at most 3 digits. resource.ParseQuantity does not return on "1e-99999999999"
// (14 characters, within maxLength): the manager's cache would hang decoding it.
const (
	suffix             = `(([KMGTPE]i)|[numkMGTPE]|[eE][+-]?[0-9]{1,3})?`
	positivePattern    = `^\+?([0-9]*[1-9][0-9]*(\.[0-9]*)?|[0-9]*\.[0-9]*[1-9][0-9]*)` + suffix + `$`
	nonNegativePattern = `^\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)` + suffix + `$`
)

// field is a decimal field: its path from the CRD's spec, where "[]" steps into a list's items.
type field struct {
	path     []string
	positive bool // more than 0; otherwise 0 or more
}

var fields = []field{
	{path: []string{"spec", "breakers", "[]", "peerOutlier", "threshold"}, positive: true},
	{path: []string{"spec", "breakers", "[]", "peerOutlier", "minAbsoluteDeviation"}},
}

// schemaOf is the schema of a decimal field, without its description and default (controller-gen's).
func schemaOf(f field) map[string]any {
	s := map[string]any{
		"x-kubernetes-preserve-unknown-fields": true,
		"maxLength":                            maxLength,
		"pattern":                              nonNegativePattern,
		"minimum":                              0,
		// Every string fails the first schema (no length is both 0 or less and 1 or more) and every number
		// the second: allOf holds for every other value, which not refuses.
		"not": map[string]any{"allOf": []any{
			map[string]any{"minLength": 1, "maxLength": 0},
			map[string]any{"minimum": 1, "maximum": 0},
		}},
	}
	if f.positive {
		s["pattern"] = positivePattern
		s["exclusiveMinimum"] = true
	}
	return s
}

// render returns the CRD with the decimal fields' schemas written in every version.
func render(crd []byte) ([]byte, error) {
	var doc map[string]any
	if err := yaml.Unmarshal(crd, &doc); err != nil {
		return nil, err
	}
	versions, _ := dig(doc, "spec", "versions").([]any)
	if len(versions) == 0 {
		return nil, errors.New("no spec.versions")
	}
	for _, v := range versions {
		root, ok := dig(v, "schema", "openAPIV3Schema").(map[string]any)
		if !ok {
			return nil, errors.New("a version without schema.openAPIV3Schema")
		}
		for _, f := range fields {
			node, err := schemaAt(root, f.path)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", strings.Join(f.path, "."), err)
			}
			if _, typed := node["type"]; typed || node["x-kubernetes-preserve-unknown-fields"] != true {
				return nil, fmt.Errorf("%s has a type or no x-kubernetes-preserve-unknown-fields: "+
					"mark it +kubebuilder:validation:Schemaless and +kubebuilder:pruning:PreserveUnknownFields", strings.Join(f.path, "."))
			}
			maps.Copy(node, schemaOf(f))
		}
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		return nil, err
	}
	// controller-gen starts its documents with a separator; keep the file as it writes it.
	if bytes.HasPrefix(crd, []byte("---\n")) {
		out = append([]byte("---\n"), out...)
	}
	return out, nil
}

// schemaAt walks a schema's properties (and items, for "[]") down path.
func schemaAt(s map[string]any, path []string) (map[string]any, error) {
	for _, step := range path {
		var next any
		if step == "[]" {
			next = s["items"]
		} else {
			next = dig(s, "properties", step)
		}
		n, ok := next.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("no schema at %q", step)
		}
		s = n
	}
	return s, nil
}

// dig follows keys through nested maps; nil when one is missing.
func dig(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func main() {
	if err := run("."); err != nil {
		fmt.Fprintln(os.Stderr, "crddecimal:", err)
		os.Exit(1)
	}
}

func run(root string) error {
	path := filepath.Join(root, crdPath)
	crd, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	out, err := render(crd)
	if err != nil {
		return fmt.Errorf("%s: %w", crdPath, err)
	}
	if bytes.Equal(out, crd) {
		return nil
	}
	return os.WriteFile(path, out, 0o644)
}
