//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/test/cluster"
)

// managerJob is the scrape job of the manager: the name the alerting rules select (the job a Prometheus
// Operator ServiceMonitor of config/prometheus gets).
const managerJob = "kubervisor-controller-manager-metrics-service"

// The alerting rules and the dashboards, as users install them (SPEC §12): every query they hold is run
// against the suite's Prometheus scraping the real manager, over plain HTTP (--metrics-secure=false).
var _ = Describe("Observability on a real cluster", func() {
	It("answers every alert expression and dashboard query with a series, and the storm and detector-failure alerts fire", func() {
		metricsAddr := managerMetricsAddr()

		By("a storm fleet (8 pods) and a fleet with a failing detector, a kill refused by a PodDisruptionBudget (4 pods)")
		storm := newScenario(8)
		deleteNamespaceLater(storm)
		broken := newScenario(4)
		deleteNamespaceLater(broken)
		// NOTE: newScenario scrapes its own fleet only; both fleets and the manager are needed from here on.
		Expect(prom.SetJobs(ctx, []cluster.ScrapeJob{
			{Name: storm.ns, Targets: []string{storm.fleet.Addr()}},
			{Name: broken.ns, Targets: []string{broken.fleet.Addr()}},
			{Name: managerJob, Targets: []string{metricsAddr}},
		})).To(Succeed())

		// The storm KVS: http-errors has the default storm guard; dry-run would eject within a 50% floor,
		// which gives the would-eject and withheld series.
		dry := storm.discrete()
		dry.Name = "dry-run"
		dry.DryRun = true
		dry.MaxAnomalousPercent = new(int32(100))
		dry.MinPodsAvailableRatio = new(int32(50))
		storm.createKVS(storm.discrete(), func(k *kvv1.KubervisorService) {
			k.Spec.Breakers = append(k.Spec.Breakers, dry)
		})
		stormPods := storm.pods()
		for _, p := range stormPods[:5] {
			Expect(storm.fleet.SetErrorRate(p, 0.8)).To(Succeed())
		}

		// The broken KVS: http-errors ejects the one failing pod, restores it after 1s, ejects it again and
		// then wants it killed, which the PodDisruptionBudget refuses; "broken" queries a metric nobody
		// exports, with onNoData: error.
		minAvailable := intstr.FromInt32(4)
		Expect(k8s.Create(ctx, &policyv1.PodDisruptionBudget{
			ObjectMeta: metav1.ObjectMeta{Namespace: broken.ns, Name: broken.name},
			Spec: policyv1.PodDisruptionBudgetSpec{
				MinAvailable: &minAvailable,
				Selector:     &metav1.LabelSelector{MatchLabels: map[string]string{"app": broken.name}},
			},
		})).To(Succeed())
		failing := broken.discrete()
		failing.Name = "broken"
		failing.DiscreteValueOutOfList.PromQL = `sum(increase(no_such_metric_total[20s])) by (code, pod)`
		failing.OnNoData = kvv1.OnNoDataError
		Expect(k8s.Create(ctx, &kvv1.KubervisorService{
			ObjectMeta: metav1.ObjectMeta{Namespace: broken.ns, Name: broken.name},
			Spec: kvv1.KubervisorServiceSpec{
				Service:  broken.name,
				Breakers: []kvv1.BreakerStrategy{broken.discrete(), failing},
				DefaultActivator: &kvv1.ActivatorStrategy{Mode: kvv1.ActivatorModeRetryAndKill, Period: intOrString("1s"),
					MaxRetryCount: new(int32(1))},
			},
		})).To(Succeed())
		brokenPods := broken.pods()
		Expect(broken.fleet.SetErrorRate(brokenPods[0], 0.8)).To(Succeed())

		Eventually(storm.breaker()).WithTimeout(time.Minute).Should(HaveField("LastResult", kvv1.ResultStormSuspected))
		Eventually(broken.condition(kvv1.ConditionReady)).Should(And(
			HaveField("Status", metav1.ConditionFalse), HaveField("Reason", kvv1.ReasonDetectorError)))

		api := prom.API()
		rules := alertRules()
		Expect(rules).NotTo(BeEmpty())

		By("Prometheus's rule engine loads a copy of the rule file with every `for` in seconds instead of minutes")
		// NOTE: the copy changes the unit of `for` only (10m -> 10s): expressions, labels and the other
		// rules are the shipped ones, and promtool's unit tests (make test-rules) cover the real durations.
		Expect(prom.SetRuleFiles(ctx, []string{shortRuleFile()})).To(Succeed())
		DeferCleanup(func() { Expect(prom.SetRuleFiles(ctx, nil)).To(Succeed()) })

		By("the storm alert fires for the storm fleet's breaker and the detector-failure alert for the broken one")
		Eventually(func() []model.LabelSet { return firing(api) }).WithTimeout(90 * time.Second).Should(ContainElements(
			And(HaveKeyWithValue(model.LabelName("alertname"), model.LabelValue("KubervisorStormSuspected")),
				HaveKeyWithValue(model.LabelName("namespace"), model.LabelValue(storm.ns)),
				HaveKeyWithValue(model.LabelName("breaker"), model.LabelValue("http-errors"))),
			And(HaveKeyWithValue(model.LabelName("alertname"), model.LabelValue("KubervisorDetectorFailing")),
				HaveKeyWithValue(model.LabelName("namespace"), model.LabelValue(broken.ns)),
				HaveKeyWithValue(model.LabelName("breaker"), model.LabelValue("broken"))),
		))
		By("and not for what is healthy: the broken fleet's working breaker, the storm fleet's detector, the manager")
		Expect(firing(api)).NotTo(ContainElement(Or(
			And(HaveKeyWithValue(model.LabelName("alertname"), model.LabelValue("KubervisorDetectorFailing")),
				HaveKeyWithValue(model.LabelName("breaker"), model.LabelValue("http-errors"))),
			HaveKeyWithValue(model.LabelName("alertname"), model.LabelValue("KubervisorManagerDown")),
		)))

		By("every alert expression is valid and every series it reads exists")
		report := []string{}
		for _, name := range sortedKeys(rules) {
			expr := rules[name].Expr
			_, _, err := api.Query(ctx, expr, time.Now())
			Expect(err).NotTo(HaveOccurred(), "alert %s: %s", name, expr)
			firing := len(seriesOf(api, expr))
			for _, sel := range selectors(expr) {
				Eventually(func() []model.LabelSet { return seriesOf(api, sel) }).WithTimeout(time.Minute).
					ShouldNot(BeEmpty(), "alert %s reads %s, which Prometheus does not have", name, sel)
				report = append(report, fmt.Sprintf("alert %s (firing series now: %d) reads %s: %d series", name, firing, sel, len(seriesOf(api, sel))))
			}
		}

		By("every dashboard query returns a series, template variables set to the two KubervisorServices")
		vars := strings.NewReplacer(
			"$namespace", storm.ns+"|"+broken.ns, "$kubervisorservice", storm.name, "$job", managerJob,
			"$__rate_interval", "1m")
		// NOTE: controller-runtime's generated dashboards select namespace and pod, which a Prometheus
		// Operator adds as target labels; the harness's static scrape adds neither, and label="" selects
		// series without the label.
		generated := strings.NewReplacer(`namespace="$namespace"`, `namespace=""`, `pod="$pod"`, `pod=""`, "$job", managerJob)
		for _, d := range []struct {
			file string
			vars *strings.Replacer
		}{
			{"config/grafana/kubervisor.json", vars},
			{"config/grafana/controller-runtime/controller-runtime-metrics.json", generated},
			{"config/grafana/controller-runtime/controller-resources-metrics.json", generated},
		} {
			queries := dashboardQueries(d.file)
			Expect(queries).NotTo(BeEmpty(), d.file)
			for _, q := range queries {
				expr := d.vars.Replace(q.expr)
				Expect(expr).NotTo(ContainSubstring("$"), "%s %q: a template variable left", d.file, q.panel)
				Eventually(func() []model.LabelSet { return seriesOf(api, expr) }).WithTimeout(90*time.Second).
					ShouldNot(BeEmpty(), "%s panel %q: %s", d.file, q.panel, expr)
				report = append(report, fmt.Sprintf("%s %q: %d series", filepath.Base(d.file), q.panel, len(seriesOf(api, expr))))
			}
		}
		AddReportEntry("queries", strings.Join(report, "\n"))
		GinkgoWriter.Println(strings.Join(report, "\n"))
	})
})

