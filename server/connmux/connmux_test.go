package connmux

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/noded/noded/server/tlsconfig/testpki"
)

const waitMax = 30 * time.Second

// echoPort serves a Mux with two routes: connections opening with "PING"
// get "PONG" back, any other gets an HTTP server.
type echoPort struct {
	mux  *Mux
	addr string
	http *http.Server
	wg   sync.WaitGroup
}

func startEchoPort(t *testing.T, cfg Config) *echoPort {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Routes = 2
	if cfg.Classify == nil {
		cfg.Classify = func(c Conn) int {
			head, err := c.Peek(4)
			switch {
			case string(head) == "PING":
				return 0
			case len(head) == 0 && err != nil:
				return Reject
			}
			return 1
		}
	}
	p := &echoPort{mux: New(l, cfg), addr: l.Addr().String()}
	p.http = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil {
			fmt.Fprintf(w, "tls %s", r.TLS.NegotiatedProtocol)
			return
		}
		fmt.Fprint(w, "plain")
	})}
	p.wg.Add(3)
	go func() { defer p.wg.Done(); p.mux.Serve() }()
	go func() { defer p.wg.Done(); p.http.Serve(p.mux.Listener(1)) }()
	go func() {
		defer p.wg.Done()
		l := p.mux.Listener(0)
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go echo(conn)
		}
	}()
	t.Cleanup(func() {
		p.mux.Close()
		p.http.Close()
		p.wg.Wait()
	})
	return p
}

// echo answers every "PING" with "PONG" until the connection ends.
func echo(conn net.Conn) {
	defer conn.Close()
	buf := make([]byte, 4)
	for {
		if _, err := io.ReadFull(conn, buf); err != nil {
			return
		}
		if _, err := conn.Write([]byte("PONG")); err != nil {
			return
		}
	}
}

// ping dials addr from localIP (empty: any) and exchanges a PING.
func ping(addr, localIP string) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	if localIP != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(localIP)}
	}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	if err := pingOn(conn); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

func pingOn(conn net.Conn) error {
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	defer conn.SetDeadline(time.Time{})
	if _, err := conn.Write([]byte("PING")); err != nil {
		return err
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(conn, buf); err != nil {
		return err
	}
	if string(buf) != "PONG" {
		return fmt.Errorf("answer %q", buf)
	}
	return nil
}

// idleFlood opens n connections from localIP that send nothing.
func idleFlood(t *testing.T, addr, localIP string, n int) []net.Conn {
	t.Helper()
	var conns []net.Conn
	d := net.Dialer{Timeout: 5 * time.Second}
	if localIP != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(localIP)}
	}
	for range n {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("flood connection %d: %v", len(conns), err)
		}
		conns = append(conns, c)
	}
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	return conns
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitMax)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Hundreds of silent connections, each waiting out a long route timeout,
// take nothing from new clients: both routes still serve at once.
func TestIdleConnectionsDoNotShutOthersOut(t *testing.T) {
	p := startEchoPort(t, Config{RouteTimeout: time.Minute})
	idleFlood(t, p.addr, "", 600)
	waitFor(t, "600 connections routing", func() bool { return p.mux.Stats().Routing == 600 })
	conn, err := ping(p.addr, "")
	if err != nil {
		t.Fatalf("a client behind 600 idle connections: %v", err)
	}
	conn.Close()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + p.addr + "/")
	if err != nil {
		t.Fatalf("HTTP behind 600 idle connections: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "plain" {
		t.Errorf("HTTP answered %q", body)
	}
	if st := p.mux.Stats(); st.Shed != 0 || st.Refused != 0 {
		t.Errorf("nothing should be shed below the limits: %+v", st)
	}
}

// A silent connection is closed after the route timeout.
func TestSilentConnectionClosedAfterRouteTimeout(t *testing.T) {
	var rejected sync.Map
	p := startEchoPort(t, Config{RouteTimeout: 100 * time.Millisecond, OnRejected: func(conn net.Conn, _ *tls.ConnectionState, err error) {
		rejected.Store(conn.RemoteAddr().String(), err)
	}})
	c := idleFlood(t, p.addr, "", 1)[0]
	c.SetReadDeadline(time.Now().Add(waitMax))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("silent connection: read %v, want EOF", err)
	}
	waitFor(t, "the rejection reported", func() bool { _, ok := rejected.Load(c.LocalAddr().String()); return ok })
	if st := p.mux.Stats(); st.Open != 0 || st.Rejected != 1 {
		t.Errorf("stats %+v, want nothing open and one rejected", st)
	}
}

