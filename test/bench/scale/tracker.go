package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
)

// tracker watches the benchmark's pods and KubervisorServices (as the administrator, so none of its
// requests is the manager's) and records when each pod was first Ready, first labelled
// kubervisor/name and first kubervisor/traffic=no, and when each KubervisorService was first
// Ready=True.
type tracker struct {
	mu       sync.Mutex
	ready    map[string]bool
	named    map[string]time.Time
	ejected  map[string]time.Time
	kvsReady map[string]time.Time
	last     time.Time // the latest first-named or first-Ready time
	// traffic is each pod's kubervisor/traffic label as last seen, changes how many times one changed.
	traffic map[string]string
	changes int
}

type trackerCounts struct {
	ready, named, kvsReady int
	lastAdoption           time.Time
}

func startTracker(ctx context.Context, cfg *rest.Config, scheme *runtime.Scheme) (*tracker, error) {
	t := &tracker{ready: map[string]bool{}, named: map[string]time.Time{}, ejected: map[string]time.Time{}, kvsReady: map[string]time.Time{},
		traffic: map[string]string{}}
	c, err := cache.New(cfg, cache.Options{
		Scheme:            scheme,
		DefaultNamespaces: map[string]cache.Config{namespace: {}},
		DefaultTransform:  cache.TransformStripManagedFields(),
	})
	if err != nil {
		return nil, err
	}
	for _, obj := range []client.Object{&corev1.Pod{}, &kvv1.KubervisorService{}} {
		inf, err := c.GetInformer(ctx, obj)
		if err != nil {
			return nil, err
		}
		if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc:    t.observe,
			UpdateFunc: func(_, o any) { t.observe(o) },
		}); err != nil {
			return nil, err
		}
	}
	go func() { _ = c.Start(ctx) }() // returns when ctx ends
	if !c.WaitForCacheSync(ctx) {
		return nil, fmt.Errorf("syncing the benchmark's watch of pods and KubervisorServices")
	}
	return t, nil
}

func (t *tracker) observe(obj any) {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	switch o := obj.(type) {
	case *corev1.Pod:
		ready := o.Status.Phase == corev1.PodRunning
		for _, c := range o.Status.Conditions {
			if c.Type == corev1.PodReady {
				ready = ready && c.Status == corev1.ConditionTrue
			}
		}
		if ready {
			t.ready[o.Name] = true
		}
		if _, seen := t.named[o.Name]; !seen && o.Labels[kvv1.LabelName] != "" {
			t.named[o.Name], t.last = now, now
		}
		traffic := o.Labels[kvv1.LabelTraffic]
		if _, seen := t.ejected[o.Name]; !seen && traffic == kvv1.TrafficNo {
			t.ejected[o.Name] = now
		}
		if was, seen := t.traffic[o.Name]; seen && was != traffic {
			t.changes++
		}
		t.traffic[o.Name] = traffic
	case *kvv1.KubervisorService:
		if _, seen := t.kvsReady[o.Name]; !seen && meta.IsStatusConditionTrue(o.Status.Conditions, kvv1.ConditionReady) {
			t.kvsReady[o.Name], t.last = now, now
		}
	}
}

func (t *tracker) counts() trackerCounts {
	t.mu.Lock()
	defer t.mu.Unlock()
	return trackerCounts{ready: len(t.ready), named: len(t.named), kvsReady: len(t.kvsReady), lastAdoption: t.last}
}

// ejectedOf returns when each of pods was first seen with kubervisor/traffic=no.
func (t *tracker) ejectedOf(pods map[string]string) map[string]time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := map[string]time.Time{}
	for p := range pods {
		if at, ok := t.ejected[p]; ok {
			out[p] = at
		}
	}
	return out
}

// trafficChanges counts the changes of a pod's kubervisor/traffic label seen so far (its first value apart).
func (t *tracker) trafficChanges() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.changes
}
