package auth

import (
	"context"
	"crypto/tls"
	"strings"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// Metadata keys: gRPC clients send "token"; the gateway forwards the HTTP
// Authorization header as "authorization".
const (
	tokenKeyGRPC    = "token"
	tokenKeyGateway = "authorization"
	// gatewayMarker is metadata the gateway adds to every call it makes: a
	// client certificate never names the user of a gateway call (etcd
	// ignores it there too, since the gateway's own connection is not the
	// client's).
	gatewayMarker = "grpcgateway-accept"
)

// TokenFromContext returns the token a call carries, without a "Bearer "
// prefix.
func TokenFromContext(ctx context.Context) (string, bool) {
	// One key at a time: FromIncomingContext would copy every header of
	// the call, on every call.
	ts := metadata.ValueFromIncomingContext(ctx, tokenKeyGRPC)
	if len(ts) == 0 {
		ts = metadata.ValueFromIncomingContext(ctx, tokenKeyGateway)
	}
	if len(ts) == 0 {
		return "", false
	}
	return strings.TrimPrefix(ts[0], "Bearer "), true
}

// CommonName is the CN of a verified client certificate: the subject of
// the first verified chain's leaf. "" when the connection has none.
func CommonName(st *tls.ConnectionState) string {
	if st == nil {
		return ""
	}
	for _, chain := range st.VerifiedChains {
		if len(chain) > 0 {
			return chain[0].Subject.CommonName
		}
	}
	return ""
}

// CommonNameFromContext is the CN of the verified client certificate of a
// gRPC call's connection; "" for a call over plain TCP, without a verified
// certificate, or through the gateway.
func CommonNameFromContext(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p == nil || p.AuthInfo == nil {
		return ""
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return ""
	}
	if len(metadata.ValueFromIncomingContext(ctx, gatewayMarker)) > 0 {
		return ""
	}
	return CommonName(&info.State)
}
