package main

// The v2 API with --enable-v2, as etcd 3.4 served it: the keys API over
// HTTP (as curl and v2 client libraries use it), ETCDCTL_API=2 etcdctl 3.4,
// and the members API's curl flows. Written against Debian's etcd 3.4
// first (NODED_E2E_BINARY=/usr/bin/etcd); indexes differ between the two
// (etcd's v2 store counts its own), so they are checked relative to the
// X-Etcd-Index the same answer carries.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/noded/noded/cmd/internal/memberproc"
)

type v2Reply struct {
	status int
	header http.Header
	body   string
}

// v2Do sends one request; form (when not nil) goes in the body as a form.
func v2Do(t *testing.T, method, u string, form url.Values) v2Reply {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctxTimeout(t), method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	return v2Send(t, req)
}

func v2Send(t *testing.T, req *http.Request) v2Reply {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", req.Method, req.URL, err)
	}
	return v2Reply{resp.StatusCode, resp.Header, string(data)}
}

type v2Node struct {
	Key           string    `json:"key"`
	Value         *string   `json:"value"`
	Dir           bool      `json:"dir"`
	Expiration    *string   `json:"expiration"`
	TTL           int64     `json:"ttl"`
	Nodes         []*v2Node `json:"nodes"`
	ModifiedIndex uint64    `json:"modifiedIndex"`
	CreatedIndex  uint64    `json:"createdIndex"`
}

type v2Event struct {
	Action   string  `json:"action"`
	Node     *v2Node `json:"node"`
	PrevNode *v2Node `json:"prevNode"`
}

type v2Err struct {
	ErrorCode int    `json:"errorCode"`
	Message   string `json:"message"`
	Cause     string `json:"cause"`
	Index     uint64 `json:"index"`
}

func (r v2Reply) index(t *testing.T) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(r.header.Get("X-Etcd-Index"), 10, 64)
	if err != nil {
		t.Fatalf("X-Etcd-Index %q: %v", r.header.Get("X-Etcd-Index"), err)
	}
	return n
}

// wantEvent checks a successful answer's status and decodes its event.
func wantEvent(t *testing.T, r v2Reply, status int, action string) v2Event {
	t.Helper()
	var ev v2Event
	if err := json.Unmarshal([]byte(r.body), &ev); err != nil || r.status != status || ev.Action != action {
		t.Fatalf("got %d %q (%v), want %d with action %q", r.status, r.body, err, status, action)
	}
	if !strings.HasSuffix(r.body, "\n") || r.header.Get("Content-Type") != "application/json" {
		t.Errorf("body %q content type %q, want JSON ending in a newline", r.body, r.header.Get("Content-Type"))
	}
	return ev
}

// wantV2Error checks an error answer: status, code, message, cause, and
// the index equal to X-Etcd-Index (0 for a request error).
func wantV2Error(t *testing.T, r v2Reply, status, code int, message, cause string) {
	t.Helper()
	var e v2Err
	if err := json.Unmarshal([]byte(r.body), &e); err != nil || r.status != status || e.ErrorCode != code || e.Message != message || e.Cause != cause {
		t.Fatalf("got %d %q (%v), want %d errorCode %d message %q cause %q", r.status, r.body, err, status, code, message, cause)
	}
	if e.Index != r.index(t) {
		t.Errorf("error index %d, X-Etcd-Index %d: want them equal", e.Index, r.index(t))
	}
}

