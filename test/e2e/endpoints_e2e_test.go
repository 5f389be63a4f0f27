//go:build e2e

package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"maps"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	authnv1 "k8s.io/api/authentication/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/test/cluster"
	"github.com/kubervisor/kubervisor/test/fleet"
)

// basicAuthPassword and its bcrypt hash (cost 10) for the web configuration of a Prometheus behind basic
// auth. NOTE: a fixed pair, so that the test needs no bcrypt implementation (golang.org/x/crypto is not a
// requirement of this module); the specs check that this value never leaks.
const (
	basicAuthUser     = "kubervisor"
	basicAuthPassword = "e2e-Vh7qLx2mTz9RkPw4"
	basicAuthHash     = "$2a$10$0gt7wOpTcl9OAWRu9MxEoeSwuudaYnu5lC9u0M.66F4.5PSrByR5e"
)

var _ = Describe("Detector endpoints on a real cluster", func() {
	It("ejects through a Prometheus behind HTTPS and basic auth, refuses a wrong password, and recovers when the file is fixed", func() {
		managerPID := cl.Manager().Pid()
		s := newScenario(4)
		deleteNamespaceLater(s)
		ca := newTestCA()
		dir := GinkgoT().TempDir()
		serverCrt, serverKey := ca.issue(dir, "server", false)
		secure := startWebPrometheus(s, dir, fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\nbasic_auth_users:\n  %s: %s\n",
			serverCrt, serverKey, basicAuthUser, basicAuthHash),
			&http.Client{Timeout: 5 * time.Second, Transport: basicAuth{next: ca.transport(nil)}})

		writeEndpointFiles(map[string]string{"ca.crt": string(ca.pem), "password": basicAuthPassword})
		writeEndpoints(fmt.Sprintf(`endpoints:
- name: secure
  url: https://%s
  tls: {caFile: ca.crt}
  basicAuth: {username: %s, passwordFile: password}
`, secure.Addr(), basicAuthUser))

		b := s.discrete()
		b.DiscreteValueOutOfList.PrometheusService, b.DiscreteValueOutOfList.Endpoint = "", "secure"
		s.createKVS(b, tolerateTwo)
		pods := s.pods()

		By("a pod returning 5xx leaves the EndpointSlice, judged through the secure endpoint")
		Expect(s.fleet.SetErrorRate(pods[0], 0.6)).To(Succeed())
		s.timeToLeave(pods[0], time.Now())

		By("a wrong password: DetectorError with the endpoint's message, and a new fault ejects nothing")
		writeEndpointFiles(map[string]string{"password": "e2e-wrong-Qd8sLm3n"})
		const unauthorized = "endpoint secure: 401 Unauthorized: check the basic auth username and password files"
		expectRefused(s, secure, pods[1], without(pods, pods[0]), unauthorized)

		By("the password file fixed while the manager runs: the next evaluation ejects the faulty pod")
		writeEndpointFiles(map[string]string{"password": basicAuthPassword})
		s.timeToLeave(pods[1], time.Now())
		Eventually(s.condition(kvv1.ConditionReady)).Should(HaveField("Status", metav1.ConditionTrue))
		Expect(cl.Manager().Pid()).To(Equal(managerPID), "no restart of the manager")
		Expect(cl.Manager().Running()).To(BeTrue())

		expectNoSecret(s, basicAuthPassword, "e2e-wrong-Qd8sLm3n")
	})

	It("ejects through a Prometheus that requires a client certificate, and without one reports the TLS refusal and ejects nothing", func() {
		s := newScenario(4)
		deleteNamespaceLater(s)
		ca := newTestCA()
		dir := GinkgoT().TempDir()
		serverCrt, serverKey := ca.issue(dir, "server", false)
		clientCrt, clientKey := ca.issue(dir, "client", true)
		caFile := filepath.Join(dir, "ca.crt")
		Expect(os.WriteFile(caFile, ca.pem, 0o600)).To(Succeed())
		pair, err := tls.LoadX509KeyPair(clientCrt, clientKey)
		Expect(err).NotTo(HaveOccurred())
		secure := startWebPrometheus(s, dir, fmt.Sprintf(
			"tls_server_config:\n  cert_file: %s\n  key_file: %s\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: %s\n",
			serverCrt, serverKey, caFile), &http.Client{Timeout: 5 * time.Second, Transport: ca.transport(&pair)})

		key, err := os.ReadFile(clientKey)
		Expect(err).NotTo(HaveOccurred())
		crt, err := os.ReadFile(clientCrt)
		Expect(err).NotTo(HaveOccurred())
		writeEndpointFiles(map[string]string{"ca.crt": string(ca.pem), "tls.crt": string(crt), "tls.key": string(key)})
		endpoint := fmt.Sprintf("endpoints:\n- name: mtls\n  url: https://%s\n  tls: {caFile: ca.crt%%s}\n", secure.Addr())
		writeEndpoints(fmt.Sprintf(endpoint, ", certFile: tls.crt, keyFile: tls.key"))

		b := s.discrete()
		b.DiscreteValueOutOfList.PrometheusService, b.DiscreteValueOutOfList.Endpoint = "", "mtls"
		s.createKVS(b, tolerateTwo)
		pods := s.pods()

		By("a pod returning 5xx leaves the EndpointSlice, judged through mutual TLS")
		Expect(s.fleet.SetErrorRate(pods[0], 0.6)).To(Succeed())
		s.timeToLeave(pods[0], time.Now())

		By("the endpoint without certFile and keyFile: the TLS refusal is DetectorError and a new fault ejects nothing")
		writeEndpoints(fmt.Sprintf(endpoint, ""))
		// One message, however the refusal reaches the manager (an alert, or the connection the server
		// closed: TLS 1.3 ends the client's handshake before the server checks its certificate).
		const refused = "endpoint mtls: TLS: the server asked for a client certificate and refused the connection without one: " +
			"set tls.certFile and tls.keyFile"
		expectRefused(s, secure, pods[1], without(pods, pods[0]), refused)

		// The key's base64 body, whichever line of it a leak would show.
		body := strings.Join(strings.Split(strings.TrimSpace(string(key)), "\n")[1:2], "")
		expectNoSecret(s, body)
	})

	It("ejects through a verifier that accepts the manager's ServiceAccount token after a TokenReview, and a token of another audience is refused", func() {
		s := newScenario(4)
		deleteNamespaceLater(s)
		verifier := newTokenVerifier(prom.URL())
		good := serviceAccountToken(tokenAudience)
		writeEndpointFiles(map[string]string{"token": good})
		writeEndpoints(fmt.Sprintf("endpoints:\n- name: sa-token\n  url: %s\n  bearerTokenFile: token\n", verifier.URL))

		b := s.discrete()
		b.DiscreteValueOutOfList.PrometheusService, b.DiscreteValueOutOfList.Endpoint = "", "sa-token"
		s.createKVS(b, tolerateTwo)
		pods := s.pods()

		By("a pod returning 5xx leaves the EndpointSlice, judged through the token the verifier accepted")
		Expect(s.fleet.SetErrorRate(pods[0], 0.6)).To(Succeed())
		s.timeToLeave(pods[0], time.Now())
		Expect(verifier.accepted.Load()).To(BeNumerically(">", 0))

		By("a token of another audience in the file: refused by the TokenReview, and a new fault ejects nothing")
		other := serviceAccountToken("another-audience")
		writeEndpointFiles(map[string]string{"token": other})
		const unauthorized = "endpoint sa-token: 401 Unauthorized: check the bearer token file"
		expectRefused(s, prom, pods[1], without(pods, pods[0]), unauthorized)
		Expect(verifier.refused.Load()).To(BeNumerically(">", 0))

		expectNoSecret(s, good, other)
	})

	It("gives each namespace its own tenant through prom-label-proxy and a header templated with the namespace", func() {
		a, b := newScenario(4), newScenario(4)
		deleteNamespaceLater(a)
		deleteNamespaceLater(b)
		// newScenario makes Prometheus scrape its own fleet only: both, for this spec.
		Expect(prom.SetJobs(ctx, []cluster.ScrapeJob{{Name: a.ns, Targets: []string{a.fleet.Addr()}},
			{Name: b.ns, Targets: []string{b.fleet.Addr()}}})).To(Succeed())
		proxy := startLabelProxy(prom.URL())
		writeEndpoints(fmt.Sprintf("endpoints:\n- name: tenants\n  url: %s\n  headers:\n    %s: \"{{ .Namespace }}\"\n", proxy, tenantHeader))

		// No namespace matcher: what keeps a breaker to its namespace is the tenant header, not its query.
		const everyNamespace = `sum by (namespace, pod, code) (increase(demo_http_requests_total[20s]))`
		By("Prometheus holds both namespaces' series; through the proxy, a namespace's header reads its own only")
		Eventually(seriesNamespaces(prom.API(), everyNamespace)).Should(ConsistOf(a.ns, b.ns))
		for _, s := range []*scenario{a, b} {
			Expect(seriesNamespaces(tenantAPI(proxy, s.ns), everyNamespace)()).To(ConsistOf(s.ns))
		}

		for _, s := range []*scenario{a, b} {
			br := s.discrete()
			br.DiscreteValueOutOfList.PrometheusService, br.DiscreteValueOutOfList.Endpoint = "", "tenants"
			br.DiscreteValueOutOfList.PromQL = everyNamespace
			s.createKVS(br, tolerateTwo)
		}

		By("a faulty pod in each namespace: each leaves its EndpointSlice, ejected by its own KubervisorService")
		podsA, podsB := a.pods(), b.pods()
		Expect(a.fleet.SetErrorRate(podsA[0], 0.6)).To(Succeed())
		Expect(b.fleet.SetErrorRate(podsB[1], 0.6)).To(Succeed())
		start := time.Now()
		a.timeToLeave(podsA[0], start)
		b.timeToLeave(podsB[1], start)
		Expect(a.pod(podsA[0]).Labels).To(HaveKeyWithValue(kvv1.LabelName, a.name))
		Expect(b.pod(podsB[1]).Labels).To(HaveKeyWithValue(kvv1.LabelName, b.name))

		By("neither breaker receives a series of the other namespace")
		Consistently(func(g Gomega) {
			for _, s := range []*scenario{a, b} {
				st := s.breaker()()
				g.Expect(st.IgnoredSamples).To(BeZero(), "samples of another namespace reached %s", s.ns)
				g.Expect(st.LastResult).To(Equal(kvv1.ResultOK))
			}
			g.Expect(a.endpoints()).To(Equal(without(podsA, podsA[0])))
			g.Expect(b.endpoints()).To(Equal(without(podsB, podsB[1])))
		}).Should(Succeed())
	})
})

