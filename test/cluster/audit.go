package cluster

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// AuditEntry is what the harness reads of an audit.k8s.io/v1 Event: one request the API server answered.
type AuditEntry struct {
	AuditID    string `json:"auditID"`
	Stage      string `json:"stage"`
	Verb       string `json:"verb"`
	RequestURI string `json:"requestURI"`
	User       struct {
		Username string `json:"username"`
	} `json:"user"`
	ObjectRef *struct {
		Resource    string `json:"resource"`
		Subresource string `json:"subresource"`
		Namespace   string `json:"namespace"`
		Name        string `json:"name"`
		APIGroup    string `json:"apiGroup"`
	} `json:"objectRef"`
	ResponseStatus *struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
	// StageTimestamp is when the API server answered.
	StageTimestamp time.Time `json:"stageTimestamp"`
}

// Code is the response's HTTP status code, 0 when the entry has none.
func (e AuditEntry) Code() int {
	if e.ResponseStatus == nil {
		return 0
	}
	return e.ResponseStatus.Code
}

func (e AuditEntry) String() string {
	return e.Verb + " " + e.RequestURI + " -> " + strconv.Itoa(e.Code())
}

// auditArgs writes policy under dir and returns kube-apiserver's flags that log to auditLog(dir) in JSON
// with it.
func auditArgs(dir, policy string) (map[string][]string, error) {
	path := filepath.Join(dir, "audit-policy.yaml")
	if err := os.WriteFile(path, []byte(policy), 0o644); err != nil {
		return nil, fmt.Errorf("writing the audit policy: %w", err)
	}
	return map[string][]string{
		"audit-policy-file": {path},
		"audit-log-path":    {auditLog(dir)},
		"audit-log-format":  {"json"},
		"audit-log-maxsize": {"0"},
	}, nil
}

func auditLog(dir string) string { return filepath.Join(dir, "audit.log") }

// Audited returns the requests of the audit log (Options.AuditPolicy) so far that keep accepts, one entry
// per request (the last stage logged for it). NOTE: the API server writes an entry when a request completes,
// so a request answered a moment ago may not be there yet.
func (c *Cluster) Audited(keep func(AuditEntry) bool) ([]AuditEntry, error) {
	if c.opts.AuditPolicy == "" {
		return nil, fmt.Errorf("the cluster was started without Options.AuditPolicy")
	}
	f, err := os.Open(auditLog(c.workDir))
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }() // read only
	index := map[string]int{}
	var out []AuditEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e AuditEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return nil, fmt.Errorf("reading the audit log: %w", err)
		}
		if !keep(e) {
			continue
		}
		if i, ok := index[e.AuditID]; ok {
			out[i] = e
			continue
		}
		index[e.AuditID] = len(out)
		out = append(out, e)
	}
	return out, sc.Err()
}