// At ConnectionsMax the oldest idle connection makes room: a flood four
// times the limit keeps the count at the limit, and a client still gets
// through.
func TestLimitShedsOldestIdle(t *testing.T) {
	var shed sync.Map
	p := startEchoPort(t, Config{RouteTimeout: time.Minute, ConnectionsMax: 50, OnShed: func(remote net.Addr, reason string) {
		shed.Store(remote.String(), reason)
	}})
	busy, err := ping(p.addr, "")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	flood := idleFlood(t, p.addr, "", 200)
	waitFor(t, "the flood accepted", func() bool { return p.mux.Stats().Accepted == 201 })
	st := p.mux.Stats()
	if st.Open != 50 || st.Shed != 151 || st.Refused != 0 {
		t.Fatalf("stats %+v, want 50 open and 151 shed", st)
	}
	// The oldest flood connections went, the newest stayed; the busy one
	// (routed and active) was never a candidate.
	if _, ok := shed.Load(flood[0].LocalAddr().String()); !ok {
		t.Errorf("the oldest idle connection was not shed")
	}
	if _, ok := shed.Load(flood[199].LocalAddr().String()); ok {
		t.Errorf("the newest connection was shed")
	}
	if err := pingOn(busy); err != nil {
		t.Errorf("the busy connection was closed: %v", err)
	}
	conn, err := ping(p.addr, "")
	if err != nil {
		t.Fatalf("a client at the limit: %v", err)
	}
	conn.Close()
}

// One source at its limit sheds its own connections, not another's.
func TestPerSourceLimit(t *testing.T) {
	p := startEchoPort(t, Config{RouteTimeout: time.Minute, ConnectionsPerSourceMax: 20})
	others := idleFlood(t, p.addr, "127.0.0.1", 10)
	if _, err := net.Dial("tcp", p.addr); err != nil {
		t.Fatal(err)
	}
	if c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}).Dial("tcp", p.addr); err != nil {
		t.Skipf("cannot dial from 127.0.0.2 here: %v", err)
	} else {
		c.Close()
	}
	idleFlood(t, p.addr, "127.0.0.2", 100)
	waitFor(t, "the flood accepted", func() bool { return p.mux.Stats().Accepted == 112 })
	st := p.mux.Stats()
	// The probe from 127.0.0.2 was shed or rejected, whichever came first.
	if st.Open != 31 || st.Shed+st.Rejected != 81 || st.Shed < 80 {
		t.Fatalf("stats %+v, want 31 open (11 + 20) and 80 shed besides the probe", st)
	}
	for _, c := range others {
		c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); err == io.EOF {
			t.Fatalf("a connection of the other source was closed")
		}
	}
}

// With every connection busy at the limit, the new one is refused and the
// busy ones keep working.
func TestRefusedWhenAllBusy(t *testing.T) {
	p := startEchoPort(t, Config{ConnectionsMax: 5})
	var busy []net.Conn
	for range 5 {
		c, err := ping(p.addr, "")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		busy = append(busy, c)
	}
	extra, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	extra.SetReadDeadline(time.Now().Add(waitMax))
	if _, err := extra.Read(make([]byte, 1)); err == nil {
		t.Fatal("the sixth connection was served")
	}
	if st := p.mux.Stats(); st.Refused != 1 || st.Open != 5 {
		t.Errorf("stats %+v, want one refused and five open", st)
	}
	for _, c := range busy {
		if err := pingOn(c); err != nil {
			t.Errorf("busy connection: %v", err)
		}
	}
}

