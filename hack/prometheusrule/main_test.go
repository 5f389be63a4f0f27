package main

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"sigs.k8s.io/yaml"
)

const root = "../.."

// TestPrometheusRuleInSync fails when config/prometheus/prometheusrule.yaml is not what the generator
// writes from the rule file: edit kubervisor-rules.yaml, then run `go run ./hack/prometheusrule`.
func TestPrometheusRuleInSync(t *testing.T) {
	rules, err := os.ReadFile(filepath.Join(root, rulesPath))
	if err != nil {
		t.Fatal(err)
	}
	want, err := render(rules)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(root, outPath))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatalf("%s is out of date: run `go run ./hack/prometheusrule`", outPath)
	}

	// The text matching is not enough if the indentation broke the YAML: the decoded groups must be equal.
	var plain struct {
		Groups []any `json:"groups"`
	}
	if err := yaml.UnmarshalStrict(rules, &plain); err != nil {
		t.Fatalf("decoding %s: %v", rulesPath, err)
	}
	var pr struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   any    `json:"metadata"`
		Spec       struct {
			Groups []any `json:"groups"`
		} `json:"spec"`
	}
	if err := yaml.UnmarshalStrict(got, &pr); err != nil {
		t.Fatalf("decoding %s: %v", outPath, err)
	}
	if pr.APIVersion != "monitoring.coreos.com/v1" || pr.Kind != "PrometheusRule" {
		t.Fatalf("%s is a %s %s, want a monitoring.coreos.com/v1 PrometheusRule", outPath, pr.APIVersion, pr.Kind)
	}
	if len(plain.Groups) == 0 {
		t.Fatalf("%s holds no group", rulesPath)
	}
	if !reflect.DeepEqual(plain.Groups, pr.Spec.Groups) {
		t.Fatalf("the groups of %s and %s differ once decoded", rulesPath, outPath)
	}
}

// TestRenderRefusesAFileWithoutGroups makes sure a renamed or broken rule file is not turned into an
// empty PrometheusRule.
func TestRenderRefusesAFileWithoutGroups(t *testing.T) {
	if _, err := render([]byte("# nothing\nrules: []\n")); err == nil {
		t.Fatal("render accepted a file without groups")
	}
}
