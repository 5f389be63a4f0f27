package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/plugin"
	"github.com/kubervisor/kubervisor/test/utils"
)

// TestPluginAgainstAPIServer runs the real kubectl-kubervisor binary against a real kube-apiserver and etcd
// (envtest), authenticated as a user of a kubeconfig, as kubectl would run it. No controller runs: the test
// writes the pods' labels and the KubervisorService status itself.
func TestPluginAgainstAPIServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a kube-apiserver")
	}
	if _, err := utils.AssetsDir(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "kubectl-kubervisor")
	built := make(chan error, 1)
	go func() { // build while the control plane starts
		out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
		if err != nil {
			err = errors.New(err.Error() + ": " + string(out))
		}
		built <- err
	}()

	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	cfg := utils.StartControlPlane(t, env)
	admin, err := env.AddUser(envtest.User{Name: "admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig, err := admin.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	kubeconfigPath := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfigPath, kubeconfig, 0o600); err != nil {
		t.Fatal(err)
	}
	scheme, err := plugin.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	createFixture(ctx, t, c)
	if err := <-built; err != nil {
		t.Fatalf("building kubectl-kubervisor: %v", err)
	}

	// run runs the plugin and checks its output against want, a golden text in which <AGE> stands for a
	// few seconds, <MIN> for minutes and <TIME> for an RFC 3339 time (the objects were created just now).
	run := func(t *testing.T, wantCode int, want string, args ...string) {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"--kubeconfig", kubeconfigPath}, args...)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		if exit, ok := errors.AsType[*exec.ExitError](err); ok {
			code = exit.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		got := stdout.String() + stderr.String()
		t.Logf("$ kubectl kubervisor %s\n%s", strings.Join(args, " "), got)
		if code != wantCode {
			t.Errorf("exit code %d, want %d", code, wantCode)
		}
		if !golden(want).MatchString(got) {
			t.Errorf("output does not match.\nwant:\n%s\ngot:\n%s", want, got)
		}
	}
	selector := func(t *testing.T) map[string]string {
		t.Helper()
		var svc corev1.Service
		if err := c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "pricer"}, &svc); err != nil {
			t.Fatal(err)
		}
		return svc.Spec.Selector
	}

	t.Run("list", func(t *testing.T) {
		run(t, 0, `NAME     SERVICE   READY   MANAGED   IN-TRAFFIC   EJECTED   PAUSED   DRY-RUN   ACTIVE   CONFLICT   AGE
pricer   pricer    True    4         1            2         1        false     False    False      <AGE>
`, "-n", "shop", "list")
		// No subcommand lists too.
		run(t, 0, `NAME     SERVICE   READY   MANAGED   IN-TRAFFIC   EJECTED   PAUSED   DRY-RUN   ACTIVE   CONFLICT   AGE
pricer   pricer    True    4         1            2         1        false     False    False      <AGE>
`, "-n", "shop")
	})
	t.Run("list all namespaces", func(t *testing.T) {
		run(t, 0, `NAMESPACE   NAME     SERVICE   READY    MANAGED   IN-TRAFFIC   EJECTED   PAUSED   DRY-RUN   ACTIVE   CONFLICT   AGE
other       search   search    <none>   0         0            0         0        true      <none>   <none>     <AGE>
shop        pricer   pricer    True     4         1            2         1        false     False    False      <AGE>
`, "list", "-A")
	})
	t.Run("get, selector inactive", func(t *testing.T) {
		run(t, 0, `Name:                pricer
Namespace:           shop
Service:             pricer (selector app=pricer)
Dry run:             false
Activator:           restores only, never pauses or kills: the selector of Service pricer lacks kubervisor/traffic=yes
Default activator:   retryAndKill, period 1h, maxRetryCount 1
Pods:                managed 4, ready 4, in traffic 1, ejected 2, paused 1, unknown 0
Age:                 <AGE>

Conditions:
  TYPE                STATUS   REASON                    MESSAGE
  Ready               True     BreakersHealthy           Service found and every breaker's last evaluation succeeded
  TrafficControlled   False    SelectorLacksTrafficKey   Service pricer does not select kubervisor/traffic=yes
  Conflict            False    NoConflict                No other KubervisorService supervises these pods

Breakers:
  http-errors:
    Activator:          retryAndKill, period 1h, maxRetryCount 1
    Last result:        OK
    Last evaluation:    <TIME> (<AGE> ago)
    Anomalous pods:     pricer-b
    Ejected pods:       pricer-b
    Withheld pods:      <none>
    Would-eject pods:   <none>

Manual holds:
  <none>

POD        READY   TRAFFIC   BREAKER       RETRIES   BREAK-AT   NEXT
pricer-a   True    yes       <none>        <none>    <none>     <none>
pricer-b   True    no        http-errors   1         <AGE>      restore in <MIN>
pricer-c   True    no        http-errors   2         60m        restore now
pricer-d   True    pause     http-errors   2         120m       <none>
`, "-n", "shop", "get", "pricer")
	})
	t.Run("activate", func(t *testing.T) {
		run(t, 0, `service/pricer selector now includes kubervisor/traffic=yes
warning: 1 of 5 pods selected by service/pricer have no kubervisor/traffic label: they receive no traffic until the Kubervisor controller labels them (is it running?)
`, "-n", "shop", "activate", "pricer")
		if got := selector(t); got[kvv1.LabelTraffic] != kvv1.TrafficYes || got["app"] != "pricer" || len(got) != 2 {
			t.Errorf("selector on the server after activate: %v", got)
		}
		// Still true, so still said.
		run(t, 0, `service/pricer selector already includes kubervisor/traffic=yes (already active)
warning: 1 of 5 pods selected by service/pricer have no kubervisor/traffic label: they receive no traffic until the Kubervisor controller labels them (is it running?)
`, "-n", "shop", "activate", "pricer")
	})
	t.Run("get, active", func(t *testing.T) {
		run(t, 0, `(?s).*
POD        READY   TRAFFIC   BREAKER       RETRIES   BREAK-AT   NEXT
pricer-a   True    yes       <none>        <none>    <none>     <none>
pricer-b   True    no        http-errors   1         <AGE>      restore in <MIN>
pricer-c   True    no        http-errors   2         60m        kill now
pricer-d   True    pause     http-errors   2         120m       <none>
`, "-n", "shop", "get", "pricer")
	})
	t.Run("deactivate", func(t *testing.T) {
		run(t, 0, "service/pricer selector no longer includes kubervisor/traffic=yes\n", "-n", "shop", "deactivate", "pricer")
		if got := selector(t); len(got) != 1 || got["app"] != "pricer" {
			t.Errorf("selector on the server after deactivate: %v", got)
		}
		run(t, 0, "service/pricer selector already lacks kubervisor/traffic (already inactive)\n",
			"-n", "shop", "deactivate", "pricer")
	})
	t.Run("errors", func(t *testing.T) {
		run(t, 1, `error: context "nope" not found in kubeconfig (contexts: envtest)`+"\n", "--context", "nope", "list")
		run(t, 1, `error: KubervisorService "cart" not found in namespace "shop"`+"\n", "-n", "shop", "get", "cart")
		run(t, 1, `error: service "search", named by KubervisorService "search", not found in namespace "other"`+"\n",
			"-n", "other", "activate", "search")
		run(t, 1, `error: accepts 1 arg(s), received 0`+"\n", "get")
	})
	annotations := func(t *testing.T, name string) map[string]string {
		t.Helper()
		var p corev1.Pod
		if err := c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: name}, &p); err != nil {
			t.Fatal(err)
		}
		return p.Annotations
	}
	// No controller runs: answer plays its part for the next request on a pod, once.
	answer := func(t *testing.T, name, outcome string) (finish func()) {
		t.Helper()
		ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		done := make(chan error, 1)
		go func() {
			done <- wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, func(ctx context.Context) (bool, error) {
				var p corev1.Pod
				if err := c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: name}, &p); err != nil {
					return false, err
				}
				at := p.Annotations[kvv1.AnnotationRequestAt]
				if at == "" {
					return false, nil
				}
				set := map[string]any{kvv1.AnnotationRequestOutcome: at + " " + outcome}
				for _, k := range kvv1.RequestAnnotations {
					set[k] = nil
				}
				body, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": set}})
				if err != nil {
					return false, err
				}
				return true, c.Patch(ctx, &p, client.RawPatch(types.MergePatchType, body))
			})
		}()
		return func() {
			t.Helper()
			if err := <-done; err != nil {
				t.Errorf("answering the request on pod %s: %v", name, err)
			}
			cancel()
		}
	}
	t.Run("eject and restore", func(t *testing.T) {
		labels := func(name string) map[string]string {
			var p corev1.Pod
			if err := c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: name}, &p); err != nil {
				t.Fatal(err)
			}
			return p.Labels
		}
		before := labels("pricer-a")
		run(t, 0, `pod/pricer-a: eject requested by admin (request-at <AT>); not waiting: check with "kubectl kubervisor get pricer -n shop"`+"\n",
			"-n", "shop", "eject", "pricer-a", "--reason", "bad node", "--for", "90m", "--force", "--wait", "0")
		got := annotations(t, "pricer-a")
		if _, err := time.Parse(time.RFC3339Nano, got[kvv1.AnnotationRequestAt]); err != nil {
			t.Errorf("request-at: %v", err)
		}
		want := map[string]string{kvv1.AnnotationRequest: "eject", kvv1.AnnotationRequestBy: "admin",
			kvv1.AnnotationRequestAt: got[kvv1.AnnotationRequestAt], kvv1.AnnotationRequestReason: "bad node",
			kvv1.AnnotationRequestFor: "1h30m0s", kvv1.AnnotationRequestForce: "true"}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("annotations after eject (-want +got):\n%s", diff)
		}
		// A restore replaces the pending eject: its --reason, --for and --force are gone.
		run(t, 1, `pod/pricer-a: replacing the pending eject request of admin (request-at <AT>)
pod/pricer-a: restore requested by admin (request-at <AT>); waiting up to 1s for the controller
error: pod/pricer-a: no answer from the controller within 1s (is it running?); the restore request (request-at <AT>) is written and pending: check with "kubectl kubervisor get pricer -n shop" or the pod's kubervisor/request-outcome annotation
`, "-n", "shop", "restore", "pricer-a", "--wait", "1s")
		got = annotations(t, "pricer-a")
		want = map[string]string{kvv1.AnnotationRequest: "restore", kvv1.AnnotationRequestBy: "admin",
			kvv1.AnnotationRequestAt: got[kvv1.AnnotationRequestAt]}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("annotations after restore (-want +got):\n%s", diff)
		}
		if after := labels("pricer-a"); !maps.Equal(before, after) {
			t.Errorf("the plugin changed labels: %v, then %v", before, after)
		}

		answered := answer(t, "pricer-b", "Done: restored by admin: node drained")
		run(t, 0, `pod/pricer-b: restore requested by admin (request-at <AT>); waiting up to 10s for the controller
pod/pricer-b: Done: restored by admin: node drained
`, "-n", "shop", "restore", "pricer-b", "--reason", "node drained")
		answered()
		answered = answer(t, "pricer-b", "Refused: the floor keeps pricer-b in traffic (use --force)")
		run(t, 1, `pod/pricer-b: eject requested by admin (request-at <AT>); waiting up to 10s for the controller
error: pod/pricer-b: Refused: the floor keeps pricer-b in traffic (use --force)
`, "-n", "shop", "eject", "pricer-b")
		answered()

		run(t, 1, "error: refusing to eject pod shop/pricer-e: no KubervisorService supervises it (it has no kubervisor/name label)\n",
			"-n", "shop", "eject", "pricer-e")
		run(t, 1, `error: --for "1d": not a duration such as 30m or 2h: time: unknown unit "d" in duration "1d"`+"\n",
			"-n", "shop", "eject", "pricer-a", "--for", "1d")
	})
	t.Run("the kubervisor-operator role is enough", func(t *testing.T) {
		// As installed: config/default's namePrefix turns "operator" into "kubervisor-operator".
		raw, err := os.ReadFile(filepath.Join("..", "..", "config", "rbac", "kubervisor_operator_role.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		role := &rbacv1.ClusterRole{}
		if err := yaml.UnmarshalStrict(raw, role); err != nil {
			t.Fatal(err)
		}
		role.Name = "kubervisor-" + role.Name
		rbac, err := client.New(cfg, client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := rbac.Create(ctx, role); err != nil {
			t.Fatal(err)
		}
		if err := rbac.Create(ctx, &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "oncall"},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "dave"}},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		}); err != nil {
			t.Fatal(err)
		}
		kubeconfigOf := func(name string) string {
			u, err := env.AddUser(envtest.User{Name: name}, nil)
			if err != nil {
				t.Fatal(err)
			}
			kc, err := u.KubeConfig()
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, name+".kubeconfig")
			if err := os.WriteFile(path, kc, 0o600); err != nil {
				t.Fatal(err)
			}
			return path
		}
		dave, erin := kubeconfigOf("dave"), kubeconfigOf("erin")
		// dave has no rule on selfsubjectreviews: system:basic-user gives it to every authenticated user.
		run(t, 0, `pod/pricer-c: eject requested by dave (request-at <AT>); not waiting: check with "kubectl kubervisor get pricer -n shop"`+"\n",
			"--kubeconfig", dave, "-n", "shop", "eject", "pricer-c", "--reason", "on call", "--wait", "0")
		if got := annotations(t, "pricer-c")[kvv1.AnnotationRequestBy]; got != "dave" {
			t.Errorf("request-by: got %q, want dave", got)
		}
		run(t, 0, "(?s).*\npricer-d   True    pause     http-errors   2         120m       <none>\n",
			"--kubeconfig", dave, "-n", "shop", "get", "pricer")
		run(t, 0, "(?s).*\npricer   pricer    True    4         1            2         1        false     False    False      <AGE>\n",
			"--kubeconfig", dave, "-n", "shop", "list")
		// Without the role: refused, and said by whom.
		run(t, 1, `error: getting pod shop/pricer-c: pods "pricer-c" is forbidden: User "erin" cannot get resource "pods" in API group "" in the namespace "shop"`+"\n",
			"--kubeconfig", erin, "-n", "shop", "eject", "pricer-c")
	})
}

