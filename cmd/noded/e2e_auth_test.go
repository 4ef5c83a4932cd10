package main

// Users, roles and key permissions end to end, as an operator sets them up
// with etcdctl 3.4 and as HTTP clients use them through the /v3 gateway
// with the Authorization header. Written against etcd first: the outputs,
// errors and exit codes are etcd's.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestAuthEtcdctl(t *testing.T) {
	etcdctlPath(t)
	c := newCluster(t, 3)
	all := c.endpoints()
	one := []string{c.members[2].clientURL}
	root := "--user=root:rootpw"
	alice := "--user=alice:alicepw"

	// Set up while auth is off: root, a role with a prefix, a user holding it.
	wantCtl(t, all, "User root created\n", "user", "add", "root", "--new-user-password=rootpw")
	wantCtl(t, all, "Role root created\n", "role", "add", "root")
	wantCtl(t, all, "Role root is granted to user root\n", "user", "grant-role", "root", "root")
	wantCtl(t, all, "User alice created\n", "user", "add", "alice", "--new-user-password=alicepw")
	wantCtl(t, all, "Role app created\n", "role", "add", "app")
	wantCtl(t, all, "Role app updated\n", "role", "grant-permission", "--prefix", "app", "readwrite", "/app/")
	wantCtl(t, all, "Role app updated\n", "role", "grant-permission", "app", "read", "/shared")
	wantCtl(t, all, "Role app is granted to user alice\n", "user", "grant-role", "alice", "app")
	wantCtl(t, all, "OK\n", "put", "/other", "before")
	wantCtl(t, all, "Authentication Enabled\n", "auth", "enable")

	t.Run("Allowed", func(t *testing.T) {
		wantCtl(t, all, "OK\n", alice, "put", "/app/x", "1")
		wantCtl(t, one, "/app/x\n1\n", alice, "get", "/app/x")
		wantCtl(t, all, "/app/x\n1\n", alice, "get", "--prefix", "/app/")
		wantCtl(t, all, "", alice, "get", "/shared")
		wantCtl(t, all, "1\n", alice, "del", "/app/x")
		wantCtl(t, all, "/other\nbefore\n", root, "get", "/other")
	})

	t.Run("Refused", func(t *testing.T) {
		denied := "Error: etcdserver: permission denied"
		wantCtlError(t, all, "", 1, denied, alice, "put", "/other", "x")
		wantCtlError(t, all, "", 1, denied, alice, "get", "/other")
		wantCtlError(t, all, "", 1, denied, alice, "put", "/shared", "x")
		wantCtlError(t, all, "", 1, denied, alice, "get", "--prefix", "/ap")
		wantCtlError(t, all, "", 1, denied, alice, "del", "--prefix", "/")
		if !e2eIsEtcd34(t) {
			// Compaction is root's since etcd 3.5 (3.4 let any user compact).
			wantCtlError(t, all, "", 1, denied, alice, "compaction", "1")
		}
		wantCtlError(t, all, "", 1, "Error: etcdserver: user name is empty", "put", "/app/x", "1")
		// A failed login fails the connection: etcdctl's exit code 2.
		wantCtlError(t, all, "", 2, "Error: etcdserver: authentication failed, invalid user ID or password", "--user=alice:wrong", "get", "/app/x")
		wantCtlError(t, all, "", 2, "Error: etcdserver: authentication failed, invalid user ID or password", "--user=nobody:pw", "get", "/app/x")
	})

	t.Run("Txn", func(t *testing.T) {
		wantCtl(t, all, "OK\n", alice, "put", "/app/t", "v")
		res := etcdctl(t, all, "value(\"/app/t\") = \"v\"\n\nput /app/u 2\n\nput /app/u 3\n\n", alice, "txn")
		if res.exitCode != 0 || res.stdout != "SUCCESS\n\nOK\n" {
			t.Errorf("permitted txn: exit %d stdout %q stderr %q", res.exitCode, res.stdout, res.stderr)
		}
		// One key outside the role, in a compare or in either branch.
		for _, script := range []string{
			"value(\"/other\") = \"before\"\n\nput /app/u 4\n\n\n",
			"value(\"/app/t\") = \"v\"\n\nput /app/u 4\nput /other 4\n\n\n",
			"value(\"/app/t\") = \"nope\"\n\nput /app/u 4\n\nget /other\n\n",
		} {
			res := etcdctl(t, all, script, alice, "txn")
			if res.exitCode != 1 || res.lastStderrLine() != "Error: etcdserver: permission denied" || res.stdout != "" {
				t.Errorf("txn %q: exit %d stdout %q stderr %q, want exit 1 and permission denied", script, res.exitCode, res.stdout, res.stderr)
			}
		}
		wantCtl(t, all, "/app/u\n2\n", alice, "get", "/app/u")
	})

	t.Run("Watch", func(t *testing.T) {
		// Outside the role: the server cancels the watch at once.
		res := etcdctl(t, all, "", alice, "watch", "/other")
		wantStderr := "watch was canceled (rpc error: code = PermissionDenied desc = etcdserver: permission denied)\nError: watch is canceled by the server\n"
		if res.exitCode != 5 || res.stdout != "" || res.stderr != wantStderr {
			t.Errorf("watch outside the role: exit %d stdout %q stderr %q, want exit 5 and %q", res.exitCode, res.stdout, res.stderr, wantStderr)
		}

		// Inside it: the watch sees a put made after it started.
		ctx, cancel := context.WithTimeout(context.Background(), etcdctlTimeout)
		defer cancel()
		cmd := etcdctlCommand(ctx, t, all, alice, "watch", "--prefix", "/app/w")
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
		got := make(chan string, 1)
		go func() {
			b := make([]byte, 0, 256)
			buf := make([]byte, 256)
			for !strings.Contains(string(b), "/app/w1\nhello\n") {
				n, err := out.Read(buf)
				b = append(b, buf[:n]...)
				if err != nil {
					break
				}
			}
			got <- string(b)
		}()
		deadline := time.Now().Add(30 * time.Second)
		for {
			wantCtl(t, all, "OK\n", alice, "put", "/app/w1", "hello")
			select {
			case s := <-got:
				if s != "PUT\n/app/w1\nhello\n" && !strings.HasSuffix(s, "PUT\n/app/w1\nhello\n") {
					t.Errorf("permitted watch printed %q", s)
				}
				return
			case <-time.After(time.Second):
			}
			if time.Now().After(deadline) {
				t.Fatal("the permitted watch saw no put in 30s")
			}
		}
	})

	t.Run("PermissionChange", func(t *testing.T) {
		wantCtlError(t, all, "", 1, "Error: etcdserver: permission denied", alice, "get", "/other")
		wantCtl(t, all, "Role app updated\n", root, "role", "grant-permission", "app", "read", "/other")
		// A fresh login sees the new permission at once.
		wantCtl(t, all, "/other\nbefore\n", alice, "get", "/other")
		wantCtl(t, all, "Permission of key /other is revoked from role app\n", root, "role", "revoke-permission", "app", "/other")
		wantCtlError(t, all, "", 1, "Error: etcdserver: permission denied", alice, "get", "/other")
	})

	t.Run("Inspect", func(t *testing.T) {
		wantCtl(t, all, "User: alice\nRoles: app\n", root, "user", "get", "alice")
		wantCtl(t, all, "alice\nroot\n", root, "user", "list")
		wantCtl(t, all, "app\nroot\n", root, "role", "list")
		wantCtl(t, all, "Role app\nKV Read:\n\t[/app/, /app0) (prefix /app/)\n\t/shared\nKV Write:\n\t[/app/, /app0) (prefix /app/)\n", root, "role", "get", "app")
		wantCtlError(t, all, "", 1, "Error: etcdserver: permission denied", alice, "user", "list")
		wantCtlError(t, all, "", 1, "Error: etcdserver: permission denied", alice, "role", "add", "x")
		wantCtlError(t, all, "", 1, "Error: etcdserver: invalid auth management", root, "user", "delete", "root")
	})

	wantCtl(t, all, "Authentication Disabled\n", root, "auth", "disable")
	wantCtl(t, all, "/other\nbefore\n", "get", "/other")
	wantCtl(t, all, "OK\n", "put", "/other", "after")
}

