package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
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
// server answered. CustomResourceDefinitions go first and are waited for until Established, then
// Namespaces, then everything else in stream order. Every object is validated by the API server, so a
// refused object is an error naming it.
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

	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))

	var applied []*unstructured.Unstructured
	var crds []string
	for i, obj := range objs {
		if rank(obj) > 0 && len(crds) > 0 {
			// The CRDs must serve before their objects can be applied.
			if err := waitEstablished(ctx, dyn, crds); err != nil {
				return applied, err
			}
			crds = nil
			mapper.Reset()
		}
		gvk := obj.GroupVersionKind()
		mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if meta.IsNoMatchError(err) {
			mapper.Reset()
			mapping, err = mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		}
		if err != nil {
			return applied, fmt.Errorf("object %d (%s %s): %w", i, gvk.Kind, obj.GetName(), err)
		}
		var ri dynamic.ResourceInterface = dyn.Resource(mapping.Resource)
		if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
			if obj.GetNamespace() == "" {
				obj.SetNamespace(opts.DefaultNamespace)
			}
			ri = dyn.Resource(mapping.Resource).Namespace(obj.GetNamespace())
		}
		out, err := ri.Apply(ctx, obj.GetName(), obj, metav1.ApplyOptions{FieldManager: opts.FieldManager, Force: true})
		if err != nil {
			return applied, fmt.Errorf("applying %s %s: %w", gvk.Kind, namespacedName(obj), err)
		}
		applied = append(applied, out)
		if gvk.Kind == kindCRD {
			crds = append(crds, obj.GetName())
		}
	}
	if len(crds) > 0 {
		if err := waitEstablished(ctx, dyn, crds); err != nil {
			return applied, err
		}
	}
	return applied, nil
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

func waitEstablished(ctx context.Context, dyn dynamic.Interface, names []string) error {
	crds := dyn.Resource(apiextensionsv1.SchemeGroupVersion.WithResource("customresourcedefinitions"))
	for _, name := range names {
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			u, err := crds.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, nil //nolint:nilerr // retried until the timeout
			}
			conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
			for _, c := range conds {
				if m, ok := c.(map[string]any); ok && m["type"] == string(apiextensionsv1.Established) && m["status"] == "True" {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			return fmt.Errorf("waiting for CRD %s to be established: %w", name, err)
		}
	}
	return nil
}

func namespacedName(u *unstructured.Unstructured) string {
	if u.GetNamespace() == "" {
		return u.GetName()
	}
	return u.GetNamespace() + "/" + u.GetName()
}
