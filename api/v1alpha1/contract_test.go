package v1alpha1

import (
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
