package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"
)

// TestCRDInSync fails when the CRD lacks the decimal fields' schemas: run `make manifests`.
func TestCRDInSync(t *testing.T) {
	crd, err := os.ReadFile(filepath.Join("..", "..", crdPath))
	if err != nil {
		t.Fatal(err)
	}
	out, err := render(crd)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != string(crd) {
		t.Fatalf("%s is out of date: run `make manifests`", crdPath)
	}
}

// FuzzDecimalSchema checks what the schema lets through against what the manager decodes: a string the
// schema accepts and a number within its bound both decode as a resource.Quantity (an undecodable value
// would stop the manager's cache from listing any KubervisorService), of the right sign.
func FuzzDecimalSchema(f *testing.F) {
	for _, s := range []string{"3", "2.5", "2500m", ".5", "0.001", "1e3", "1e-999", "+7", "0", "0.0", "1Ki", "999999999999999E", "-1", "1e-99999999999"} {
		f.Add(s, 0.0)
	}
	for _, x := range []float64{2.5, 3, 1e-300, 5e-324, math.MaxFloat64, 0, -1} {
		f.Add("", x)
	}
	positive, nonNegative := regexp.MustCompile(positivePattern), regexp.MustCompile(nonNegativePattern)
	f.Fuzz(func(t *testing.T, s string, x float64) {
		if len(s) <= maxLength && nonNegative.MatchString(s) {
			q, err := resource.ParseQuantity(s)
			if err != nil {
				t.Fatalf("%q matches the schema but does not parse: %v", s, err)
			}
			if q.Sign() < 0 {
				t.Fatalf("%q matches the schema but is %s", s, q.String())
			}
			if positive.MatchString(s) != (q.Sign() > 0) {
				t.Fatalf("%q: matches the positive pattern %v, parses as %s", s, positive.MatchString(s), q.String())
			}
		} else if positive.MatchString(s) && len(s) <= maxLength {
			t.Fatalf("%q matches the positive pattern, not the non-negative one", s)
		}
		// A number reaches the manager as the API server writes it back: encoding/json's form of a float64.
		if math.IsNaN(x) || math.IsInf(x, 0) || x < 0 {
			return
		}
		b, err := json.Marshal(x)
		if err != nil {
			t.Fatal(err)
		}
		var q resource.Quantity
		if err := json.Unmarshal(b, &q); err != nil {
			t.Fatalf("the number %s does not decode: %v", b, err)
		}
		if (x > 0) != (q.Sign() > 0) {
			t.Fatalf("the number %s decodes as %s", b, q.String())
		}
	})
}
