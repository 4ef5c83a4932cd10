package server

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	stdnet "net"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/noded/noded/server/connmux"
	"github.com/noded/noded/server/tlsconfig"
)

// Each listening port (client, peer, metrics) is a connmux.Mux: TLS for
// https URLs from the side's tlsconfig.Source, connection limits from the
// configuration or the file descriptor limit, and logs of refused and shed
// connections that a flood cannot turn into a flood of log lines.

// newMux wraps l for kind's port ("client", "peer", "metrics"); scheme is
// the URL's; src is the side's TLS source (nil without TLS settings).
func (m *Member) newMux(kind string, l stdnet.Listener, scheme string, src *tlsconfig.Source, routes int, classify func(connmux.Conn) int) *connmux.Mux {
	connsMax, perSourceMax := m.connectionLimits()
	cfg := connmux.Config{
		Routes:                  routes,
		Classify:                classify,
		RouteTimeout:            routeTimeout,
		ConnectionsMax:          connsMax,
		ConnectionsPerSourceMax: perSourceMax,
		OnRejected:              m.logRejected(kind),
		OnShed:                  m.logShed(kind),
	}
	if scheme == "https" {
		if kind == "peer" {
			cfg.TLS = src.ServerConfig()
		} else {
			cfg.TLS = src.ServerConfig(clientALPN...)
		}
		cfg.Check = src.CheckConn
	}
	return connmux.New(l, cfg)
}

// connectionLimits are the per-port bounds: the configuration's, or three
// quarters of the file descriptor limit.
func (m *Member) connectionLimits() (connsMax, perSourceMax int) {
	connsMax = m.cfg.ConnectionsMax
	if connsMax <= 0 {
		connsMax = connmux.DefaultConnectionsFor(fileLimit())
	}
	return connsMax, m.cfg.ConnectionsPerSourceMax
}

// rejectLogBurst and rejectLogInterval bound the log lines about refused
// connections: a burst, then one per interval with the count of those not
// logged.
const (
	rejectLogBurst    = 20
	rejectLogInterval = time.Second
)

// logLimiter lets a burst of lines through, then one per interval.
type logLimiter struct {
	mu         sync.Mutex
	tokens     int
	refilled   time.Time
	suppressed int
}

// allow reports whether to log now and how many lines were dropped since
// the last one logged.
func (l *logLimiter) allow(now time.Time) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.refilled.IsZero() {
		l.tokens, l.refilled = rejectLogBurst, now
	}
	if gained := int(now.Sub(l.refilled) / rejectLogInterval); gained > 0 {
		l.tokens = min(rejectLogBurst, l.tokens+gained)
		l.refilled = l.refilled.Add(time.Duration(gained) * rejectLogInterval)
	}
	if l.tokens == 0 {
		l.suppressed++
		return false, 0
	}
	l.tokens--
	dropped := l.suppressed
	l.suppressed = 0
	return true, dropped
}

// logRejected logs a connection closed before it was routed: on a TLS
// port a failed handshake or check, with etcd's message and fields; on a
// plain port (nothing routable arrived in time) at debug level.
func (m *Member) logRejected(kind string) func(stdnet.Conn, *tls.ConnectionState, error) {
	limiter := &logLimiter{}
	msg := fmt.Sprintf("rejected connection on %s endpoint", kind)
	return func(conn stdnet.Conn, state *tls.ConnectionState, err error) {
		logf := m.lg.Warn
		if state == nil || errors.Is(err, io.EOF) {
			logf = m.lg.Debug
		} else if ok, dropped := limiter.allow(time.Now()); !ok {
			return
		} else if dropped > 0 {
			m.lg.Warn(fmt.Sprintf("%d more connections were rejected on the %s endpoint and not logged", dropped, kind))
		}
		fields := []zap.Field{zap.String("remote-addr", conn.RemoteAddr().String())}
		if state != nil {
			fields = append(fields, zap.String("server-name", state.ServerName))
		}
		if leaf := leafOf(state); leaf != nil {
			ips := make([]string, len(leaf.IPAddresses))
			for i, ip := range leaf.IPAddresses {
				ips[i] = ip.String()
			}
			fields = append(fields, zap.Strings("ip-addresses", ips), zap.Strings("dns-names", leaf.DNSNames))
		}
		logf(msg, append(fields, zap.Error(err))...)
	}
}

// logShed logs connections closed or refused to stay within the limits.
func (m *Member) logShed(kind string) func(stdnet.Addr, string) {
	limiter := &logLimiter{}
	return func(remote stdnet.Addr, reason string) {
		ok, dropped := limiter.allow(time.Now())
		if !ok {
			return
		}
		m.lg.Warn(fmt.Sprintf("%s endpoint at its connection limit", kind),
			zap.String("remote-addr", remote.String()), zap.String("action", reason), zap.Int("not-logged-before", dropped))
	}
}