// tenantHeader is the header prom-label-proxy reads the tenant (a namespace) from.
const tenantHeader = "X-Scope-OrgID"

// startLabelProxy runs prom-label-proxy (bin/, installed by make test-e2e) in front of upstream, enforcing
// namespace="<the tenant header>" on every query, and returns its URL.
func startLabelProxy(upstream string) string {
	bin := filepath.Join(root, "bin", "prom-label-proxy")
	Expect(bin).To(BeAnExistingFile(), "make test-e2e installs bin/prom-label-proxy (make prom-label-proxy)")
	addr, err := cluster.FreeAddr()
	Expect(err).NotTo(HaveOccurred())
	proc, err := cluster.StartProcess("prom-label-proxy", bin, []string{
		"-header-name", tenantHeader, "-label", fleet.NamespaceLabel, "-upstream", upstream, "-insecure-listen-address", addr,
	}, filepath.Join(GinkgoT().TempDir(), "prom-label-proxy.log"), nil)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(proc.Stop, 10*time.Second)
	u := "http://" + addr
	Eventually(func() error {
		_, _, err := tenantAPI(u, "default").Query(ctx, "vector(1)", time.Now())
		return err
	}).Should(Succeed(), "prom-label-proxy answers")
	return u
}

// tenantAPI is a client of the Prometheus API behind prom-label-proxy at u, as tenant.
func tenantAPI(u, tenant string) promv1.API {
	c, err := promapi.NewClient(promapi.Config{Address: u, RoundTripper: tenantHeaderRT{tenant: tenant, next: http.DefaultTransport}})
	Expect(err).NotTo(HaveOccurred())
	return promv1.NewAPI(c)
}

