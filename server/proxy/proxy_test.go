package proxy

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// deadEndpoint is an address nothing listens on.
func deadEndpoint(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

func startProxy(t *testing.T, mode string, endpoints ...string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p, err := Start(Config{Mode: mode, Listeners: []net.Listener{l}, Endpoints: endpoints, FailureWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return "http://" + l.Addr().String()
}

func do(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestHTTPFailover: requests go to an endpoint that answers, past one that
// does not, every time; a readonly proxy refuses writes with 501.
func TestHTTPFailover(t *testing.T) {
	live := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, r.Method+" "+r.URL.Path+" "+string(b))
	}))
	defer live.Close()
	dead := deadEndpoint(t)
	on := startProxy(t, ModeOn, dead, live.URL)
	for i := 0; i < 4; i++ {
		if code, body := do(t, "PUT", on+"/v2/keys/a", "value=1"); code != 200 || body != "PUT /v2/keys/a value=1" {
			t.Fatalf("PUT through the proxy: %d %q", code, body)
		}
	}
	ro := startProxy(t, ModeReadonly, dead, live.URL)
	if code, body := do(t, "GET", ro+"/v2/keys/a", ""); code != 200 || body != "GET /v2/keys/a " {
		t.Errorf("GET through a readonly proxy: %d %q", code, body)
	}
	if code, _ := do(t, "PUT", ro+"/v2/keys/a", "value=1"); code != http.StatusNotImplemented {
		t.Errorf("PUT through a readonly proxy: %d, want 501", code)
	}
	none := startProxy(t, ModeOn, dead)
	if code, body := do(t, "GET", none+"/v2/keys/a", ""); code != http.StatusServiceUnavailable {
		t.Errorf("GET with no endpoint up: %d %q, want 503", code, body)
	}
}

// TestGatewayPipes: the gateway copies bytes both ways to a live endpoint.
func TestGatewayPipes(t *testing.T) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	gw := startProxy(t, ModeGateway, deadEndpoint(t), "http://"+echo.Addr().String())
	c, err := net.Dial("tcp", strings.TrimPrefix(gw, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "PRI * HTTP/2.0 anything")
	buf := make([]byte, 23)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "PRI * HTTP/2.0 anything" {
		t.Fatalf("echo through the gateway: %q %v", buf, err)
	}
}