// managerMetricsAddr is the manager's --metrics-bind-address, read from its command line: the suite picks
// a free port in managerArgs and keeps it nowhere else.
func managerMetricsAddr() string {
	m := cl.Manager()
	Expect(m).NotTo(BeNil())
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", m.Pid()))
	Expect(err).NotTo(HaveOccurred())
	args := strings.Split(string(raw), "\x00")
	Expect(args).To(ContainElement("--metrics-secure=false"), "the queries need metrics over plain HTTP")
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--metrics-bind-address="); ok {
			return v
		}
	}
	Fail("the manager has no --metrics-bind-address")
	return ""
}

type alertRule struct {
	Alert string `json:"alert"`
	Expr  string `json:"expr"`
	For   string `json:"for"`
}

// alertRules reads the plain rule file, by alert name.
func alertRules() map[string]alertRule {
	raw, err := os.ReadFile(filepath.Join(root, "config", "prometheus", "kubervisor-rules.yaml"))
	Expect(err).NotTo(HaveOccurred())
	var f struct {
		Groups []struct {
			Rules []alertRule `json:"rules"`
		} `json:"groups"`
	}
	Expect(yaml.Unmarshal(raw, &f)).To(Succeed())
	out := map[string]alertRule{}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				out[r.Alert] = r
			}
		}
	}
	return out
}