type tenantHeaderRT struct {
	tenant string
	next   http.RoundTripper
}

func (t tenantHeaderRT) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(tenantHeader, t.tenant)
	return t.next.RoundTrip(r)
}

// seriesNamespaces returns the namespaces of the series a query answers, sorted.
func seriesNamespaces(api promv1.API, query string) func() []string {
	return func() []string {
		v, _, err := api.Query(ctx, query, time.Now())
		Expect(err).NotTo(HaveOccurred())
		vec, _ := v.(model.Vector)
		seen := map[string]bool{}
		for _, smp := range vec {
			seen[string(smp.Metric[fleet.NamespaceLabel])] = true
		}
		return slices.Sorted(maps.Keys(seen))
	}
}

// tokenAudience is the audience the verifier of newTokenVerifier requires.
const tokenAudience = "kubervisor-e2e"

// tokenVerifier is an authenticating reverse proxy in front of a Prometheus: it forwards a request only
// when its bearer token passes a TokenReview at the test cluster's API server, for tokenAudience, as the
// manager's ServiceAccount. NOTE: this verifier is the test's own, written here for the test (no
// maintained authenticating proxy, such as kube-rbac-proxy, is built or run by this suite); it checks
// what such a proxy would check, with the API server's real token authentication.
type tokenVerifier struct {
	*httptest.Server
	accepted, refused atomic.Int32
}

