// Package endpoints holds the detector endpoints administrators define for the manager (SPEC §2.3): named
// connections to Prometheus, Thanos, Mimir or a custom detector service, with their TLS, credentials,
// headers and timeout. A breaker names an endpoint (or none, for the default) and never carries any of
// these settings itself.
//
// # The file
//
// The manager reads one file, YAML or JSON, usually mounted from a Secret in its own namespace:
//
//	default: thanos                  # optional: the endpoint of breakers that name none
//	endpoints:
//	- name: thanos                   # DNS-1123 label, unique
//	  url: https://thanos-querier.openshift-monitoring.svc:9091   # http or https; a path prefix is allowed
//	  timeout: 10s                   # optional, > 0 and at most 5m
//	  tls:                           # optional
//	    caFile: ca.crt               # relative paths are resolved against the file's directory
//	    certFile: tls.crt            # certFile and keyFile together: mutual TLS
//	    keyFile: tls.key
//	    serverName: thanos.example   # optional
//	    insecureSkipVerify: false    # allowed, but every breaker using it shows a warning
//	  bearerTokenFile: /var/run/secrets/kubervisor/token   # e.g. a projected ServiceAccount token
//	  basicAuth:                     # not together with bearerTokenFile
//	    username: kubervisor         # or usernameFile
//	    passwordFile: password
//	  headers:
//	    X-Scope-OrgID: "{{ .Namespace }}"   # the KubervisorService's namespace
//
// Decoding is strict: an unknown field is an error naming it. Validation reports every problem at once,
// each as `endpoint "<name>": <field>: <problem>`.
//
// # Why credentials are files only
//
// A token, a password or a key is always a file path, never a value in the file: the file can be read,
// reviewed and diffed without revealing a secret, the manager needs no RBAC on Secrets (the kubelet mounts
// them), and a rotated credential is picked up without a reload because the files are read again when
// they are used (see build). For the same reason no error, warning, log line or metric label produced
// here holds a token, a password or a header value; they name files and fields instead.
//
// # Why a KubervisorService cannot set headers or credentials
//
// The endpoints speak with the manager's identity. A tenant header such as X-Scope-OrgID is what keeps
// one namespace's metrics from another's in Mimir, Cortex or a multi-tenant Thanos; if a
// KubervisorService could set or override it, any namespace could read any tenant's metrics with
// Kubervisor's credentials. So headers are defined here only, a value may only be templated with the
// KubervisorService's own namespace ({{ .Namespace }}; nothing else is defined), and the client of a
// Target replaces any such header, and any Authorization header, a request carries.
//
// # Reloads
//
// Registry.Load reads, parses and builds the whole file; on success the new configuration replaces the old
// one at once and Registry.Generation moves, so callers rebuild the detectors they made from an older
// generation. A file that does not load changes nothing: the last good configuration stays in use,
// Registry.Problem says so (for breaker warnings), the failure is logged and counted in
// kubervisor_endpoints_config_reloads_total{result="failure"}. Registry.Start polls the file's content
// (a Secret volume changes by swapping a symbolic link, so the file is read, not watched) and loads it
// when it changed. Token, password, CA and client certificate files need no reload at all.
package endpoints
