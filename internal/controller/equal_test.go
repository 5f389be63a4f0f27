package controller

import (
	"reflect"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
)

var timeType = reflect.TypeFor[metav1.Time]()

// fill sets every field reachable from v: strings "a", numbers 1, times one fixed instant, one element in
// every slice, every pointer set.
func fill(t *testing.T, v reflect.Value) {
	t.Helper()
	switch {
	case v.Type() == timeType:
		v.Set(reflect.ValueOf(metav1.NewTime(time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC))))
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString("a")
	case reflect.Int, reflect.Int32, reflect.Int64:
		v.SetInt(1)
	case reflect.Struct:
		for _, f := range v.Fields() {
			fill(t, f)
		}
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		fill(t, v.Index(0))
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(t, v.Elem())
	default:
		t.Fatalf("fill: a %s field: teach the test (and sameStatus) about it", v.Type())
	}
}

// change makes the n-th change of a depth-first walk of v and returns true, or returns false when v has
// fewer than n+1 changes. The changes: each leaf to another value, each pointer to nil, each slice to one
// element more.
func change(v reflect.Value, n *int) bool {
	hit := func() bool { *n--; return *n < 0 }
	switch {
	case v.Type() == timeType:
		if hit() {
			v.Set(reflect.ValueOf(metav1.NewTime(v.Interface().(metav1.Time).Add(time.Second))))
			return true
		}
		return false
	}
	switch v.Kind() {
	case reflect.String:
		if hit() {
			v.SetString(v.String() + "b")
			return true
		}
	case reflect.Int, reflect.Int32, reflect.Int64:
		if hit() {
			v.SetInt(v.Int() + 1)
			return true
		}
	case reflect.Struct:
		for _, f := range v.Fields() {
			if change(f, n) {
				return true
			}
		}
	case reflect.Slice:
		if hit() {
			v.Set(reflect.Append(v, v.Index(0)))
			return true
		}
		for i := range v.Len() {
			if change(v.Index(i), n) {
				return true
			}
		}
	case reflect.Pointer:
		if hit() {
			v.Set(reflect.Zero(v.Type()))
			return true
		}
		return change(v.Elem(), n)
	}
	return false
}

// TestSameStatusSeesEveryField changes every field of a status in turn, and the same with the breakers'
// time apart for sameBreakerStatus: each change must be seen, as equality.Semantic.DeepEqual sees it.
func TestSameStatusSeesEveryField(t *testing.T) {
	var base kvv1.KubervisorServiceStatus
	fill(t, reflect.ValueOf(&base).Elem())
	if same := base.DeepCopy(); !sameStatus(&base, same) || !equality.Semantic.DeepEqual(base, *same) {
		t.Fatalf("a copy differs: sameStatus %v", sameStatus(&base, same))
	}
	changes := 0
	for n := 0; ; n++ {
		changed := base.DeepCopy()
		k := n
		if !change(reflect.ValueOf(changed).Elem(), &k) {
			break
		}
		changes++
		if equality.Semantic.DeepEqual(base, *changed) {
			t.Fatalf("change %d is invisible to equality.Semantic too: fix the test", n)
		}
		if sameStatus(&base, changed) {
			t.Errorf("change %d is not seen by sameStatus: %+v", n, *changed)
		}
		if sameStatus(changed, &base) {
			t.Errorf("change %d is not seen by sameStatus the other way round", n)
		}
	}
	// ObservedGeneration, Conditions (1 + 6 fields), Pods (6), Breakers (1 + 10 fields + the time's pointer,
	// the slices' elements, Anomalies' 4), Manual (1 + 5 + 2 pointers): far more than 30.
	if changes < 30 {
		t.Fatalf("only %d changes were tried: the walk is broken", changes)
	}

	var entry kvv1.BreakerStatus
	fill(t, reflect.ValueOf(&entry).Elem())
	moved := *entry.DeepCopy()
	moved.LastEvaluationTime = nil
	if !sameBreakerStatus(entry, moved) {
		t.Errorf("sameBreakerStatus compares the breakers' time")
	}
	for n := 0; ; n++ {
		changed := *entry.DeepCopy()
		k := n
		if !change(reflect.ValueOf(&changed).Elem(), &k) {
			break
		}
		if reflect.DeepEqual(changed.LastEvaluationTime, entry.LastEvaluationTime) && sameBreakerStatus(entry, changed) {
			t.Errorf("change %d of a breaker entry is not seen by sameBreakerStatus: %+v", n, changed)
		}
	}
}

// TestSameStatusAsSemantic: the cases where equality.Semantic is not plain ==.
func TestSameStatusAsSemantic(t *testing.T) {
	at := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		paris = time.FixedZone("CET", 3600)
	}
	for _, c := range []struct {
		name string
		a, b kvv1.KubervisorServiceStatus
	}{
		{"nil and empty slices", kvv1.KubervisorServiceStatus{}, kvv1.KubervisorServiceStatus{
			Conditions: []metav1.Condition{}, Breakers: []kvv1.BreakerStatus{}, Manual: []kvv1.ManualHold{}}},
		{"nil and empty names", kvv1.KubervisorServiceStatus{Breakers: []kvv1.BreakerStatus{{Name: "b"}}},
			kvv1.KubervisorServiceStatus{Breakers: []kvv1.BreakerStatus{{Name: "b", EjectedPods: []string{}, Anomalies: []kvv1.PodDecision{}}}}},
		{"one instant in two zones", kvv1.KubervisorServiceStatus{Conditions: []metav1.Condition{{Type: "Ready", LastTransitionTime: metav1.NewTime(at)}}},
			kvv1.KubervisorServiceStatus{Conditions: []metav1.Condition{{Type: "Ready", LastTransitionTime: metav1.NewTime(at.In(paris))}}}},
		{"a nil time and a zero one", kvv1.KubervisorServiceStatus{Breakers: []kvv1.BreakerStatus{{Name: "b"}}},
			kvv1.KubervisorServiceStatus{Breakers: []kvv1.BreakerStatus{{Name: "b", LastEvaluationTime: &metav1.Time{}}}}},
		{"two pointers to one instant", kvv1.KubervisorServiceStatus{Manual: []kvv1.ManualHold{{Pod: "p", Since: &metav1.Time{Time: at}}}},
			kvv1.KubervisorServiceStatus{Manual: []kvv1.ManualHold{{Pod: "p", Since: &metav1.Time{Time: at.In(paris)}}}}},
	} {
		want := equality.Semantic.DeepEqual(c.a, c.b)
		if got := sameStatus(&c.a, &c.b); got != want {
			t.Errorf("%s: sameStatus %v, equality.Semantic %v", c.name, got, want)
		}
	}
}
