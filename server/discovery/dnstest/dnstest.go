// Package dnstest is an authoritative DNS server on loopback for tests of
// DNS SRV discovery: SRV and A records set by the test, served over UDP
// and TCP with github.com/miekg/dns. Unknown names get NXDOMAIN.
//
// dnstest may import the standard library and github.com/miekg/dns.
package dnstest

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"

	"github.com/miekg/dns"
)

// Server serves the records it was given.
type Server struct {
	// Addr is the host:port it serves on (UDP and TCP).
	Addr string

	mu      sync.Mutex
	records map[string][]dns.RR // by lower-case FQDN
	udp     *dns.Server
	tcp     *dns.Server
}

// Start serves on addr ("127.0.0.1:0" picks a port; a fixed port, such as
// 53 on a loopback address of its own, serves resolvers that cannot be
// told a port).
func Start(addr string) (*Server, error) {
	var pc net.PacketConn
	var l net.Listener
	var err error
	// With port 0 the UDP port picked may be taken for TCP: pick again.
	for attempt := 0; attempt < 20; attempt++ {
		pc, err = net.ListenPacket("udp", addr)
		if err != nil {
			return nil, err
		}
		l, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
		if !strings.HasSuffix(addr, ":0") {
			return nil, err
		}
	}
	if err != nil {
		return nil, err
	}
	s := &Server{Addr: pc.LocalAddr().String(), records: map[string][]dns.RR{}}
	s.udp = &dns.Server{PacketConn: pc, Handler: s}
	s.tcp = &dns.Server{Listener: l, Handler: s}
	started := make(chan struct{}, 2)
	s.udp.NotifyStartedFunc = func() { started <- struct{}{} }
	s.tcp.NotifyStartedFunc = func() { started <- struct{}{} }
	go s.udp.ActivateAndServe()
	go s.tcp.ActivateAndServe()
	<-started
	<-started
	return s, nil
}

// Close stops serving.
func (s *Server) Close() {
	s.udp.Shutdown()
	s.tcp.Shutdown()
}

func (s *Server) add(rr dns.RR) {
	s.mu.Lock()
	defer s.mu.Unlock()
	name := strings.ToLower(rr.Header().Name)
	s.records[name] = append(s.records[name], rr)
}

// AddSRV adds an SRV record: name is the full service name
// (_etcd-server._tcp.example.test), target a host name.
func (s *Server) AddSRV(name, target string, port uint16) {
	s.add(&dns.SRV{Hdr: dns.RR_Header{Name: dns.Fqdn(name), Rrtype: dns.TypeSRV, Class: dns.ClassINET, Ttl: 1},
		Priority: 0, Weight: 10, Port: port, Target: dns.Fqdn(target)})
}

// AddA adds an A record.
func (s *Server) AddA(name, ip string) {
	s.add(&dns.A{Hdr: dns.RR_Header{Name: dns.Fqdn(name), Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 1}, A: net.ParseIP(ip).To4()})
}

// ServeDNS answers from the records.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	s.mu.Lock()
	found := false
	for _, q := range req.Question {
		for _, rr := range s.records[strings.ToLower(q.Name)] {
			found = true
			if rr.Header().Rrtype == q.Qtype {
				m.Answer = append(m.Answer, dns.Copy(rr))
			}
		}
	}
	s.mu.Unlock()
	if !found {
		m.Rcode = dns.RcodeNameError
	}
	w.WriteMsg(m)
}

// Resolver is a Go resolver that asks only this server.
func (s *Server) Resolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, s.Addr)
	}}
}

// ResolvConf is a resolv.conf naming this server (which must serve on
// port 53, the only port resolv.conf can name).
func (s *Server) ResolvConf() (string, error) {
	host, port, err := net.SplitHostPort(s.Addr)
	if err != nil || port != "53" {
		return "", fmt.Errorf("dnstest: %s is not on port 53", s.Addr)
	}
	return "nameserver " + host + "\noptions attempts:1 timeout:2\n", nil
}
