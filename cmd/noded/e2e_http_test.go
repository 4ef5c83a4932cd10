package main

// The HTTP side of the client port, as curl, load balancers and Prometheus
// use it: /health, /version, /metrics and the /v3 JSON gateway. A
// single-member cluster, the usual development setup.

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

func TestHTTP(t *testing.T) {
	c := newCluster(t, 1)
	base := c.members[0].clientURL
	cli := c.client(t)

	t.Run("Health", func(t *testing.T) {
		status, body := httpDo(t, "GET", base+"/health", "")
		var health map[string]any
		if err := json.Unmarshal([]byte(body), &health); err != nil || status != http.StatusOK || health["health"] != "true" {
			t.Errorf("GET /health: %d %q (%v), want 200 with \"health\":\"true\"", status, body, err)
		}
	})

	t.Run("Version", func(t *testing.T) {
		status, body := httpDo(t, "GET", base+"/version", "")
		var version map[string]string
		if err := json.Unmarshal([]byte(body), &version); err != nil || status != http.StatusOK {
			t.Fatalf("GET /version: %d %q (%v)", status, body, err)
		}
		if !regexp.MustCompile(`^\d+\.\d+\.\d+`).MatchString(version["etcdserver"]) || !regexp.MustCompile(`^\d+\.\d+\.0$`).MatchString(version["etcdcluster"]) {
			t.Errorf("GET /version: %q, want etcdserver X.Y.Z and etcdcluster X.Y.0", body)
		}
	})

	t.Run("Metrics", func(t *testing.T) {
		resp, err := http.Get(base + "/metrics")
		if err != nil {
			t.Fatalf("GET /metrics: %v", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
			t.Errorf("GET /metrics: %d %q, want 200 text/plain", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		// Prometheus text format: comments, and `name{labels} value [timestamp]`.
		sample := regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)( -?\d+)?$`)
		typed := map[string]bool{}
		samples := map[string]string{}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if f := strings.Fields(line); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
				typed[f[2]] = true
			}
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			m := sample.FindStringSubmatch(line)
			if m == nil {
				t.Errorf("GET /metrics: line %q is not a sample", line)
				continue
			}
			if _, err := strconv.ParseFloat(m[3], 64); err != nil {
				t.Errorf("GET /metrics: line %q: value %v", line, err)
			}
			samples[m[1]+m[2]] = m[3]
		}
		if err := sc.Err(); err != nil {
			t.Fatalf("GET /metrics: %v", err)
		}
		if len(samples) == 0 || len(typed) == 0 {
			t.Fatalf("GET /metrics: %d samples and %d typed metrics", len(samples), len(typed))
		}
		// The metric every etcd dashboard and alert starts from.
		if samples["etcd_server_has_leader"] != "1" {
			t.Errorf("GET /metrics: etcd_server_has_leader = %q, want 1", samples["etcd_server_has_leader"])
		}
	})

	t.Run("GatewayKV", func(t *testing.T) {
		b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
		put := gatewayPost(t, base+"/v3/kv/put", fmt.Sprintf(`{"key":%q,"value":%q}`, b64("gw/a"), b64("va")), http.StatusOK)
		gatewayPost(t, base+"/v3/kv/put", fmt.Sprintf(`{"key":%q,"value":%q}`, b64("gw/b"), b64("vb")), http.StatusOK)
		// 64-bit integers travel as JSON strings.
		putRev, _ := put["header"].(map[string]any)["revision"].(string)
		if _, err := strconv.ParseInt(putRev, 10, 64); err != nil {
			t.Fatalf("put via gateway: header.revision %v is not a decimal string", put["header"])
		}
		// The client library sees what the gateway wrote.
		wantKV(t, mustGet(t, cli, "gw/a"), "gw/a", "va", mustInt(t, putRev), mustInt(t, putRev), 1)

		rng := gatewayPost(t, base+"/v3/kv/range", fmt.Sprintf(`{"key":%q}`, b64("gw/a")), http.StatusOK)
		kvs, _ := rng["kvs"].([]any)
		if len(kvs) != 1 || rng["count"] != "1" {
			t.Fatalf("range via gateway: %v, want one kv and count \"1\"", rng)
		}
		kv, _ := kvs[0].(map[string]any)
		want := map[string]any{"key": b64("gw/a"), "value": b64("va"), "create_revision": putRev, "mod_revision": putRev, "version": "1"}
		if fmt.Sprint(kv) != fmt.Sprint(want) {
			t.Errorf("range via gateway: kv %v, want %v", kv, want)
		}

		prefix := gatewayPost(t, base+"/v3/kv/range", fmt.Sprintf(`{"key":%q,"range_end":%q,"keys_only":true}`, b64("gw/"), b64("gw0")), http.StatusOK)
		var keys []string
		pkvs, _ := prefix["kvs"].([]any)
		for _, v := range pkvs {
			k, _ := v.(map[string]any)["key"].(string)
			raw, _ := base64.StdEncoding.DecodeString(k)
			keys = append(keys, string(raw))
		}
		if fmt.Sprint(keys) != "[gw/a gw/b]" || prefix["count"] != "2" {
			t.Errorf("prefix range via gateway: keys %v count %v, want [gw/a gw/b] \"2\"", keys, prefix["count"])
		}

		del := gatewayPost(t, base+"/v3/kv/deleterange", fmt.Sprintf(`{"key":%q,"range_end":%q}`, b64("gw/"), b64("gw0")), http.StatusOK)
		if del["deleted"] != "2" {
			t.Errorf("deleterange via gateway: %v, want deleted \"2\"", del)
		}

		// gRPC errors map to HTTP statuses and carry the gRPC code and text.
		future := mustInt(t, putRev) + 1000
		errResp := gatewayPost(t, base+"/v3/kv/range", fmt.Sprintf(`{"key":%q,"revision":%d}`, b64("gw/a"), future), http.StatusBadRequest)
		if code, _ := errResp["code"].(float64); code != 11 || errResp["message"] != futureRevErrText {
			t.Errorf("range at a future revision via gateway: %v, want code 11 (OutOfRange) and message %q", errResp, futureRevErrText)
		}
	})

	t.Run("GatewayLease", func(t *testing.T) {
		grant := gatewayPost(t, base+"/v3/lease/grant", `{"TTL":60}`, http.StatusOK)
		id, _ := grant["ID"].(string)
		if grant["TTL"] != "60" || id == "" {
			t.Fatalf("lease grant via gateway: %v, want TTL \"60\" and an ID", grant)
		}
		ttl := gatewayPost(t, base+"/v3/lease/timetolive", fmt.Sprintf(`{"ID":%s}`, id), http.StatusOK)
		if ttl["ID"] != id || ttl["grantedTTL"] != "60" {
			t.Errorf("lease timetolive via gateway: %v, want ID %s grantedTTL \"60\"", ttl, id)
		}
		gatewayPost(t, base+"/v3/lease/revoke", fmt.Sprintf(`{"ID":%s}`, id), http.StatusOK)
		if ttl := gatewayPost(t, base+"/v3/lease/timetolive", fmt.Sprintf(`{"ID":%s}`, id), http.StatusOK); ttl["TTL"] != "-1" {
			t.Errorf("lease timetolive via gateway after revoke: %v, want TTL \"-1\"", ttl)
		}
	})
}

func httpDo(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctxTimeout(t), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return resp.StatusCode, string(data)
}

// gatewayPost posts a JSON request to the gateway, checks the HTTP status
// and returns the decoded JSON object.
func gatewayPost(t *testing.T, url, body string, wantStatus int) map[string]any {
	t.Helper()
	status, resp := httpDo(t, "POST", url, body)
	var obj map[string]any
	if err := json.Unmarshal([]byte(resp), &obj); err != nil || status != wantStatus {
		t.Fatalf("POST %s %s: %d %q (%v), want %d with a JSON object", url, body, status, resp, err, wantStatus)
	}
	return obj
}

func mustInt(t *testing.T, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("%q: %v", s, err)
	}
	return n
}