type dashboardQuery struct{ panel, expr string }

// dashboardQueries returns every panel target's expr (rows' nested panels included) and, for each query
// variable, the series selector of its label_values(selector, label).
func dashboardQueries(file string) []dashboardQuery {
	raw, err := os.ReadFile(filepath.Join(root, file))
	Expect(err).NotTo(HaveOccurred())
	type panel struct {
		Title   string                  `json:"title"`
		Targets []struct{ Expr string } `json:"targets"`
		Panels  []json.RawMessage       `json:"panels"`
	}
	var d struct {
		Panels     []json.RawMessage `json:"panels"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	Expect(json.Unmarshal(raw, &d)).To(Succeed(), file)
	var out []dashboardQuery
	var walk func([]json.RawMessage)
	walk = func(ps []json.RawMessage) {
		for _, r := range ps {
			var p panel
			Expect(json.Unmarshal(r, &p)).To(Succeed(), file)
			for _, t := range p.Targets {
				if t.Expr != "" {
					out = append(out, dashboardQuery{p.Title, t.Expr})
				}
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	labelValues := regexp.MustCompile(`^label_values\((.+),\s*\w+\)$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct{ Query string }
		if json.Unmarshal(v.Query, &q) != nil {
			Expect(json.Unmarshal(v.Query, &q.Query)).To(Succeed(), "%s variable %s", file, v.Name)
		}
		m := labelValues.FindStringSubmatch(q.Query)
		Expect(m).NotTo(BeNil(), "%s variable %s: %q is not label_values(selector, label)", file, v.Name, q.Query)
		out = append(out, dashboardQuery{"variable " + v.Name, strings.ReplaceAll(m[1], `=~"$namespace"`, `=~".*"`)})
	}
	return out
}

// selectorPattern finds the vector selectors of Kubervisor's rules: a metric name of Kubervisor, or up,
// with its matchers. (Prometheus 2.42, Debian's, has no parse_query API to do this for us.)
var selectorPattern = regexp.MustCompile(`\b(kubervisor_[a-z_]+|up)(\{[^}]*\})?`)

func selectors(expr string) []string {
	return selectorPattern.FindAllString(expr, -1)
}

// shortRuleFile writes a copy of the plain rule file whose `for` durations are in seconds instead of
// minutes, and returns its path.
func shortRuleFile() string {
	raw, err := os.ReadFile(filepath.Join(root, "config", "prometheus", "kubervisor-rules.yaml"))
	Expect(err).NotTo(HaveOccurred())
	forMinutes := regexp.MustCompile(`(?m)^(\s+for: )(\d+)m$`)
	Expect(forMinutes.FindAll(raw, -1)).NotTo(BeEmpty(), "the rule file has `for: <n>m` durations")
	short := forMinutes.ReplaceAll(raw, []byte("${1}${2}s"))
	path := filepath.Join(GinkgoT().TempDir(), "kubervisor-rules.yaml")
	Expect(os.WriteFile(path, short, 0o644)).To(Succeed())
	return path
}

// firing returns the labels of the alerts Prometheus's rule engine has firing (pending ones are not).
func firing(api promv1.API) []model.LabelSet {
	res, err := api.Alerts(ctx)
	if err != nil {
		GinkgoWriter.Printf("alerts: %v\n", err)
		return nil
	}
	var out []model.LabelSet
	for _, a := range res.Alerts {
		if a.State == promv1.AlertStateFiring {
			out = append(out, a.Labels)
		}
	}
	return out
}

// seriesOf runs an instant query and returns the label sets of its answer (nil on error).
func seriesOf(api promv1.API, expr string) []model.LabelSet {
	v, _, err := api.Query(ctx, expr, time.Now())
	if err != nil {
		GinkgoWriter.Printf("query %s: %v\n", expr, err)
		return nil
	}
	var out []model.LabelSet
	if vec, ok := v.(model.Vector); ok {
		for _, s := range vec {
			out = append(out, model.LabelSet(s.Metric))
		}
	}
	return out
}

func sortedKeys(m map[string]alertRule) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
