package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// RBACKinds are the kinds of a `kustomize build config/default` output that a test cluster without a
// kubelet can use: the CRD, the namespace, and the manager's identity and permissions (the
// Deployment cannot run there; the manager runs as a child process instead).
var RBACKinds = []string{
	kindCRD, kindNamespace, "ServiceAccount",
	"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
}

const (
	kindCRD       = "CustomResourceDefinition"
	kindNamespace = "Namespace"
)

// ApplyOptions configures Apply.
type ApplyOptions struct {
	// Kinds restricts Apply to objects of these kinds; empty means every object.
	Kinds []string
	// FieldManager of the server-side apply; default "kubervisor-e2e".
	FieldManager string
	// DefaultNamespace is used for namespaced objects that name none; default "default".
	DefaultNamespace string
}

// Apply applies every object of a multi-document YAML (or JSON) stream to the cluster as its
// administrator; see the package-level Apply.
func (c *Cluster) Apply(ctx context.Context, manifests []byte, opts ApplyOptions) ([]*unstructured.Unstructured, error) {
	return Apply(ctx, c.cfg, manifests, opts)
}

// ApplyFile applies the manifests of a file; see Apply.
func (c *Cluster) ApplyFile(ctx context.Context, path string, opts ApplyOptions) ([]*unstructured.Unstructured, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading manifests: %w", err)
	}
	return c.Apply(ctx, data, opts)
}

// Apply applies the objects of a multi-document YAML (or JSON) stream, such as the output of
// `kustomize build config/default`, by server-side apply (conflicts forced), and returns what the API
// server answered. CustomResourceDefinitions go first and are waited for until the API server serves
// them, then Namespaces, then everything else in stream order. Every object is validated by the API
// server, so a refused object is an error naming it.
func Apply(ctx context.Context, cfg *rest.Config, manifests []byte, opts ApplyOptions) ([]*unstructured.Unstructured, error) {
	if opts.FieldManager == "" {
		opts.FieldManager = "kubervisor-e2e"
	}
	if opts.DefaultNamespace == "" {
		opts.DefaultNamespace = metav1.NamespaceDefault
	}
	objs, err := DecodeManifests(manifests)
	if err != nil {
		return nil, err
	}
	if len(opts.Kinds) > 0 {
		objs = slices.DeleteFunc(objs, func(u *unstructured.Unstructured) bool { return !slices.Contains(opts.Kinds, u.GetKind()) })
	}
	rank := func(u *unstructured.Unstructured) int {
		switch u.GetKind() {
		case kindCRD:
			return 0
		case kindNamespace:
			return 1
		}
		return 2
	}
	slices.SortStableFunc(objs, func(a, b *unstructured.Unstructured) int { return rank(a) - rank(b) })

	// NOTE: the client's REST mapper discovers a group the first time it is asked for it, so a fresh
	// client finds the kinds of the CRDs applied (and waited for) below.
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		return nil, err
	}
	var applied []*unstructured.Unstructured
	var crds []*apiextensionsv1.CustomResourceDefinition
	for i, obj := range objs {
		if rank(obj) > 0 && len(crds) > 0 {
			// The CRDs must serve before their objects can be applied.
			if err := waitForCRDs(cfg, crds); err != nil {
				return applied, err
			}
			crds = nil
		}
		gvk := obj.GroupVersionKind()
		namespaced, err := c.IsObjectNamespaced(obj)
		if err != nil {
			return applied, fmt.Errorf("object %d (%s %s): %w", i, gvk.Kind, obj.GetName(), err)
		}
		if namespaced && obj.GetNamespace() == "" {
			obj.SetNamespace(opts.DefaultNamespace)
		}
		// The answer is decoded into obj.
		if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(obj), client.FieldOwner(opts.FieldManager), client.ForceOwnership); err != nil {
			return applied, fmt.Errorf("applying %s %s: %w", gvk.Kind, namespacedName(obj), err)
		}
		applied = append(applied, obj)
		if gvk.Kind == kindCRD {
			crd := &apiextensionsv1.CustomResourceDefinition{}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, crd); err != nil {
				return applied, fmt.Errorf("reading CRD %s: %w", obj.GetName(), err)
			}
			crds = append(crds, crd)
		}
	}
	if len(crds) > 0 {
		if err := waitForCRDs(cfg, crds); err != nil {
			return applied, err
		}
	}
	return applied, nil
}

// waitForCRDs waits until the API server serves every version of the CRDs, as envtest does after
// installing its own. NOTE: envtest.WaitForCRDs takes no context; it gives up after 30s.
func waitForCRDs(cfg *rest.Config, crds []*apiextensionsv1.CustomResourceDefinition) error {
	err := envtest.WaitForCRDs(cfg, crds, envtest.CRDInstallOptions{MaxTime: 30 * time.Second, PollInterval: 100 * time.Millisecond})
	if err != nil {
		names := make([]string, len(crds))
		for i, crd := range crds {
			names[i] = crd.Name
		}
		return fmt.Errorf("waiting for CRDs %s to be served: %w", strings.Join(names, ", "), err)
	}
	return nil
}

// DecodeManifests splits a multi-document YAML (or JSON) stream into objects, skipping empty
// documents and flattening v1 Lists.
func DecodeManifests(manifests []byte) ([]*unstructured.Unstructured, error) {
	dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(manifests), 4096)
	var objs []*unstructured.Unstructured
	for i := 0; ; i++ {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, fmt.Errorf("decoding document %d: %w", i, err)
		}
		if len(m) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: m}
		if u.IsList() {
			list, err := u.ToList()
			if err != nil {
				return nil, fmt.Errorf("decoding list in document %d: %w", i, err)
			}
			for j := range list.Items {
				objs = append(objs, &list.Items[j])
			}
			continue
		}
		if u.GetKind() == "" || u.GetAPIVersion() == "" {
			return nil, fmt.Errorf("document %d has no apiVersion or kind", i)
		}
		objs = append(objs, u)
	}
}

func namespacedName(u *unstructured.Unstructured) string {
	if u.GetNamespace() == "" {
		return u.GetName()
	}
	return u.GetNamespace() + "/" + u.GetName()
}
