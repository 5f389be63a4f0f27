package controller_test

import (
	"context"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
)

// A real refusal of adoption: a ValidatingAdmissionPolicy (CEL, in the API server) denies the kubervisor/name
// label on the pods marked refuse-adoption=true, as a webhook of a platform team might.
var _ = Describe("Adoption refused by the API server", func() {
	ctx := context.Background()

	It("keeps evaluation waiting with Ready=False/AdoptionFailed naming the pod and the refusal, then recovers", func() {
		ns := newNamespace()
		policy := &admissionregistrationv1.ValidatingAdmissionPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: "refuse-adoption-" + ns},
			Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
				FailurePolicy: new(admissionregistrationv1.Fail),
				MatchConstraints: &admissionregistrationv1.MatchResources{ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
					RuleWithOperations: admissionregistrationv1.RuleWithOperations{
						Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Update},
						Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
					},
				}}},
				Validations: []admissionregistrationv1.Validation{{
					Expression: `!has(object.metadata.labels) || !('kubervisor/name' in object.metadata.labels)`,
					Message:    "this pod refuses Kubervisor's labels",
				}},
			},
		}
		Expect(k8sClient.Create(ctx, policy)).To(Succeed())
		DeferCleanup(k8sClient.Delete, ctx, policy)
		binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
			ObjectMeta: metav1.ObjectMeta{Name: policy.Name},
			Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{
				PolicyName:        policy.Name,
				ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny},
				MatchResources: &admissionregistrationv1.MatchResources{
					NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": ns}},
					ObjectSelector:    &metav1.LabelSelector{MatchLabels: map[string]string{"refuse-adoption": "true"}},
				},
			},
		}
		Expect(k8sClient.Create(ctx, binding)).To(Succeed())
		DeferCleanup(k8sClient.Delete, ctx, binding)

		// The policy takes effect once the API server has loaded it: wait until it refuses a probe pod.
		probe := newPod(ns, "probe", map[string]string{"refuse-adoption": "true"}, true)
		Eventually(func() error {
			p := getPod(ns, probe.Name)
			p.Labels[kvv1.LabelName] = "x"
			return k8sClient.Update(ctx, p)
		}).Should(MatchError(ContainSubstring("this pod refuses Kubervisor's labels")))

		newService(ns, "pricer", map[string]string{"app": "pricer", kvv1.LabelTraffic: kvv1.TrafficYes})
		newPod(ns, "a", map[string]string{"app": "pricer"}, true)
		b := newPod(ns, "b", map[string]string{"app": "pricer", "refuse-adoption": "true"}, true)
		newKVS(ns, "kvs", "pricer", nil)

		Eventually(condition(ns, "kvs", kvv1.ConditionReady)).Should(And(
			HaveField("Status", metav1.ConditionFalse), HaveField("Reason", kvv1.ReasonAdoptionFailed),
			HaveField("Message", And(ContainSubstring("could not be adopted: b: "), ContainSubstring("this pod refuses Kubervisor's labels")))))
		Expect(podLabels(ns, "a")()).To(HaveKeyWithValue(kvv1.LabelName, "kvs"), "the other pod is adopted")
		Expect(getKVS(ns, "kvs").Status.Breakers).To(BeEmpty(), "no breaker evaluated a partly adopted fleet")

		By("the pod stops refusing: adopted, evaluated, Ready")
		patchLabels(b, map[string]string{"refuse-adoption": "false"})
		Eventually(podLabels(ns, "b")).Should(HaveKeyWithValue(kvv1.LabelName, "kvs"))
		Eventually(condition(ns, "kvs", kvv1.ConditionReady)).Should(HaveField("Status", metav1.ConditionTrue))
	})
})