// Idle routed connections are shed after IdleAfter, still after the ones
// being routed.
func TestIdleRoutedConnectionsShedAfterIdleAfter(t *testing.T) {
	p := startEchoPort(t, Config{ConnectionsMax: 3, IdleAfter: time.Nanosecond})
	quiet, err := ping(p.addr, "")
	if err != nil {
		t.Fatal(err)
	}
	defer quiet.Close()
	idleFlood(t, p.addr, "", 2)
	waitFor(t, "three open", func() bool { return p.mux.Stats().Open == 3 })
	// The clock ticks once a second; wait until the quiet one counts as
	// idle, then the fourth takes a routing one's place first.
	time.Sleep(2 * clockTick)
	if _, err := net.Dial("tcp", p.addr); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "one shed", func() bool { return p.mux.Stats().Shed == 1 })
	if err := pingOn(quiet); err != nil {
		t.Fatalf("the routed connection went before one still routing: %v", err)
	}
}

// On a TLS port the route is chosen by ALPN and the server receives the
// *tls.Conn itself (net/http then sets Request.TLS); a peeked TLS
// connection replays its bytes; a failed handshake is reported.
func TestTLSRouting(t *testing.T) {
	ca := testpki.NewCA(t, "connmux CA")
	cert := ca.Issue(t, testpki.Leaf{CommonName: "server", IPs: []string{"127.0.0.1"}, Server: true}).TLSCertificate(t)
	serverTLS := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1", "echo"}}
	var rejections sync.Map
	p := startEchoPort(t, Config{
		TLS: serverTLS,
		Classify: func(c Conn) int {
			if c.TLS.NegotiatedProtocol == "echo" {
				return 0
			}
			head, _ := c.Peek(4)
			if string(head) == "PING" {
				return 0
			}
			return 1
		},
		OnRejected: func(conn net.Conn, _ *tls.ConnectionState, err error) {
			rejections.Store(conn.RemoteAddr().String(), err)
		},
	})
	clientTLS := &tls.Config{RootCAs: ca.Pool()}

	resp, err := (&http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: clientTLS, ForceAttemptHTTP2: true}}).Get("https://" + p.addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "tls http/1.1" {
		t.Errorf("HTTPS answered %q, want the TLS state seen by the handler and http/1.1 preferred to h2", body)
	}
	// A peeked TLS connection still shows its state to net/http.
	raw, err := tls.Dial("tcp", p.addr, &tls.Config{RootCAs: ca.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(raw, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	all, _ := io.ReadAll(raw)
	raw.Close()
	if !strings.HasSuffix(string(all), "\r\n\r\ntls ") {
		t.Errorf("HTTP over a peeked TLS connection answered %q", all)
	}

	for _, protos := range [][]string{{"echo"}, nil} {
		cfg := clientTLS.Clone()
		cfg.NextProtos = protos
		conn, err := tls.Dial("tcp", p.addr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := pingOn(conn); err != nil {
			t.Errorf("PING over TLS with ALPN %v: %v", protos, err)
		}
		conn.Close()
	}

	plain, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	plain.Write([]byte("PINGPING"))
	plain.SetReadDeadline(time.Now().Add(waitMax))
	if _, err := plain.Read(make([]byte, 4)); err == nil {
		t.Error("plain bytes on a TLS port were answered")
	}
	plain.Close()
	waitFor(t, "the failed handshake reported", func() bool { _, ok := rejections.Load(plain.LocalAddr().String()); return ok })
}

// A TLS connection chosen by ALPN is handed over as a *tls.Conn.
func TestTLSConnHandedOverAsIs(t *testing.T) {
	ca := testpki.NewCA(t, "connmux CA")
	cert := ca.Issue(t, testpki.Leaf{CommonName: "server", IPs: []string{"127.0.0.1"}, Server: true}).TLSCertificate(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := New(l, Config{TLS: &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}}, Routes: 1, Classify: func(Conn) int { return 0 }})
	go m.Serve()
	defer m.Close()
	go func() {
		conn, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{RootCAs: ca.Pool(), NextProtos: []string{"h2"}})
		if err == nil {
			defer conn.Close()
			bufio.NewReader(conn).ReadByte()
		}
	}()
	conn, err := m.Listener(0).Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tc, ok := conn.(*tls.Conn)
	if !ok {
		t.Fatalf("route received a %T, want *tls.Conn", conn)
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Errorf("negotiated %q", p)
	}
	if !strings.HasPrefix(conn.RemoteAddr().String(), "127.0.0.1:") {
		t.Errorf("remote address %s", conn.RemoteAddr())
	}
}