// The same through the /v3 JSON gateway: log in at /v3/auth/authenticate,
// then send the token in the Authorization header.
func TestAuthGateway(t *testing.T) {
	c := newCluster(t, 1)
	base := c.members[0].clientURL
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	post := func(path, token, body string) (int, map[string]any) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctxTimeout(t), "POST", base+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		var obj map[string]any
		if err := json.Unmarshal(data, &obj); err != nil {
			t.Fatalf("POST %s: %d %q: %v", path, resp.StatusCode, data, err)
		}
		return resp.StatusCode, obj
	}
	mustOK := func(path, token, body string) map[string]any {
		t.Helper()
		status, obj := post(path, token, body)
		if status != http.StatusOK {
			t.Fatalf("POST %s %s: %d %v", path, body, status, obj)
		}
		return obj
	}
	mustOK("/v3/auth/user/add", "", `{"name":"root","password":"rootpw"}`)
	mustOK("/v3/auth/role/add", "", `{"name":"root"}`)
	mustOK("/v3/auth/user/grant", "", `{"user":"root","role":"root"}`)
	mustOK("/v3/auth/user/add", "", `{"name":"bob","password":"bobpw"}`)
	mustOK("/v3/auth/role/add", "", `{"name":"r"}`)
	mustOK("/v3/auth/role/grant", "", `{"name":"r","perm":{"permType":"READWRITE","key":"`+b64("/b/")+`","range_end":"`+b64("/b0")+`"}}`)
	mustOK("/v3/auth/user/grant", "", `{"user":"bob","role":"r"}`)
	mustOK("/v3/auth/enable", "", `{}`)

	if !e2eIsEtcd34(t) { // etcd 3.4 has no AuthStatus
		status := mustOK("/v3/auth/status", "", `{}`)
		if status["enabled"] != true {
			t.Errorf("auth status %v, want enabled", status)
		}
	}
	login := mustOK("/v3/auth/authenticate", "", `{"name":"bob","password":"bobpw"}`)
	token, _ := login["token"].(string)
	if token == "" {
		t.Fatalf("authenticate: %v", login)
	}
	mustOK("/v3/kv/put", token, `{"key":"`+b64("/b/1")+`","value":"`+b64("v")+`"}`)
	got := mustOK("/v3/kv/range", token, `{"key":"`+b64("/b/1")+`"}`)
	if kvs, _ := got["kvs"].([]any); len(kvs) != 1 {
		t.Errorf("range in bob's prefix: %v", got)
	}
	for _, tc := range []struct {
		path, token, body string
		status            int
		msg               string
	}{
		{"/v3/kv/put", token, `{"key":"` + b64("/c") + `","value":"` + b64("v") + `"}`, http.StatusForbidden, "etcdserver: permission denied"},
		{"/v3/kv/range", token, `{"key":"` + b64("/c") + `"}`, http.StatusForbidden, "etcdserver: permission denied"},
		{"/v3/kv/put", "", `{"key":"` + b64("/b/1") + `","value":"` + b64("v") + `"}`, http.StatusBadRequest, "etcdserver: user name is empty"},
		{"/v3/kv/put", "not-a-token", `{"key":"` + b64("/b/1") + `","value":"` + b64("v") + `"}`, http.StatusUnauthorized, "etcdserver: invalid auth token"},
		{"/v3/auth/authenticate", "", `{"name":"bob","password":"wrong"}`, http.StatusBadRequest, "etcdserver: authentication failed, invalid user ID or password"},
		{"/v3/auth/user/list", token, `{}`, http.StatusForbidden, "etcdserver: permission denied"},
	} {
		status, obj := post(tc.path, tc.token, tc.body)
		// etcd 3.4 and 3.5 put the text in "error" (and "message"); 3.6 on,
		// in "message" only.
		msg := obj["message"]
		if msg == nil {
			msg = obj["error"]
		}
		if status != tc.status || msg != tc.msg {
			t.Errorf("POST %s %s: %d %v, want %d with error %q", tc.path, tc.body, status, obj, tc.status, tc.msg)
		}
	}
	rootLogin := mustOK("/v3/auth/authenticate", "", `{"name":"root","password":"rootpw"}`)
	rootToken, _ := rootLogin["token"].(string)
	users := mustOK("/v3/auth/user/list", rootToken, `{}`)
	if list, _ := users["users"].([]any); len(list) != 2 {
		t.Errorf("user list: %v", users)
	}
	mustOK("/v3/auth/disable", rootToken, `{}`)
	mustOK("/v3/kv/put", "", `{"key":"`+b64("/c")+`","value":"`+b64("v")+`"}`)
}