func newTokenVerifier(upstream string) *tokenVerifier {
	target, err := url.Parse(upstream)
	Expect(err).NotTo(HaveOccurred())
	proxy := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(target)
		r.Out.Header.Del("Authorization")
	}}
	v := &tokenVerifier{}
	want := cluster.ManagerUser().Name
	v.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if ok && token != "" {
			review, err := cl.Clientset().AuthenticationV1().TokenReviews().Create(r.Context(), &authnv1.TokenReview{
				Spec: authnv1.TokenReviewSpec{Token: token, Audiences: []string{tokenAudience}},
			}, metav1.CreateOptions{})
			if err != nil {
				http.Error(w, "token review failed", http.StatusBadGateway)
				return
			}
			if review.Status.Authenticated && review.Status.User.Username == want {
				v.accepted.Add(1)
				proxy.ServeHTTP(w, r)
				return
			}
		}
		v.refused.Add(1)
		http.Error(w, "unauthorized", http.StatusUnauthorized)
	}))
	DeferCleanup(v.Close)
	return v
}

// serviceAccountToken asks the API server for a token of the manager's ServiceAccount (created by the
// suite from config/rbac) with an audience, as the kubelet projects one.
func serviceAccountToken(audience string) string {
	tr, err := cl.Clientset().CoreV1().ServiceAccounts(cluster.ManagerNamespace).CreateToken(ctx, cluster.ManagerServiceAccount,
		&authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: new(int64(600))}},
		metav1.CreateOptions{})
	Expect(err).NotTo(HaveOccurred())
	Expect(tr.Status.Token).NotTo(BeEmpty())
	return tr.Status.Token
}

// tolerateTwo lets the floor and the storm guard allow two ejections out of four pods.
func tolerateTwo(k *kvv1.KubervisorService) {
	k.Spec.Breakers[0].MinPodsAvailableRatio = new(int32(50))
	k.Spec.Breakers[0].MaxAnomalousPercent = new(int32(100))
}

// expectRefused waits for the endpoint's refusal (Ready=False, DetectorError, the message), then makes pod
// faulty, waits until Prometheus itself shows the fault (so the breaker would eject it if it could read
// it), and checks that nothing leaves the EndpointSlice while the breaker keeps reporting the same message.
func expectRefused(s *scenario, p *cluster.Prometheus, pod string, serving []string, message string) {
	refused := And(HaveField("Status", metav1.ConditionFalse), HaveField("Reason", kvv1.ReasonDetectorError),
		HaveField("Message", ContainSubstring(message)))
	Eventually(s.condition(kvv1.ConditionReady)).Should(refused)
	GinkgoWriter.Printf("Ready condition: %s\n", s.condition(kvv1.ConditionReady)().Message)
	Expect(s.fleet.SetErrorRate(pod, 0.6)).To(Succeed())
	Eventually(badRatio(p, s.ns, pod)).Should(BeNumerically(">", 0.3), "Prometheus sees the fault")
	Consistently(func(g Gomega) {
		g.Expect(s.endpoints()).To(Equal(serving), "a refused endpoint ejects nothing")
		g.Expect(s.condition(kvv1.ConditionReady)()).To(refused)
		g.Expect(s.breaker()().LastResult).To(ContainSubstring(message))
	}).Should(Succeed())
}

// badRatio is the share of non-200 answers of pod over the breaker's window, as Prometheus p computes it.
func badRatio(p *cluster.Prometheus, ns, pod string) func() float64 {
	return func() float64 {
		v, _, err := p.API().Query(ctx, fleet.DiscreteQuery(ns), time.Now())
		if err != nil {
			return 0
		}
		vec, _ := v.(model.Vector)
		var bad, all float64
		for _, smp := range vec {
			if string(smp.Metric[fleet.PodLabel]) != pod {
				continue
			}
			all += float64(smp.Value)
			if string(smp.Metric[fleet.CodeLabel]) != "200" {
				bad += float64(smp.Value)
			}
		}
		if all < 5 {
			return 0
		}
		return bad / all
	}
}

