// Package v1alpha1 contains API Schema definitions for the breaker v1alpha1 API group.
// +kubebuilder:object:generate=true
// +groupName=breaker.kubervisor.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is group version used to register these objects.
	GroupVersion = schema.GroupVersion{Group: "breaker.kubervisor.io", Version: "v1alpha1"}

	// SchemeBuilder registers the types of this group-version. NOTE: built on apimachinery rather than
	// controller-runtime's deprecated scheme.Builder, so that importing the API pulls no controller code.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the types in this group-version to the given scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &KubervisorService{}, &KubervisorServiceList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