var placeholder = regexp.MustCompile(`<(AGE|MIN|TIME|AT)> *`)

// golden turns a golden text with placeholders into an anchored regular expression. A text starting with
// (?s).* matches any beginning.
func golden(want string) *regexp.Regexp {
	prefix := ""
	if rest, ok := strings.CutPrefix(want, "(?s).*"); ok {
		prefix, want = "(?s).*", rest
	}
	// A placeholder takes the padding after it too: the value it stands for may be shorter or longer.
	quoted := placeholder.ReplaceAllStringFunc(regexp.QuoteMeta(want), func(m string) string {
		pattern := map[string]string{"<AGE>": `\d+s`, "<MIN>": `\d+m`, "<TIME>": `\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ`,
			"<AT>": `\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z`}
		p := pattern[strings.TrimRight(m, " ")]
		if strings.HasSuffix(m, " ") {
			p += " +"
		}
		return p
	})
	return regexp.MustCompile("^" + prefix + quoted + "$")
}

// createFixture creates, in namespace shop, a Service whose selector lacks the traffic key, four pods of
// its KubervisorService in every traffic state plus one pod not adopted yet, and the KubervisorService with
// a status as the controller would write it; in namespace other, a dry-run KubervisorService without
// status whose Service does not exist.
func createFixture(ctx context.Context, t *testing.T, c client.Client) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, ns := range []string{"shop", "other"} {
		must(c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	}
	must(c.Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "pricer"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "pricer"},
			Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}))

	now := time.Now()
	breakAt := func(d time.Duration) string { return now.Add(-d).UTC().Format(time.RFC3339Nano) }
	pods := []struct {
		name, traffic, breakAt, retries string
	}{
		{"pricer-a", kvv1.TrafficYes, "", ""},
		{"pricer-b", kvv1.TrafficNo, breakAt(0), "1"},         // back after 1 × 1h
		{"pricer-c", kvv1.TrafficNo, breakAt(time.Hour), "2"}, // beyond maxRetryCount 1: killed
		{"pricer-d", kvv1.TrafficPause, breakAt(2 * time.Hour), "2"},
		{"pricer-e", "", "", ""}, // selected by the Service, not adopted yet
	}
	for _, p := range pods {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: p.name, Labels: map[string]string{"app": "pricer"}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example.com/pricer:1"}}},
		}
		if p.traffic != "" {
			pod.Labels[kvv1.LabelName] = "pricer"
			pod.Labels[kvv1.LabelTraffic] = p.traffic
		}
		if p.breakAt != "" {
			pod.Labels[kvv1.LabelStrategy] = "http-errors"
			pod.Annotations = map[string]string{kvv1.AnnotationBreakAt: p.breakAt, kvv1.AnnotationRetryCount: p.retries}
		}
		must(c.Create(ctx, pod))
		pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
		must(c.Status().Update(ctx, pod))
	}

	kvs := &kvv1.KubervisorService{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "pricer"},
		Spec: kvv1.KubervisorServiceSpec{
			Service: "pricer",
			Breakers: []kvv1.BreakerStrategy{{
				Name:          "http-errors",
				CustomService: &kvv1.CustomService{URL: "detector:8080/anomalies"},
			}},
			DefaultActivator: &kvv1.ActivatorStrategy{
				Mode:          kvv1.ActivatorModeRetryAndKill,
				Period:        new(intstr.FromString("1h")),
				MaxRetryCount: ptr.To[int32](1),
			},
		},
	}
	must(c.Create(ctx, kvs))
	cond := func(typ string, status metav1.ConditionStatus, reason, msg string) metav1.Condition {
		return metav1.Condition{Type: typ, Status: status, Reason: reason, Message: msg,
			LastTransitionTime: metav1.NewTime(now), ObservedGeneration: kvs.Generation}
	}
	kvs.Status = kvv1.KubervisorServiceStatus{
		ObservedGeneration: kvs.Generation,
		Conditions: []metav1.Condition{
			cond(kvv1.ConditionReady, metav1.ConditionTrue, kvv1.ReasonAllBreakersOK,
				"Service found and every breaker's last evaluation succeeded"),
			cond(kvv1.ConditionTrafficControlled, metav1.ConditionFalse, kvv1.ReasonSelectorNoTraffic,
				"Service pricer does not select kubervisor/traffic=yes"),
			cond(kvv1.ConditionConflict, metav1.ConditionFalse, kvv1.ReasonNoConflict,
				"No other KubervisorService supervises these pods"),
		},
		Pods: kvv1.PodCounts{Managed: 4, Ready: 4, InTraffic: 1, Ejected: 2, Paused: 1},
		Breakers: []kvv1.BreakerStatus{{
			Name: "http-errors", LastResult: "OK", LastEvaluationTime: new(metav1.NewTime(now)),
			AnomalousPods: []string{"pricer-b"}, EjectedPods: []string{"pricer-b"},
		}},
	}
	must(c.Status().Update(ctx, kvs))

	must(c.Create(ctx, &kvv1.KubervisorService{
		ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "search"},
		Spec: kvv1.KubervisorServiceSpec{
			Service: "search",
			DryRun:  true,
			Breakers: []kvv1.BreakerStrategy{{
				Name:          "http-errors",
				CustomService: &kvv1.CustomService{URL: "detector:8080/anomalies"},
			}},
		},
	}))
}