// expectNoSecret checks that no secret appears in the KubervisorService (spec and status), the events of
// its namespace, or the manager's log.
func expectNoSecret(s *scenario, secrets ...string) {
	kvs, err := json.Marshal(s.kvs())
	Expect(err).NotTo(HaveOccurred())
	var list eventsv1.EventList
	Expect(k8s.List(ctx, &list, client.InNamespace(s.ns))).To(Succeed())
	events, err := json.Marshal(list)
	Expect(err).NotTo(HaveOccurred())
	log := cl.ManagerLog()
	for _, secret := range secrets {
		Expect(string(kvs)).NotTo(ContainSubstring(secret), "the KubervisorService holds a credential")
		Expect(string(events)).NotTo(ContainSubstring(secret), "an event holds a credential")
		Expect(log).NotTo(ContainSubstring(secret), "the manager's log holds a credential")
	}
}

// startWebPrometheus starts a second Prometheus, scraping the scenario's fleet, with a web configuration
// (TLS, basic auth); c is how the harness reaches it.
func startWebPrometheus(s *scenario, dir, web string, c *http.Client) *cluster.Prometheus {
	p, err := cluster.StartPrometheus(ctx, cluster.PrometheusOptions{
		Log:       GinkgoWriter,
		Dir:       filepath.Join(dir, "prometheus"),
		Jobs:      []cluster.ScrapeJob{{Name: s.ns, Targets: []string{s.fleet.Addr()}}},
		WebConfig: web,
		Scheme:    "https",
		Client:    c,
	})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(p.Stop)
	return p
}

// writeEndpoints writes the manager's endpoints file (atomically: the manager polls it) and removes it
// when the spec ends.
func writeEndpoints(content string) {
	writeAtomically(endpointsFile, content)
	DeferCleanup(func() { _ = os.Remove(endpointsFile) })
}

// writeEndpointFiles writes files beside the endpoints file (CA, certificates, password, token), where its
// relative paths resolve; they are removed when the spec ends.
func writeEndpointFiles(files map[string]string) {
	for name, content := range files {
		path := filepath.Join(filepath.Dir(endpointsFile), name)
		writeAtomically(path, content)
		DeferCleanup(func() { _ = os.Remove(path) })
	}
}

func writeAtomically(path, content string) {
	tmp := path + ".tmp"
	Expect(os.WriteFile(tmp, []byte(content), 0o600)).To(Succeed())
	Expect(os.Rename(tmp, path)).To(Succeed())
}

// basicAuth adds the fixed basic-auth credentials to the harness's requests.
type basicAuth struct{ next http.RoundTripper }

func (b basicAuth) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.SetBasicAuth(basicAuthUser, basicAuthPassword)
	return b.next.RoundTrip(r)
}

// testCA is a certificate authority made for one spec.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA() *testCA {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	Expect(err).NotTo(HaveOccurred())
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "kubervisor-e2e CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	Expect(err).NotTo(HaveOccurred())
	cert, err := x509.ParseCertificate(der)
	Expect(err).NotTo(HaveOccurred())
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue writes a certificate signed by the CA and its key to dir/name.crt and dir/name.key, for a server
// (127.0.0.1, localhost) or a client, and returns their paths.
func (ca *testCA) issue(dir, name string, forClient bool) (crtPath, keyPath string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	Expect(err).NotTo(HaveOccurred())
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	Expect(err).NotTo(HaveOccurred())
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost"},
	}
	if forClient {
		tmpl.ExtKeyUsage, tmpl.IPAddresses, tmpl.DNSNames = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil, nil
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	Expect(err).NotTo(HaveOccurred())
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	Expect(err).NotTo(HaveOccurred())
	crtPath, keyPath = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	Expect(os.WriteFile(crtPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)).To(Succeed())
	Expect(os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)).To(Succeed())
	return crtPath, keyPath
}

// transport trusts the CA and presents the client certificate, if any.
func (ca *testCA) transport(clientCert *tls.Certificate) *http.Transport {
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if clientCert != nil {
		cfg.Certificates = []tls.Certificate{*clientCert}
	}
	return &http.Transport{TLSClientConfig: cfg}
}
