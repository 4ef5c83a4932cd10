package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	stdnet "net"
	"net/http"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// The client port terminates TLS itself (package connmux) and hands the
// gRPC server connections whose handshake is done. muxCredentials tells
// gRPC what each connection is, so that a handler finds the client's TLS
// state where gRPC keeps it: peer.FromContext(ctx).AuthInfo is a
// credentials.TLSInfo for a TLS connection. HTTP handlers see it as
// Request.TLS (connmux hands net/http the *tls.Conn itself).
//
// The JSON gateway reaches the gRPC server over an in-memory connection,
// one for all HTTP clients; it passes the verified client certificate's CN
// of each request in gatewayClientCNKey, which is believed only on that
// connection (gatewayAuthInfo), never from a network client.

// gatewayClientCNKey carries, from the JSON gateway to the gRPC server, the
// CN of the HTTP client's verified certificate.
const gatewayClientCNKey = "noded-gateway-client-cn"

// muxCredentials are the gRPC server's transport credentials on the client
// port: they perform no handshake, they describe the one connmux did.
type muxCredentials struct{}

// gatewayAuthInfo marks the JSON gateway's in-memory connection.
type gatewayAuthInfo struct{ credentials.CommonAuthInfo }

func (gatewayAuthInfo) AuthType() string { return "noded-gateway" }

// plainAuthInfo marks a plain-http connection.
type plainAuthInfo struct{ credentials.CommonAuthInfo }

func (plainAuthInfo) AuthType() string { return "insecure" }

func (muxCredentials) ServerHandshake(conn stdnet.Conn) (stdnet.Conn, credentials.AuthInfo, error) {
	switch c := conn.(type) {
	case *tls.Conn:
		return conn, credentials.TLSInfo{
			State:          c.ConnectionState(),
			CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity},
		}, nil
	}
	if conn.LocalAddr().Network() == "bufconn" {
		return conn, gatewayAuthInfo{credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}}, nil
	}
	return conn, plainAuthInfo{credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}}, nil
}

func (muxCredentials) ClientHandshake(context.Context, string, stdnet.Conn) (stdnet.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("server: muxCredentials accept connections only")
}

func (muxCredentials) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls"}
}

func (c muxCredentials) Clone() credentials.TransportCredentials { return c }

func (muxCredentials) OverrideServerName(string) error { return nil }

// ClientCertCN returns the common name of the client's verified
// certificate for a gRPC call on the client port (etcd's identity for a
// call without a token when --client-cert-auth is on), and false when the
// call came without one: plain http, no certificate, or through the
// gateway from an HTTP client without one.
func ClientCertCN(ctx context.Context) (string, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", false
	}
	switch info := p.AuthInfo.(type) {
	case credentials.TLSInfo:
		return verifiedCN(&info.State)
	case gatewayAuthInfo:
		md, _ := metadata.FromIncomingContext(ctx)
		if cns := md.Get(gatewayClientCNKey); len(cns) == 1 && cns[0] != "" {
			return cns[0], true
		}
	}
	return "", false
}

// verifiedCN is the CN of the leaf of the first verified chain.
func verifiedCN(state *tls.ConnectionState) (string, bool) {
	if state == nil {
		return "", false
	}
	for _, chain := range state.VerifiedChains {
		if len(chain) > 0 && chain[0].Subject.CommonName != "" {
			return chain[0].Subject.CommonName, true
		}
	}
	return "", false
}

// gatewayMetadata passes an HTTP request's verified client CN to the gRPC
// server behind the gateway, empty when there is none: the key always has
// exactly one value of the gateway's own (gatewayHeaderMatcher keeps HTTP
// clients from adding another).
func gatewayMetadata(_ context.Context, r *http.Request) metadata.MD {
	cn, _ := verifiedCN(r.TLS)
	return metadata.Pairs(gatewayClientCNKey, cn)
}

// gatewayHeaderMatcher is the gateway's default mapping of HTTP headers to
// gRPC metadata, except that no header becomes gatewayClientCNKey.
func gatewayHeaderMatcher(key string) (string, bool) {
	name, ok := runtime.DefaultHeaderMatcher(key)
	if ok && strings.EqualFold(name, gatewayClientCNKey) {
		return "", false
	}
	return name, ok
}

// leafOf is the certificate a TLS client presented, if any (for logs).
func leafOf(state *tls.ConnectionState) *x509.Certificate {
	if state == nil || len(state.PeerCertificates) == 0 {
		return nil
	}
	return state.PeerCertificates[0]
}