func TestV2Keys(t *testing.T) {
	c := newCluster(t, 1, "--enable-v2")
	keys := c.members[0].clientURL + "/v2/keys"
	form := func(kv ...string) url.Values {
		v := url.Values{}
		for i := 0; i+1 < len(kv); i += 2 {
			v.Add(kv[i], kv[i+1])
		}
		return v
	}

	t.Run("SetGetList", func(t *testing.T) {
		r := v2Do(t, "PUT", keys+"/a/b", form("value", "1"))
		ev := wantEvent(t, r, http.StatusCreated, "set")
		if ev.Node.Key != "/a/b" || *ev.Node.Value != "1" || ev.Node.ModifiedIndex != r.index(t) || ev.Node.CreatedIndex != r.index(t) || ev.PrevNode != nil {
			t.Errorf("set /a/b: %s (X-Etcd-Index %d)", r.body, r.index(t))
		}
		if r.header.Get("X-Raft-Term") == "" || r.header.Get("X-Raft-Index") == "" || r.header.Get("X-Etcd-Cluster-Id") == "" {
			t.Errorf("set /a/b headers %v: want X-Raft-Term, X-Raft-Index and X-Etcd-Cluster-Id", r.header)
		}
		setIndex := r.index(t)
		r = v2Do(t, "PUT", keys+"/a/c", form("value", "2"))
		wantEvent(t, r, http.StatusCreated, "set")
		r = v2Do(t, "PUT", keys+"/a/b", form("value", "3"))
		ev = wantEvent(t, r, http.StatusOK, "set")
		if ev.PrevNode == nil || *ev.PrevNode.Value != "1" || ev.PrevNode.ModifiedIndex != setIndex || ev.Node.CreatedIndex != r.index(t) {
			t.Errorf("set /a/b again: %s, want prevNode 1 at %d and a new created index", r.body, setIndex)
		}
		r = v2Do(t, "GET", keys+"/a?sorted=true", nil)
		ev = wantEvent(t, r, http.StatusOK, "get")
		if !ev.Node.Dir || ev.Node.Key != "/a" || len(ev.Node.Nodes) != 2 || ev.Node.Nodes[0].Key != "/a/b" || *ev.Node.Nodes[0].Value != "3" || ev.Node.Nodes[1].Key != "/a/c" {
			t.Errorf("get /a: %s", r.body)
		}
		if ev.Node.CreatedIndex != setIndex {
			t.Errorf("get /a: created index %d, want %d (made by the first set below it)", ev.Node.CreatedIndex, setIndex)
		}
		v2Do(t, "PUT", keys+"/a/d/e", form("value", "4"))
		v2Do(t, "PUT", keys+"/a/_hidden", form("value", "h"))
		r = v2Do(t, "GET", keys+"/a?recursive=true&sorted=true", nil)
		ev = wantEvent(t, r, http.StatusOK, "get")
		if len(ev.Node.Nodes) != 3 || ev.Node.Nodes[2].Key != "/a/d" || len(ev.Node.Nodes[2].Nodes) != 1 || ev.Node.Nodes[2].Nodes[0].Key != "/a/d/e" {
			t.Errorf("get /a recursive: %s, want b, c and d with e, no hidden node", r.body)
		}
		r = v2Do(t, "GET", keys+"/a/_hidden", nil)
		if ev := wantEvent(t, r, http.StatusOK, "get"); *ev.Node.Value != "h" {
			t.Errorf("get /a/_hidden: %s", r.body)
		}
		r = v2Do(t, "GET", keys+"/", nil)
		ev = wantEvent(t, r, http.StatusOK, "get")
		if !ev.Node.Dir || ev.Node.Key != "" {
			t.Errorf("get /: %s, want the root directory without a key", r.body)
		}
		r = v2Do(t, "PUT", keys+"/nv?noValueOnSuccess=true", form("value", "1"))
		if r.status != http.StatusCreated || r.body != `{"action":"set"}`+"\n" {
			t.Errorf("set with noValueOnSuccess: %d %q", r.status, r.body)
		}
	})

	t.Run("Errors", func(t *testing.T) {
		v2Do(t, "PUT", keys+"/e/f", form("value", "1"))
		v2Do(t, "PUT", keys+"/file", form("value", "1"))
		wantV2Error(t, v2Do(t, "PUT", keys+"/e", form("value", "x")), 403, 102, "Not a file", "/e")
		wantV2Error(t, v2Do(t, "PUT", keys+"/e/f?prevExist=false", form("value", "2")), 412, 105, "Key already exists", "/e/f")
		wantV2Error(t, v2Do(t, "PUT", keys+"/e/f?prevValue=9", form("value", "2")), 412, 101, "Compare failed", "[9 != 1]")
		wantV2Error(t, v2Do(t, "DELETE", keys+"/e", nil), 403, 102, "Not a file", "/e")
		wantV2Error(t, v2Do(t, "DELETE", keys+"/e?dir=true", nil), 403, 108, "Directory not empty", "/e")
		wantV2Error(t, v2Do(t, "DELETE", keys+"/nokey", nil), 404, 100, "Key not found", "/nokey")
		wantV2Error(t, v2Do(t, "GET", keys+"/nodir/x", nil), 404, 100, "Key not found", "/nodir")
		wantV2Error(t, v2Do(t, "GET", keys+"/file/x", nil), 400, 104, "Not a directory", "/file")
		wantV2Error(t, v2Do(t, "PUT", keys+"/file/x/y", form("value", "1")), 400, 104, "Not a directory", "/file")
		wantV2Error(t, v2Do(t, "POST", keys+"/file", form("value", "1")), 400, 104, "Not a directory", "/file")
		wantV2Error(t, v2Do(t, "PUT", keys+"/", form("value", "1")), 400, 107, "Root is read only", "/")
		wantV2Error(t, v2Do(t, "DELETE", keys+"/?recursive=true", nil), 400, 107, "Root is read only", "/")
		wantV2Error(t, v2Do(t, "PUT", keys+"/nokey?prevExist=true", form("value", "1")), 404, 100, "Key not found", "/nokey")
		// Malformed requests: etcd's request errors, index 0.
		wantV2Error(t, v2Do(t, "PUT", keys+"/e/f?prevIndex=abc", form("value", "2")), 400, 203, "The given index in POST form is not a number", `invalid value for "prevIndex"`)
		wantV2Error(t, v2Do(t, "GET", keys+"/e/f?wait=true&waitIndex=x", nil), 400, 203, "The given index in POST form is not a number", `invalid value for "waitIndex"`)
		wantV2Error(t, v2Do(t, "PUT", keys+"/e/f", form("value", "2", "ttl", "abc")), 400, 202, "The given TTL in POST form is not a number", `invalid value for "ttl"`)
		wantV2Error(t, v2Do(t, "PUT", keys+"/e/f?prevExist=maybe", form("value", "2")), 400, 209, "Invalid field", "invalid value for prevExist")
		wantV2Error(t, v2Do(t, "GET", keys+"/e?recursive=maybe", nil), 400, 209, "Invalid field", `invalid value for "recursive"`)
		wantV2Error(t, v2Do(t, "PUT", keys+"/e/f?wait=true", form("value", "3")), 400, 209, "Invalid field", `"wait" can only be used with GET requests`)
		wantV2Error(t, v2Do(t, "PUT", keys+"/e/f?prevValue=", form("value", "3")), 400, 201, "PrevValue is Required in POST form", `"prevValue" cannot be empty`)
		wantV2Error(t, v2Do(t, "PUT", keys+"/e/f?refresh=true&prevExist=true", form("ttl", "30", "value", "4")), 400, 211, "Value provided on refresh", "A value was provided on a refresh")
		wantV2Error(t, v2Do(t, "PUT", keys+"/e/f?refresh=true&prevExist=true", nil), 400, 212, "A TTL must be provided on refresh", "No TTL value set")
		if r := v2Do(t, "PATCH", keys+"/e/f", nil); r.status != http.StatusMethodNotAllowed {
			t.Errorf("PATCH: %d %q, want 405", r.status, r.body)
		}
		// Nothing of the refused requests was written.
		if ev := wantEvent(t, v2Do(t, "GET", keys+"/e/f", nil), http.StatusOK, "get"); *ev.Node.Value != "1" {
			t.Errorf("/e/f is %q after refused writes, want 1", *ev.Node.Value)
		}
	})

	t.Run("CompareAndSwapDelete", func(t *testing.T) {
		r := v2Do(t, "PUT", keys+"/cas", form("value", "1"))
		created := wantEvent(t, r, http.StatusCreated, "set").Node.CreatedIndex
		r = v2Do(t, "PUT", keys+"/cas?prevValue=1", form("value", "2", "ttl", "100"))
		ev := wantEvent(t, r, http.StatusOK, "compareAndSwap")
		if *ev.Node.Value != "2" || ev.Node.CreatedIndex != created || ev.Node.TTL <= 0 || ev.Node.TTL > 100 || ev.Node.Expiration == nil || *ev.PrevNode.Value != "1" {
			t.Errorf("compareAndSwap: %s", r.body)
		}
		mod := ev.Node.ModifiedIndex
		wantV2Error(t, v2Do(t, "PUT", keys+fmt.Sprintf("/cas?prevIndex=%d&prevValue=2", mod+100), form("value", "3")), 412, 101, "Compare failed", fmt.Sprintf("[%d != %d]", mod+100, mod))
		r = v2Do(t, "PUT", keys+fmt.Sprintf("/cas?prevIndex=%d", mod), form("value", "3"))
		if ev := wantEvent(t, r, http.StatusOK, "compareAndSwap"); ev.Node.Expiration != nil {
			t.Errorf("compareAndSwap without ttl: %s, want the TTL gone", r.body)
		}
		wantV2Error(t, v2Do(t, "DELETE", keys+"/cas?prevValue=9", nil), 412, 101, "Compare failed", "[9 != 3]")
		r = v2Do(t, "DELETE", keys+"/cas?prevValue=3", nil)
		ev = wantEvent(t, r, http.StatusOK, "compareAndDelete")
		if ev.Node.Key != "/cas" || ev.Node.Value != nil || ev.Node.CreatedIndex != created || ev.Node.ModifiedIndex != r.index(t) || *ev.PrevNode.Value != "3" {
			t.Errorf("compareAndDelete: %s", r.body)
		}
		r = v2Do(t, "PUT", keys+"/cas?prevExist=false", form("value", "new"))
		wantEvent(t, r, http.StatusCreated, "create")
		r = v2Do(t, "PUT", keys+"/cas?prevExist=true", form("value", "upd"))
		if ev := wantEvent(t, r, http.StatusOK, "update"); *ev.Node.Value != "upd" || *ev.PrevNode.Value != "new" {
			t.Errorf("update: %s", r.body)
		}
		r = v2Do(t, "PUT", keys+"/cas?refresh=true&prevExist=true", form("ttl", "50"))
		if ev := wantEvent(t, r, http.StatusOK, "update"); *ev.Node.Value != "upd" || ev.Node.TTL <= 0 || ev.Node.TTL > 50 {
			t.Errorf("refresh: %s, want the value kept and a TTL of 50", r.body)
		}
	})

	t.Run("DirectoriesAndInOrderKeys", func(t *testing.T) {
		r := v2Do(t, "PUT", keys+"/d1", form("dir", "true"))
		wantEvent(t, r, http.StatusCreated, "set")
		wantV2Error(t, v2Do(t, "PUT", keys+"/d1", form("dir", "true")), 403, 102, "Not a file", "/d1")
		wantV2Error(t, v2Do(t, "PUT", keys+"/d1?dir=true&prevExist=false", nil), 412, 105, "Key already exists", "/d1")
		r = v2Do(t, "PUT", keys+"/d1?dir=true&prevExist=true", form("ttl", "100"))
		if ev := wantEvent(t, r, http.StatusOK, "update"); !ev.Node.Dir || ev.Node.TTL <= 0 {
			t.Errorf("update a directory's TTL: %s", r.body)
		}
		var names []string
		for i := 0; i < 3; i++ {
			r = v2Do(t, "POST", keys+"/queue", form("value", fmt.Sprintf("job%d", i)))
			ev := wantEvent(t, r, http.StatusCreated, "create")
			if want := fmt.Sprintf("/queue/%020d", ev.Node.CreatedIndex); ev.Node.Key != want {
				t.Errorf("in-order key %s, want %s (named by its created index)", ev.Node.Key, want)
			}
			names = append(names, ev.Node.Key)
		}
		if !sort.StringsAreSorted(names) {
			t.Errorf("in-order keys %v are not in order", names)
		}
		r = v2Do(t, "GET", keys+"/queue?sorted=true", nil)
		if ev := wantEvent(t, r, http.StatusOK, "get"); len(ev.Node.Nodes) != 3 || *ev.Node.Nodes[0].Value != "job0" || *ev.Node.Nodes[2].Value != "job2" {
			t.Errorf("get /queue: %s", r.body)
		}
		r = v2Do(t, "DELETE", keys+"/queue?recursive=true", nil)
		if ev := wantEvent(t, r, http.StatusOK, "delete"); !ev.Node.Dir || ev.Node.Key != "/queue" || ev.PrevNode == nil || !ev.PrevNode.Dir {
			t.Errorf("delete /queue recursively: %s", r.body)
		}
		wantV2Error(t, v2Do(t, "GET", keys+names[0], nil), 404, 100, "Key not found", "/queue")
		r = v2Do(t, "DELETE", keys+"/d1?dir=true", nil)
		wantEvent(t, r, http.StatusOK, "delete")
	})

	t.Run("WaitAndTTL", func(t *testing.T) {
		r := v2Do(t, "PUT", keys+"/w/k", form("value", "1"))
		setIndex := wantEvent(t, r, http.StatusCreated, "set").Node.ModifiedIndex
		// From history: the event at or after waitIndex.
		r = v2Do(t, "GET", keys+fmt.Sprintf("/w/k?wait=true&waitIndex=%d", setIndex), nil)
		if ev := wantEvent(t, r, http.StatusOK, "set"); ev.Node.ModifiedIndex != setIndex || *ev.Node.Value != "1" {
			t.Errorf("wait from history: %s", r.body)
		}
		// A recursive wait from the next index, answered by the next change
		// below that is not hidden.
		now := v2Do(t, "GET", keys+"/w", nil).index(t)
		done := make(chan v2Reply, 1)
		go func() {
			resp, err := http.Get(keys + fmt.Sprintf("/w?wait=true&recursive=true&waitIndex=%d", now+1))
			if err != nil {
				done <- v2Reply{status: -1, body: err.Error()}
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			done <- v2Reply{resp.StatusCode, resp.Header, string(b)}
		}()
		v2Do(t, "PUT", keys+"/w/_hidden", form("value", "h")) // not told to a recursive watcher
		v2Do(t, "DELETE", keys+"/w/k", nil)
		select {
		case r := <-done:
			if ev := wantEvent(t, r, http.StatusOK, "delete"); ev.Node.Key != "/w/k" || *ev.PrevNode.Value != "1" {
				t.Errorf("recursive wait: %s", r.body)
			}
		case <-time.After(requestTimeout):
			t.Fatal("recursive wait: no answer")
		}
		// A key with a TTL goes by itself, and a waiter hears "expire".
		r = v2Do(t, "PUT", keys+"/w/ttl", form("value", "v", "ttl", "2"))
		ev := wantEvent(t, r, http.StatusCreated, "set")
		if ev.Node.TTL <= 0 || ev.Node.TTL > 2 || ev.Node.Expiration == nil {
			t.Errorf("set with ttl: %s", r.body)
		}
		r = v2Do(t, "GET", keys+fmt.Sprintf("/w/ttl?wait=true&waitIndex=%d", ev.Node.ModifiedIndex+1), nil)
		if ev := wantEvent(t, r, http.StatusOK, "expire"); ev.Node.Key != "/w/ttl" || ev.PrevNode == nil || *ev.PrevNode.Value != "v" {
			t.Errorf("wait for expiry: %s", r.body)
		}
		wantV2Error(t, v2Do(t, "GET", keys+"/w/ttl", nil), 404, 100, "Key not found", "/w/ttl")
	})
}

// waitUntil polls cond until it holds or startTimeout passes.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(startTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", startTimeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// etcdctl2 runs ETCDCTL_API=2 etcdctl with args against endpoints.
func etcdctl2(t *testing.T, endpoints []string, args ...string) ctlResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), etcdctlTimeout)
	defer cancel()
	full := append([]string{"--endpoints=" + strings.Join(endpoints, ","), "--total-timeout=30s", "--timeout=10s"}, args...)
	cmd := exec.CommandContext(ctx, etcdctlPath(t), full...)
	cmd.Env = append(memberproc.Env(), "ETCDCTL_API=2")
	cmd.SysProcAttr = memberproc.SysProcAttr()
	return runCtl(ctx, t, cmd, args)
}

