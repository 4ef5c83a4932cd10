package chaos

import (
	"net"
	"sync"
	"time"
)

// The fault proxy stands between the members: each member advertises the
// proxy's port as its peer URL and listens on another, so every
// connection to a member goes through the proxy. The proxy learns which
// member dialed (dialerSlot, from the kernel's socket table: no knowledge
// of the peer protocol, so it would work over TLS too) and forwards each
// direction only while the links table lets it. A cut direction holds its
// bytes, as a network that has stopped delivering does; TCP's own
// buffers then fill, and the member's transport times out and redials
// (through the proxy again). Loopback needs no root, so this runs in CI on
// any machine; network namespaces would need root and addresses outside
// loopback.

// links is the state of every directed link between member slots.
type links struct {
	mu      sync.Mutex
	cut     map[[2]int]bool // {from, to}
	changed chan struct{}   // closed and replaced on every change
}

func newLinks() *links {
	return &links{cut: map[[2]int]bool{}, changed: make(chan struct{})}
}

func (l *links) set(from, to int, cut bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if cut {
		l.cut[[2]int{from, to}] = true
	} else {
		delete(l.cut, [2]int{from, to})
	}
	close(l.changed)
	l.changed = make(chan struct{})
}

func (l *links) healAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cut = map[[2]int]bool{}
	close(l.changed)
	l.changed = make(chan struct{})
}

// waitOpen blocks while from->to is cut; false when done closes first.
func (l *links) waitOpen(from, to int, done <-chan struct{}) bool {
	for {
		l.mu.Lock()
		cut, changed := l.cut[[2]int{from, to}], l.changed
		l.mu.Unlock()
		if !cut {
			return true
		}
		select {
		case <-changed:
		case <-done:
			return false
		}
	}
}

// proxy forwards connections to one member's real peer listener.
type proxy struct {
	slot     int
	ln       net.Listener
	upstream string
	links    *links
	// dialer identifies the slot of the member that opened a connection.
	dialer func(c net.Conn) (int, error)
	done   chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]bool
}

// proxyChunkBytes is how much one direction reads before it waits for its
// link and writes.
const proxyChunkBytes = 32 << 10

// proxyDialTimeout bounds the connection to the member behind the proxy.
const proxyDialTimeout = 2 * time.Second

func startProxy(slot int, listenAddr, upstream string, l *links, dialer func(net.Conn) (int, error)) (*proxy, error) {
	ln, err := net.Listen("tcp", listenAddr)
	if err != nil {
		return nil, err
	}
	p := &proxy{slot: slot, ln: ln, upstream: upstream, links: l, dialer: dialer, done: make(chan struct{}), conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

func (p *proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.done:
		c.Close()
		return false
	default:
	}
	p.conns[c] = true
	return true
}

func (p *proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			return
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

func (p *proxy) serve(in net.Conn) {
	defer p.wg.Done()
	defer p.untrack(in)
	from, err := p.dialer(in)
	if err != nil {
		return // not one of the members (or it is gone already)
	}
	out, err := net.DialTimeout("tcp", p.upstream, proxyDialTimeout)
	if err != nil {
		return
	}
	if !p.track(out) {
		return
	}
	defer p.untrack(out)
	var pipes sync.WaitGroup
	pipes.Add(2)
	go func() { defer pipes.Done(); p.pipe(in, out, from, p.slot) }()
	go func() { defer pipes.Done(); p.pipe(out, in, p.slot, from) }()
	pipes.Wait()
}

// pipe copies src to dst while the link from->to is open, and closes both
// when either side ends.
func (p *proxy) pipe(src, dst net.Conn, from, to int) {
	defer src.Close()
	defer dst.Close()
	buf := make([]byte, proxyChunkBytes)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.links.waitOpen(from, to, p.done) {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return // EOF or a reset: either way the connection is over
		}
	}
}

func (p *proxy) close() {
	p.mu.Lock()
	select {
	case <-p.done:
	default:
		close(p.done)
	}
	p.ln.Close()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
