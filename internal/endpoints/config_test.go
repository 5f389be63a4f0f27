package endpoints

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const everyField = `
default: thanos
endpoints:
- name: thanos
  url: https://thanos-querier.openshift-monitoring.svc:9091/prefix
  timeout: 10s
  tls:
    caFile: /etc/kubervisor/endpoints/ca.crt
    certFile: tls.crt
    keyFile: keys/tls.key
    serverName: thanos.example
    insecureSkipVerify: true
  bearerTokenFile: /var/run/secrets/kubervisor/token
  headers:
    X-Scope-OrgID: "tenant-{{ .Namespace }}"
    X-Static: fixed
- name: mimir
  url: http://mimir.monitoring.svc:8080
  basicAuth:
    username: kubervisor
    passwordFile: password
- name: cortex
  url: https://cortex.example
  basicAuth:
    usernameFile: ../shared/username
    passwordFile: /abs/password
`

// The same file in JSON.
const everyFieldJSON = `{
  "default": "thanos",
  "endpoints": [
    {"name": "thanos", "url": "https://thanos-querier.openshift-monitoring.svc:9091/prefix", "timeout": "10s",
     "tls": {"caFile": "/etc/kubervisor/endpoints/ca.crt", "certFile": "tls.crt", "keyFile": "keys/tls.key",
             "serverName": "thanos.example", "insecureSkipVerify": true},
     "bearerTokenFile": "/var/run/secrets/kubervisor/token",
     "headers": {"X-Scope-OrgID": "tenant-{{ .Namespace }}", "X-Static": "fixed"}},
    {"name": "mimir", "url": "http://mimir.monitoring.svc:8080", "basicAuth": {"username": "kubervisor", "passwordFile": "password"}},
    {"name": "cortex", "url": "https://cortex.example", "basicAuth": {"usernameFile": "../shared/username", "passwordFile": "/abs/password"}}
  ]
}`

func TestParseAcceptsEveryField(t *testing.T) {
	want := map[string]Endpoint{
		"thanos": {
			Name:    "thanos",
			URL:     "https://thanos-querier.openshift-monitoring.svc:9091/prefix",
			Timeout: "10s",
			TLS: &TLS{
				CAFile:             "/etc/kubervisor/endpoints/ca.crt",
				CertFile:           "/etc/kubervisor/endpoints/tls.crt",
				KeyFile:            "/etc/kubervisor/endpoints/keys/tls.key",
				ServerName:         "thanos.example",
				InsecureSkipVerify: true,
			},
			BearerTokenFile: "/var/run/secrets/kubervisor/token",
			Headers:         map[string]string{"X-Scope-OrgID": "tenant-{{ .Namespace }}", "X-Static": "fixed"},
		},
		"mimir": {
			Name:      "mimir",
			URL:       "http://mimir.monitoring.svc:8080",
			BasicAuth: &BasicAuth{Username: "kubervisor", PasswordFile: "/etc/kubervisor/endpoints/password"},
		},
		"cortex": {
			Name:      "cortex",
			URL:       "https://cortex.example",
			BasicAuth: &BasicAuth{UsernameFile: "/etc/kubervisor/shared/username", PasswordFile: "/abs/password"},
		},
	}
	for format, file := range map[string]string{"yaml": everyField, "json": everyFieldJSON} {
		t.Run(format, func(t *testing.T) {
			cfg, err := Parse([]byte(file), "/etc/kubervisor/endpoints")
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if cfg.Default != "thanos" {
				t.Errorf("Default = %q, want thanos", cfg.Default)
			}
			if diff := cmp.Diff([]string{"cortex", "mimir", "thanos"}, cfg.Names()); diff != "" {
				t.Errorf("Names (-want +got):\n%s", diff)
			}
			got := map[string]Endpoint{}
			for name, p := range cfg.Endpoints {
				got[name] = p.Spec
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("endpoints (-want +got):\n%s", diff)
			}

			thanos := cfg.Endpoints["thanos"]
			if thanos.URL.String() != "https://thanos-querier.openshift-monitoring.svc:9091/prefix" || thanos.Timeout != 10*time.Second {
				t.Errorf("thanos URL %s, timeout %s", thanos.URL, thanos.Timeout)
			}
			rendered := map[string]string{}
			for name, tmpl := range thanos.headers {
				v, err := render(tmpl, "shop")
				if err != nil {
					t.Fatal(err)
				}
				rendered[name] = v
			}
			if diff := cmp.Diff(map[string]string{"X-Scope-Orgid": "tenant-shop", "X-Static": "fixed"}, rendered); diff != "" {
				t.Errorf("headers for namespace shop (-want +got):\n%s", diff)
			}
			wantWarnings := map[string][]string{
				"thanos": {"endpoint thanos: tls.insecureSkipVerify is set: the server's certificate is not verified"},
				"mimir":  {"endpoint mimir: credentials are sent unencrypted: the url's scheme is http"},
			}
			for name, p := range cfg.Endpoints {
				if diff := cmp.Diff(wantWarnings[name], p.Warnings); diff != "" {
					t.Errorf("%s warnings (-want +got):\n%s", name, diff)
				}
			}
		})
	}
}