func wantCtl2(t *testing.T, endpoints []string, want string, args ...string) {
	t.Helper()
	res := etcdctl2(t, endpoints, args...)
	if res.exitCode != 0 || res.stdout != want {
		t.Errorf("etcdctl %s: exit %d stdout %q stderr %q, want exit 0 stdout %q", strings.Join(args, " "), res.exitCode, res.stdout, res.stderr, want)
	}
}

// wantCtl2Error checks a failing etcdctl v2 command: its exit code and a
// stderr matching pattern.
func wantCtl2Error(t *testing.T, endpoints []string, exitCode int, pattern string, args ...string) {
	t.Helper()
	res := etcdctl2(t, endpoints, args...)
	if res.exitCode != exitCode || !regexp.MustCompile(pattern).MatchString(res.stderr) {
		t.Errorf("etcdctl %s: exit %d stdout %q stderr %q, want exit %d and stderr matching %q", strings.Join(args, " "), res.exitCode, res.stdout, res.stderr, exitCode, pattern)
	}
}

func TestV2EtcdctlAndMembers(t *testing.T) {
	etcdctlPath(t)
	c := newCluster(t, 3, "--enable-v2")
	all := c.endpoints()
	one := []string{c.members[1].clientURL}

	t.Run("Keys", func(t *testing.T) {
		wantCtl2(t, all, "1\n", "set", "/x/y", "1")
		wantCtl2(t, one, "1\n", "get", "/x/y")
		wantCtl2(t, all, "2\n", "mk", "/x/z", "2")
		wantCtl2Error(t, all, 4, `^Error:  105: Key already exists \(/x/z\) \[\d+\]\n$`, "mk", "/x/z", "2")
		wantCtl2(t, all, "", "mkdir", "/d")
		wantCtl2Error(t, all, 4, `^Error:  105: Key already exists \(/d\) \[\d+\]\n$`, "mkdir", "/d")
		wantCtl2(t, all, "/d\n/x\n", "ls", "--sort")
		wantCtl2(t, all, "/d\n/x\n/x/y\n/x/z\n", "ls", "--sort", "--recursive")
		wantCtl2(t, all, "/d/\n/x/\n", "ls", "--sort", "-p")
		wantCtl2(t, all, "3\n", "update", "/x/y", "3")
		wantCtl2Error(t, all, 4, `^Error:  100: Key not found \(/x/nope\) \[\d+\]\n$`, "update", "/x/nope", "3")
		wantCtl2(t, all, "PrevNode.Value: 2\n", "rm", "/x/z")
		wantCtl2(t, all, "", "rmdir", "/d")
		wantCtl2Error(t, all, 1, `^/x: is a directory\n$`, "get", "/x")
		wantCtl2Error(t, all, 4, `^Error:  101: Compare failed \(\[9 != 3\]\) \[\d+\]\n$`, "set", "--swap-with-value", "9", "/x/y", "4")
		wantCtl2(t, all, "4\n", "set", "--swap-with-value", "3", "/x/y", "4")
		wantCtl2(t, all, "", "updatedir", "--ttl", "100", "/x")
		wantCtl2Error(t, all, 4, `^Error:  108: Directory not empty \(/x\) \[\d+\]\n$`, "rmdir", "/x")
		wantCtl2(t, all, "", "rm", "--recursive", "/x")
		wantCtl2Error(t, all, 4, `^Error:  100: Key not found \(/x\) \[\d+\]\n$`, "get", "/x/y")
		res := etcdctl2(t, all, "-o", "extended", "set", "/ext", "v")
		if res.exitCode != 0 || !regexp.MustCompile(`^Key: /ext\nCreated-Index: \d+\nModified-Index: \d+\nTTL: 0\nIndex: \d+\n\nv\n$`).MatchString(res.stdout) {
			t.Errorf("set -o extended: exit %d %q %q", res.exitCode, res.stdout, res.stderr)
		}
		res = etcdctl2(t, all, "-o", "json", "get", "/ext")
		var ev map[string]any
		if err := json.Unmarshal([]byte(res.stdout), &ev); err != nil || ev["action"] != "get" {
			t.Errorf("get -o json: %q (%v)", res.stdout, err)
		}
	})

	t.Run("Watch", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), etcdctlTimeout)
		defer cancel()
		start := func(args ...string) (*exec.Cmd, *strings.Builder) {
			full := append([]string{"--endpoints=" + strings.Join(one, ",")}, args...)
			cmd := exec.CommandContext(ctx, etcdctlPath(t), full...)
			cmd.Env = append(memberproc.Env(), "ETCDCTL_API=2")
			cmd.SysProcAttr = memberproc.SysProcAttr()
			var out strings.Builder
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			return cmd, &out
		}
		// Each waits from the index after the current one, so none can miss
		// the writes below however late it starts.
		after := fmt.Sprint(v2Do(t, "GET", one[0]+"/v2/keys/", nil).index(t))
		watch, watchOut := start("watch", "--after-index", after, "/wk")
		rwatch, rwatchOut := start("watch", "--after-index", after, "--recursive", "/wd")
		// (etcdctl 3.4's exec-watch runs no command at all, against etcd
		// 3.4 as against noded: its watcher never fires. It is not tested.)
		defer func() {
			for _, cmd := range []*exec.Cmd{watch, rwatch} {
				memberproc.KillGroup(cmd)
				cmd.Wait()
			}
		}()
		wantCtl2(t, all, "hello\n", "set", "/wk", "hello")
		wantCtl2(t, all, "v\n", "set", "/wd/sub/k", "v")
		if err := watch.Wait(); err != nil || watchOut.String() != "hello\n" {
			t.Errorf("etcdctl watch /wk: %v, output %q, want hello", err, watchOut.String())
		}
		if err := rwatch.Wait(); err != nil || rwatchOut.String() != "[set] /wd/sub/k\nv\n" {
			t.Errorf("etcdctl watch --recursive /wd: %v, output %q", err, rwatchOut.String())
		}
	})

	// etcd refuses membership changes until every member has been
	// connected for 5 s (its strict reconfig check): give it that.
	time.Sleep(6 * time.Second)

	t.Run("ClusterHealthAndMembers", func(t *testing.T) {
		res := etcdctl2(t, all, "cluster-health")
		lines := strings.Split(strings.TrimRight(res.stdout, "\n"), "\n")
		if res.exitCode != 0 || len(lines) != 4 || lines[3] != "cluster is healthy" {
			t.Errorf("cluster-health: exit %d %q %q", res.exitCode, res.stdout, res.stderr)
		}
		for _, l := range lines[:len(lines)-1] {
			if !regexp.MustCompile(`^member [0-9a-f]+ is healthy: got healthy result from http://127\.0\.0\.1:\d+$`).MatchString(l) {
				t.Errorf("cluster-health line %q", l)
			}
		}
		res = etcdctl2(t, all, "member", "list")
		lines = strings.Split(strings.TrimRight(res.stdout, "\n"), "\n")
		leaders := 0
		for _, l := range lines {
			m := regexp.MustCompile(`^[0-9a-f]+: name=(m\d) peerURLs=http://127\.0\.0\.1:\d+ clientURLs=http://127\.0\.0\.1:\d+ isLeader=(true|false)$`).FindStringSubmatch(l)
			if m == nil {
				t.Errorf("member list line %q", l)
				continue
			}
			if m[2] == "true" {
				leaders++
			}
		}
		if res.exitCode != 0 || len(lines) != 3 || leaders != 1 {
			t.Errorf("member list: exit %d %q, want 3 members and one leader", res.exitCode, res.stdout)
		}
		ports := freePorts(t, 2)
		peer := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
		res = etcdctl2(t, all, "member", "add", "m9", peer)
		m := regexp.MustCompile(`^Added member named m9 with ID ([0-9a-f]+) to cluster\n\nETCD_NAME="m9"\nETCD_INITIAL_CLUSTER="(.*)"\nETCD_INITIAL_CLUSTER_STATE="existing"\n$`).FindStringSubmatch(res.stdout)
		if res.exitCode != 0 || m == nil || !strings.Contains(m[2], "m9="+peer) {
			t.Fatalf("member add: exit %d %q %q", res.exitCode, res.stdout, res.stderr)
		}
		id := m[1]
		peer2 := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
		wantCtl2(t, all, fmt.Sprintf("Updated member with ID %s in cluster\n", id), "member", "update", id, peer2)
		wantCtl2(t, all, fmt.Sprintf("Removed member %s from cluster\n", id), "member", "remove", id)
		wantCtl2Error(t, all, 1, `Couldn't find a member in the cluster with an ID of 1234\.`, "member", "remove", "1234")
	})

	t.Run("MembersHTTP", func(t *testing.T) {
		base := c.members[0].clientURL + "/v2/members"
		ports := freePorts(t, 2)
		peer := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
		post := func(ct, body string) v2Reply {
			req, _ := http.NewRequestWithContext(ctxTimeout(t), "POST", base, strings.NewReader(body))
			req.Header.Set("Content-Type", ct)
			return v2Send(t, req)
		}
		// Refusals first: a member added and not started makes etcd refuse
		// further changes as unsafe.
		wantMessage := func(r v2Reply, status int, message string) {
			t.Helper()
			if r.status != status || r.body != `{"message":"`+message+`"}` {
				t.Errorf("got %d %q, want %d {\"message\":%q}", r.status, r.body, status, message)
			}
		}
		wantMessage(post("application/json", `{"peerURLs":["`+c.members[1].peerURL+`"]}`), http.StatusConflict, "membership: peerURL exists")
		wantMessage(post("application/x-www-form-urlencoded", `{"peerURLs":["`+peer+`"]}`), http.StatusUnsupportedMediaType, "Bad Content-Type application/x-www-form-urlencoded, accept application/json")
		wantMessage(post("application/json", `{"peerURLs":["bad"]}`), http.StatusBadRequest, "URL scheme must be http, https, unix, or unixs: bad")
		wantMessage(post("application/json", `xx`), http.StatusBadRequest, "invalid character 'x' looking for beginning of value")
		r := post("application/json", `{"peerURLs":["`+peer+`"]}`)
		var added struct {
			ID         string   `json:"id"`
			Name       string   `json:"name"`
			PeerURLs   []string `json:"peerURLs"`
			ClientURLs []string `json:"clientURLs"`
		}
		if err := json.Unmarshal([]byte(r.body), &added); err != nil || r.status != http.StatusCreated || added.ID == "" ||
			added.Name != "" || len(added.PeerURLs) != 1 || added.PeerURLs[0] != peer || added.ClientURLs == nil || len(added.ClientURLs) != 0 {
			t.Fatalf("POST /v2/members: %d %q (%v)", r.status, r.body, err)
		}
		if !strings.Contains(r.body, `"clientURLs":[]`) {
			t.Errorf("POST /v2/members: %q, want clientURLs as an empty list", r.body)
		}
		peer2 := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
		req, _ := http.NewRequestWithContext(ctxTimeout(t), "PUT", base+"/"+added.ID, strings.NewReader(`{"peerURLs":["`+peer2+`"]}`))
		req.Header.Set("Content-Type", "application/json")
		if r := v2Send(t, req); r.status != http.StatusNoContent {
			t.Errorf("PUT /v2/members/%s: %d %q, want 204", added.ID, r.status, r.body)
		}
		if r := v2Do(t, "GET", base, nil); !strings.Contains(r.body, `"peerURLs":["`+peer2+`"]`) {
			t.Errorf("GET /v2/members after the update: %q, want %s", r.body, peer2)
		}
		if r := v2Do(t, "DELETE", base+"/"+added.ID, nil); r.status != http.StatusNoContent {
			t.Errorf("DELETE /v2/members/%s: %d %q, want 204", added.ID, r.status, r.body)
		}
		wantMessage(v2Do(t, "DELETE", base+"/"+added.ID, nil), http.StatusGone, "Member permanently removed: "+added.ID)
		wantMessage(v2Do(t, "DELETE", base+"/zz", nil), http.StatusNotFound, "No such member: zz")
		wantMessage(v2Do(t, "DELETE", base+"/1234", nil), http.StatusNotFound, "No such member: 1234")
		r = v2Do(t, "GET", base+"/leader", nil)
		if r.status != http.StatusOK || !strings.Contains(r.body, `"name":"m`) {
			t.Errorf("GET /v2/members/leader: %d %q", r.status, r.body)
		}
	})

	t.Run("MachinesAndStats", func(t *testing.T) {
		r := v2Do(t, "GET", c.members[0].clientURL+"/v2/machines", nil)
		got := strings.Split(r.body, ", ")
		sort.Strings(got)
		want := append([]string(nil), all...)
		sort.Strings(want)
		if r.status != http.StatusOK || strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("GET /v2/machines: %d %q, want %v", r.status, r.body, want)
		}
		leader := c.leader(t, c.client(t))
		for i, m := range c.members {
			r := v2Do(t, "GET", m.clientURL+"/v2/stats/self", nil)
			var self struct {
				Name       string `json:"name"`
				ID         string `json:"id"`
				State      string `json:"state"`
				LeaderInfo struct {
					Leader string `json:"leader"`
				} `json:"leaderInfo"`
			}
			wantState := "StateFollower"
			if i == leader {
				wantState = "StateLeader"
			}
			if err := json.Unmarshal([]byte(r.body), &self); err != nil || r.status != http.StatusOK || self.Name != m.name || self.State != wantState || self.LeaderInfo.Leader == "" {
				t.Errorf("GET %s /v2/stats/self: %d %q (%v), want name %s state %s", m.name, r.status, r.body, err, m.name, wantState)
			}
			r = v2Do(t, "GET", m.clientURL+"/v2/stats/leader", nil)
			if i != leader {
				if r.status != http.StatusForbidden || r.body != `{"message":"not current leader"}` {
					t.Errorf("GET %s /v2/stats/leader on a follower: %d %q", m.name, r.status, r.body)
				}
				continue
			}
			var ls struct {
				Leader    string                    `json:"leader"`
				Followers map[string]map[string]any `json:"followers"`
			}
			if err := json.Unmarshal([]byte(r.body), &ls); err != nil || r.status != http.StatusOK || len(ls.Followers) != 2 {
				t.Errorf("GET /v2/stats/leader on the leader: %d %q (%v), want two followers", r.status, r.body, err)
			}
		}
	})
}