// A --auth-token etcd would refuse stops the member before it serves
// anything, with an error naming the flag.
func TestAuthTokenFlagRefused(t *testing.T) {
	requireE2E(t)
	for _, spec := range []string{"jwt,sign-method=RS256", "plain", "jwt,pub-key"} {
		dir := t.TempDir()
		cmd := exec.Command(e2eBinary, "--data-dir", dir+"/d", "--auth-token", spec,
			"--listen-client-urls", "http://127.0.0.1:0", "--advertise-client-urls", "http://127.0.0.1:0",
			"--listen-peer-urls", "http://127.0.0.1:0")
		out, err := cmd.CombinedOutput()
		exit, ok := err.(*exec.ExitError)
		if !ok || exit.ExitCode() == 0 {
			t.Errorf("--auth-token %q: %v, want a non-zero exit; output:\n%s", spec, err, out)
			continue
		}
		if !strings.Contains(string(out), "auth") {
			t.Errorf("--auth-token %q: output does not name the problem:\n%s", spec, out)
		}
		t.Logf("--auth-token %q: exit %d: %s", spec, exit.ExitCode(), lastLine(string(out)))
	}
}

// e2eIsEtcd34 reports whether the tests run against etcd 3.4, whose rules
// differ from the later ones noded follows in a few places.
func e2eIsEtcd34(t *testing.T) bool {
	t.Helper()
	out, err := exec.Command(e2eBinary, "--version").Output()
	if err != nil {
		t.Fatalf("%s --version: %v", e2eBinary, err)
	}
	return strings.Contains(string(out), "etcd Version: 3.4.")
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