func TestParseEmptyFile(t *testing.T) {
	for name, file := range map[string]string{"empty": "", "no endpoints": "endpoints: []\n"} {
		cfg, err := Parse([]byte(file), "/d")
		if err != nil || len(cfg.Endpoints) != 0 || cfg.Default != "" {
			t.Errorf("%s: got %+v, %v; want an empty configuration", name, cfg, err)
		}
	}
}

func TestParseErrors(t *testing.T) {
	const ok = "  url: https://h.example\n"
	cases := map[string]struct {
		file string
		want string
	}{
		"unknown top-level field": {
			file: "defaults: a\nendpoints:\n- name: a\n" + ok,
			want: `defaults: unknown field`,
		},
		"unknown endpoint field": {
			file: "endpoints:\n- name: a\n" + ok + "  tmeout: 1s\n",
			want: `endpoint "a": tmeout: unknown field`,
		},
		"unknown tls field": {
			file: "endpoints:\n- name: a\n" + ok + "  tls:\n    caFil: ca.crt\n",
			want: `endpoint "a": tls.caFil: unknown field`,
		},
		"inline password is an unknown field": {
			file: "endpoints:\n- url: https://h.example\n  basicAuth:\n    username: u\n    password: hunter2\n",
			want: `endpoints[0]: basicAuth.password: unknown field`,
		},
		"inline bearer token is an unknown field": {
			file: "endpoints:\n- name: a\n" + ok + "  bearerToken: abc\n",
			want: `endpoint "a": bearerToken: unknown field`,
		},
		"not YAML": {
			file: "endpoints: [\n",
			want: `yaml: line 1: did not find expected node content`,
		},
		"duplicate key": {
			file: "endpoints:\n- name: a\n  name: b\n" + ok,
			want: "yaml: unmarshal errors:\n  line 3: key \"name\" already set in map",
		},
		"wrong type": {
			file: "endpoints:\n  name: a\n",
			want: `cannot unmarshal object into Go struct field File.endpoints of type []endpoints.Endpoint`,
		},
		"missing name": {
			file: "endpoints:\n- name: a\n" + ok + "- url: https://h.example\n",
			want: `endpoints[1]: name: required`,
		},
		"duplicate name": {
			file: "endpoints:\n- name: a\n" + ok + "- name: b\n" + ok + "- name: a\n" + ok,
			want: `endpoint "a": name: defined more than once (endpoints[0] and endpoints[2])`,
		},
		"bad name": {
			file: "endpoints:\n- name: Thanos_1\n" + ok,
			want: `endpoint "Thanos_1": name: "Thanos_1" is not a DNS-1123 label: a lowercase RFC 1123 label must consist of lower case ` +
				`alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', ` +
				`regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')`,
		},
		"missing url": {
			file: "endpoints:\n- name: a\n",
			want: `endpoint "a": url: required`,
		},
		"bad url": {
			file: "endpoints:\n- name: a\n  url: https://exa mple.com\n",
			want: `endpoint "a": url: not a valid URL`,
		},
		"bad scheme": {
			file: "endpoints:\n- name: a\n  url: ftp://h.example\n",
			want: `endpoint "a": url: the scheme must be http or https, not "ftp"`,
		},
		"host and port without a scheme": {
			file: "endpoints:\n- name: a\n  url: prometheus:9090\n",
			want: `endpoint "a": url: the scheme must be http or https, not "prometheus"`,
		},
		"no host": {
			file: "endpoints:\n- name: a\n  url: https:///api\n",
			want: `endpoint "a": url: has no host`,
		},
		"userinfo": {
			file: "endpoints:\n- name: a\n  url: https://admin:hunter2@h.example\n",
			want: `endpoint "a": url: must not hold a user or password: use basicAuth or bearerTokenFile, with files`,
		},
		"query": {
			file: "endpoints:\n- name: a\n  url: https://h.example/api?tenant=x\n",
			want: `endpoint "a": url: must not have a query or a fragment: the detector writes the query`,
		},
		"fragment": {
			file: "endpoints:\n- name: a\n  url: https://h.example/#top\n",
			want: `endpoint "a": url: must not have a query or a fragment: the detector writes the query`,
		},
		"timeout not a duration": {
			file: "endpoints:\n- name: a\n" + ok + "  timeout: soon\n",
			want: `endpoint "a": timeout: "soon" is not a duration such as 10s or 1m30s`,
		},
		"timeout without a unit": {
			file: "endpoints:\n- name: a\n" + ok + "  timeout: 10\n",
			want: `endpoint "a": timeout: "10" is not a duration such as 10s or 1m30s`,
		},
		"negative timeout": {
			file: "endpoints:\n- name: a\n" + ok + "  timeout: -1s\n",
			want: `endpoint "a": timeout: -1s must be positive`,
		},
		"zero timeout": {
			file: "endpoints:\n- name: a\n" + ok + "  timeout: 0s\n",
			want: `endpoint "a": timeout: 0s must be positive`,
		},
		"timeout too long": {
			file: "endpoints:\n- name: a\n" + ok + "  timeout: 6m\n",
			want: `endpoint "a": timeout: 6m is longer than the maximum 5m0s`,
		},
		"certFile without keyFile": {
			file: "endpoints:\n- name: a\n" + ok + "  tls:\n    certFile: tls.crt\n",
			want: `endpoint "a": tls.keyFile: required with tls.certFile`,
		},
		"keyFile without certFile": {
			file: "endpoints:\n- name: a\n" + ok + "  tls:\n    keyFile: tls.key\n",
			want: `endpoint "a": tls.certFile: required with tls.keyFile`,
		},
		"tls on http": {
			file: "endpoints:\n- name: a\n  url: http://h.example\n  tls:\n    caFile: ca.crt\n",
			want: `endpoint "a": tls: set, but the url's scheme is http: use https`,
		},
		"basicAuth with bearerTokenFile": {
			file: "endpoints:\n- name: a\n" + ok + "  bearerTokenFile: token\n  basicAuth:\n    username: u\n    passwordFile: p\n",
			want: `endpoint "a": basicAuth: not together with bearerTokenFile: choose one`,
		},
		"basicAuth without password": {
			file: "endpoints:\n- name: a\n" + ok + "  basicAuth:\n    username: u\n",
			want: `endpoint "a": basicAuth.passwordFile: required (a password is always read from a file)`,
		},
		"basicAuth without username": {
			file: "endpoints:\n- name: a\n" + ok + "  basicAuth:\n    passwordFile: p\n",
			want: `endpoint "a": basicAuth: username or usernameFile is required`,
		},
		"basicAuth with both usernames": {
			file: "endpoints:\n- name: a\n" + ok + "  basicAuth:\n    username: u\n    usernameFile: u\n    passwordFile: p\n",
			want: `endpoint "a": basicAuth: username and usernameFile are exclusive`,
		},
		"Authorization header": {
			file: "endpoints:\n- name: a\n" + ok + "  headers:\n    authorization: Bearer abc\n",
			want: `endpoint "a": headers[authorization]: refused: use bearerTokenFile or basicAuth (credentials are files, never inline)`,
		},
		"Host header": {
			file: "endpoints:\n- name: a\n" + ok + "  headers:\n    Host: other.example\n",
			want: `endpoint "a": headers[Host]: refused: set the url's host, or tls.serverName`,
		},
		"bad header name": {
			file: "endpoints:\n- name: a\n" + ok + "  headers:\n    X Tenant: x\n",
			want: `endpoint "a": headers["X Tenant"]: not a valid HTTP header name`,
		},
		"same header twice": {
			file: "endpoints:\n- name: a\n" + ok + "  headers:\n    X-Scope-OrgID: a\n    x-scope-orgid: b\n",
			want: `endpoint "a": headers[x-scope-orgid]: the same header as headers[X-Scope-OrgID] (names are case-insensitive)`,
		},
		"bad template": {
			file: "endpoints:\n- name: a\n" + ok + "  headers:\n    X-Scope-OrgID: \"{{ .Namespace \"\n",
			want: `endpoint "a": headers[X-Scope-OrgID]: not a valid template: template: X-Scope-OrgID:1: unclosed action`,
		},
		"unknown template field": {
			file: "endpoints:\n- name: a\n" + ok + "  headers:\n    X-Scope-OrgID: \"{{ .Tenant }}\"\n",
			want: `endpoint "a": headers[X-Scope-OrgID]: the template does not execute (only {{ .Namespace }} is defined): ` +
				`template: X-Scope-OrgID:1:3: executing "X-Scope-OrgID" at <.Tenant>: map has no entry for key "Tenant"`,
		},
		"template function unknown": {
			file: "endpoints:\n- name: a\n" + ok + "  headers:\n    X-Scope-OrgID: \"{{ env .Namespace }}\"\n",
			want: `endpoint "a": headers[X-Scope-OrgID]: not a valid template: template: X-Scope-OrgID:1: function "env" not defined`,
		},
		"header value with a line break": {
			file: "endpoints:\n- name: a\n" + ok + "  headers:\n    X-Scope-OrgID: \"a\\nInjected: b\"\n",
			want: `endpoint "a": headers[X-Scope-OrgID]: the value holds characters a header cannot carry (such as a line break)`,
		},
		"default names nothing": {
			file: "default: thanos\nendpoints:\n- name: a\n" + ok + "- name: b\n" + ok,
			want: `default: "thanos" names no endpoint (defined: a, b)`,
		},
		"default without endpoints": {
			file: "default: thanos\n",
			want: `default: "thanos" names no endpoint (none is defined)`,
		},
		"several problems at once": {
			file: "default: c\nendpoints:\n" +
				"- name: a\n  url: ftp://h\n  timeout: 9m\n  tls:\n    certFile: c\n" +
				"- url: https://h.example\n  headers:\n    Authorization: x\n" +
				"- name: a\n" + ok,
			want: `endpoint "a": url: the scheme must be http or https, not "ftp"; ` +
				`endpoint "a": timeout: 9m is longer than the maximum 5m0s; ` +
				`endpoint "a": tls.keyFile: required with tls.certFile; ` +
				`endpoints[1]: name: required; ` +
				`endpoints[1]: headers[Authorization]: refused: use bearerTokenFile or basicAuth (credentials are files, never inline); ` +
				`endpoint "a": name: defined more than once (endpoints[0] and endpoints[2]); ` +
				`default: "c" names no endpoint (defined: a)`,
		},
		"several unknown fields at once": {
			file: "endpoints:\n- name: a\n" + ok + "  tmeout: 1s\n  tls:\n    ca: x\n- name: b\n" + ok + "  basicAuth:\n    password: x\n",
			want: `endpoint "a": tmeout: unknown field; endpoint "a": tls.ca: unknown field; endpoint "b": basicAuth.password: unknown field`,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			cfg, err := Parse([]byte(tc.file), "/etc/kubervisor")
			if err == nil {
				t.Fatalf("Parse accepted the file: %+v", cfg)
			}
			if err.Error() != tc.want {
				t.Errorf("error\n got: %s\nwant: %s", err, tc.want)
			}
		})
	}
}

func TestParseProblemsAreListed(t *testing.T) {
	_, err := Parse([]byte("endpoints:\n- name: a\n  url: ftp://h\n- name: b\n"), "/d")
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("error %v is no *ConfigError", err)
	}
	want := []string{`endpoint "a": url: the scheme must be http or https, not "ftp"`, `endpoint "b": url: required`}
	if diff := cmp.Diff(want, ce.Problems); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
}

func TestParseErrorsQuoteNoSecret(t *testing.T) {
	for _, file := range []string{
		"endpoints:\n- name: a\n  url: https://admin:hunter2@h.example\n",
		"endpoints:\n- name: a\n  url: https://admin:hunter2%zz@h.example\n",
		"endpoints:\n- name: a\n  url: https://h.example\n  headers:\n    X-Api-Key: \"hunter2\\n\"\n",
		"endpoints:\n- name: a\n  url: https://h.example\n  headers:\n    Authorization: Bearer hunter2\n",
	} {
		_, err := Parse([]byte(file), "/d")
		if err == nil || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("Parse(%q) = %v: want an error that does not quote the secret", file, err)
		}
	}
}
