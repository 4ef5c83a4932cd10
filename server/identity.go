package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	stdnet "net"

	"google.golang.org/grpc/credentials"
)

// The client port terminates TLS itself (package connmux) and hands the
// gRPC server connections whose handshake is done. muxCredentials tells
// gRPC what each connection is, so that a handler finds the client's TLS
// state where gRPC keeps it: peer.FromContext(ctx).AuthInfo is a
// credentials.TLSInfo for a TLS connection (auth.CommonNameFromContext
// reads the user from it). HTTP handlers see it as Request.TLS (connmux
// hands net/http the *tls.Conn itself). The JSON gateway's in-memory
// connection carries no client's certificate (gatewayAuthInfo).

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

// leafOf is the certificate a TLS client presented, if any (for logs).
func leafOf(state *tls.ConnectionState) *x509.Certificate {
	if state == nil || len(state.PeerCertificates) == 0 {
		return nil
	}
	return state.PeerCertificates[0]
}
