// Package tlsconfig turns etcd's TLS settings into the *tls.Config values a
// member serves and dials with: one Source per side (the client port, the
// peer port), built from the certificate, key, trusted CA and CRL files, or
// from a self-signed certificate it generates (--auto-tls,
// --peer-auto-tls), with etcd's cipher suite and version names and its
// checks of client certificates (allowed CNs and hostnames, CRLs, the peer
// port's SAN check).
//
// Every file is read and checked once by New, so that bad input (a missing
// or unreadable file, a key that does not match its certificate, an expired
// certificate, an unknown cipher suite) stops a member before it listens,
// with an error naming the flag and the file. Afterwards the certificate
// and key files, and the CRL, are re-read whenever they change on disk: a
// rotated certificate is served from the next handshake on, without a
// restart. A changed file that does not load (half written, a key that
// does not match yet, an expired certificate) is logged and the previous
// one kept. The trusted CA file is read once, as etcd reads it.
//
// The same Source serves the client listener, the peer listener and the
// connections the member dials (package net's transport, forwarding to the
// leader, joining a cluster): package net takes the *tls.Config and never
// reads a file.
//
// tlsconfig may import the standard library, go.uber.org/zap and
// go.etcd.io/etcd/client/pkg/v3/tlsutil (etcd's names of cipher suites and
// versions). It imports no noded package.
package tlsconfig

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/tlsutil"
	"go.uber.org/zap"
)

// Side says which port a Source is for; it picks the flag names in errors
// and the checks etcd makes on that port.
type Side string

const (
	Client Side = "client"
	Peer   Side = "peer"
)

// Settings are one side's TLS flags (--cert-file ... for the client side,
// --peer-cert-file ... for the peer side), or the same keys of the config
// file's client-transport-security / peer-transport-security maps.
type Settings struct {
	CertFile string
	KeyFile  string
	// ClientCertFile and ClientKeyFile are the certificate presented when
	// this member dials (etcd's --client-cert-file, --peer-client-cert-file);
	// empty: CertFile and KeyFile.
	ClientCertFile string
	ClientKeyFile  string
	TrustedCAFile  string
	// ClientCertAuth requires a client certificate signed by TrustedCAFile
	// (as etcd, a TrustedCAFile alone requires one too).
	ClientCertAuth bool
	CRLFile        string
	// AllowedCNs and AllowedHostnames restrict the client certificates
	// accepted: the CN must be one of AllowedCNs, or the certificate valid
	// for one of AllowedHostnames. They are mutually exclusive.
	AllowedCNs       []string
	AllowedHostnames []string
	// SkipClientSANVerify turns off the peer port's check that a client
	// certificate names the address the connection comes from.
	SkipClientSANVerify bool
	// AutoTLS generates a self-signed certificate when CertFile and KeyFile
	// are empty.
	AutoTLS bool
}

// Empty reports whether the settings give no certificate (etcd's
// TLSInfo.Empty): the side then cannot serve https.
func (s Settings) Empty() bool { return s.CertFile == "" && s.KeyFile == "" && !s.AutoTLS }

// Options are what New needs besides the side's settings.
type Options struct {
	Side     Side
	Settings Settings
	// CipherSuites (etcd's names, e.g. TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
	// MinVersion and MaxVersion ("TLS1.2", "TLS1.3", or "" for Go's choice;
	// MinVersion "" is TLS 1.2) apply to both sides, as etcd's flags do.
	CipherSuites []string
	MinVersion   string
	MaxVersion   string
	// AutoTLSDir holds the generated certificate (etcd: <data-dir>/fixtures/
	// client or .../peer); AutoTLSHosts are host:port pairs whose hosts it
	// is issued for; SelfSignedCertValidityYears is its lifetime (0: 1).
	AutoTLSDir                  string
	AutoTLSHosts                []string
	SelfSignedCertValidityYears uint
	Logger                      *zap.Logger
	// Now is the clock for expiry checks; nil: time.Now.
	Now func() time.Time
}

// Source hands out *tls.Config values for one side and checks connections
// after their handshake. It is safe for concurrent use.
type Source struct {
	side        Side
	settings    Settings
	lg          *zap.Logger
	minVersion  uint16
	maxVersion  uint16
	suites      []uint16
	selfSigned  bool
	serverPair  *reloading[*tls.Certificate]
	clientPair  *reloading[*tls.Certificate]
	roots       *x509.CertPool             // TrustedCAFile; nil: the system's
	crl         *reloading[revokedSerials] // nil: no CRL
	allowedCert func(*x509.Certificate) bool
}

// ErrClientCertRejected is etcd's refusal of a verified client certificate
// whose CN or hostname is not allowed.
var ErrClientCertRejected = errors.New("client certificate authentication failed")

// flag returns the flag that sets a setting on this side: "cert-file" is
// --cert-file on the client side and --peer-cert-file on the peer side.
func (side Side) flag(name string) string {
	if side == Peer {
		switch name {
		case "crl-file":
			return "--peer-crl-file"
		case "allowed-cn":
			return "--peer-cert-allowed-cn"
		case "allowed-hostname":
			return "--peer-cert-allowed-hostname"
		}
		return "--peer-" + name
	}
	switch name {
	case "crl-file":
		return "--client-crl-file"
	case "allowed-cn":
		return "--client-cert-allowed-cn"
	case "allowed-hostname":
		return "--client-cert-allowed-hostname"
	case "auto-tls":
		return "--auto-tls"
	}
	return "--" + name
}

// ParseVersions checks --tls-min-version and --tls-max-version as etcd
// does and returns them as crypto/tls versions (0: Go's choice; the
// minimum defaults to TLS 1.2).
func ParseVersions(minName, maxName string) (minVersion, maxVersion uint16, err error) {
	if minVersion, err = tlsutil.GetTLSVersion(minName); err != nil {
		return 0, 0, fmt.Errorf("--tls-min-version: %w", err)
	}
	if maxVersion, err = tlsutil.GetTLSVersion(maxName); err != nil {
		return 0, 0, fmt.Errorf("--tls-max-version: %w", err)
	}
	if maxVersion != 0 && minVersion > maxVersion {
		return 0, 0, fmt.Errorf("min version (%s) is greater than max version (%s)", minName, maxName)
	}
	if minVersion == 0 {
		minVersion = tls.VersionTLS12
	}
	return minVersion, maxVersion, nil
}

// ParseCipherSuites maps etcd's --cipher-suites names to crypto/tls IDs.
func ParseCipherSuites(names []string, minVersion uint16) ([]uint16, error) {
	if len(names) == 0 {
		return nil, nil
	}
	if minVersion == tls.VersionTLS13 {
		return nil, errors.New("cipher suites cannot be configured when only TLS1.3 is enabled")
	}
	suites, err := tlsutil.GetCipherSuites(names)
	if err != nil {
		return nil, fmt.Errorf("--cipher-suites: %w", err)
	}
	return suites, nil
}

// New checks the settings, reads every file (generating the self-signed
// certificate first for auto TLS) and returns the side's Source. Its errors
// name the flag and the file.
func New(o Options) (*Source, error) {
	s := &Source{side: o.Side, settings: o.Settings, lg: o.Logger}
	if s.lg == nil {
		s.lg = zap.NewNop()
	}
	now := o.Now
	if now == nil {
		now = time.Now
	}
	side, set := o.Side, o.Settings
	var err error
	if s.minVersion, s.maxVersion, err = ParseVersions(o.MinVersion, o.MaxVersion); err != nil {
		return nil, err
	}
	if s.suites, err = ParseCipherSuites(o.CipherSuites, s.minVersion); err != nil {
		return nil, err
	}
	if len(set.AllowedCNs) > 0 && len(set.AllowedHostnames) > 0 {
		return nil, fmt.Errorf("%s and %s are mutually exclusive (cns=%q, hostnames=%q)",
			side.flag("allowed-cn"), side.flag("allowed-hostname"), set.AllowedCNs, set.AllowedHostnames)
	}
	if (set.CertFile == "") != (set.KeyFile == "") {
		return nil, fmt.Errorf("%s and %s must both be given (cert: %q, key: %q)", side.flag("cert-file"), side.flag("key-file"), set.CertFile, set.KeyFile)
	}
	if (set.ClientCertFile == "") != (set.ClientKeyFile == "") {
		return nil, fmt.Errorf("%s and %s must both be given (cert: %q, key: %q)", side.flag("client-cert-file"), side.flag("client-key-file"), set.ClientCertFile, set.ClientKeyFile)
	}
	certFlag, keyFlag := side.flag("cert-file"), side.flag("key-file")
	switch {
	case set.AutoTLS && set.CertFile != "":
		s.lg.Warn(fmt.Sprintf("ignoring %s auto TLS since certs given", side))
	case set.AutoTLS:
		years := o.SelfSignedCertValidityYears
		if years == 0 {
			years = 1
		}
		set.CertFile, set.KeyFile, err = selfCert(o.AutoTLSDir, o.AutoTLSHosts, years, now(), s.lg)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", side.flag("auto-tls"), err)
		}
		s.selfSigned = true
		certFlag, keyFlag = side.flag("auto-tls")+" certificate", side.flag("auto-tls")+" key"
	}
	if set.CertFile != "" {
		if s.serverPair, err = newKeyPairFile(watchedFile{set.CertFile, certFlag}, watchedFile{set.KeyFile, keyFlag}, now, s.lg); err != nil {
			return nil, err
		}
		s.clientPair = s.serverPair
	}
	if set.ClientCertFile != "" {
		cert, key := watchedFile{set.ClientCertFile, side.flag("client-cert-file")}, watchedFile{set.ClientKeyFile, side.flag("client-key-file")}
		if s.clientPair, err = newKeyPairFile(cert, key, now, s.lg); err != nil {
			return nil, err
		}
	}
	if set.TrustedCAFile != "" {
		if s.roots, err = loadCertPool(watchedFile{set.TrustedCAFile, side.flag("trusted-ca-file")}); err != nil {
			return nil, err
		}
	}
	if set.CRLFile != "" {
		if s.crl, err = newCRLFile(watchedFile{set.CRLFile, side.flag("crl-file")}, s.lg); err != nil {
			return nil, err
		}
	}
	switch {
	case len(set.AllowedCNs) > 0:
		s.allowedCert = func(c *x509.Certificate) bool { return slices.Contains(set.AllowedCNs, c.Subject.CommonName) }
	case len(set.AllowedHostnames) > 0:
		s.allowedCert = func(c *x509.Certificate) bool {
			return slices.ContainsFunc(set.AllowedHostnames, func(h string) bool { return c.VerifyHostname(h) == nil })
		}
	}
	s.settings = set
	return s, nil
}

// CanServe reports whether the side has a certificate to serve https with.
func (s *Source) CanServe() bool { return s != nil && s.serverPair != nil }

// SelfSigned reports whether the certificate was generated (auto TLS).
func (s *Source) SelfSigned() bool { return s.selfSigned }

// Settings are the side's settings, with the generated files for auto TLS.
func (s *Source) Settings() Settings { return s.settings }

// RequiresClientCert reports whether a client must present a verified
// certificate (etcd: --client-cert-auth, or a trusted CA file).
func (s *Source) RequiresClientCert() bool {
	return s.settings.ClientCertAuth || s.settings.TrustedCAFile != ""
}

// ServerConfig is the configuration to accept TLS with: the current
// certificate, client certificates verified against the trusted CA when
// required, and the allowed CNs or hostnames. nextProtos are the ALPN
// protocols offered, in order of preference.
func (s *Source) ServerConfig(nextProtos ...string) *tls.Config {
	cfg := &tls.Config{
		MinVersion:   s.minVersion,
		MaxVersion:   s.maxVersion,
		CipherSuites: s.suites,
		NextProtos:   nextProtos,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return s.serverPair.current(), nil
		},
		ClientCAs: s.roots,
	}
	if s.RequiresClientCert() {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	if s.allowedCert != nil {
		cfg.VerifyPeerCertificate = func(_ [][]byte, chains [][]*x509.Certificate) error {
			for _, chain := range chains {
				if len(chain) > 0 && s.allowedCert(chain[0]) {
					return nil
				}
			}
			return ErrClientCertRejected
		}
	}
	return cfg
}

// ClientConfig is the configuration to dial with: servers verified against
// the trusted CA (the system's when none is given; not at all for a
// self-signed side, as etcd's auto TLS), and this side's certificate
// presented when the server asks for one.
func (s *Source) ClientConfig() *tls.Config {
	cfg := &tls.Config{
		MinVersion:   s.minVersion,
		MaxVersion:   s.maxVersion,
		CipherSuites: s.suites,
		RootCAs:      s.roots,
	}
	if s.clientPair != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return s.clientPair.current(), nil
		}
	}
	if s.selfSigned {
		cfg.InsecureSkipVerify = true
	}
	return cfg
}

// sanCheckTimeout bounds the DNS lookups of the peer port's SAN check.
const sanCheckTimeout = 5 * time.Second

// CheckConn makes the checks etcd makes after a handshake: the client's
// certificates against the CRL, and on the peer port (unless
// SkipClientSANVerify) that the client certificate names the address the
// connection comes from. A non-nil error means: close the connection.
func (s *Source) CheckConn(conn *tls.Conn) error {
	certs := conn.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return nil
	}
	if s.crl != nil {
		if err := checkRevoked(s.crl.current(), certs); err != nil {
			return err
		}
	}
	if s.side == Peer && !s.settings.SkipClientSANVerify {
		ctx, cancel := context.WithTimeout(context.Background(), sanCheckTimeout)
		defer cancel()
		return checkCertSAN(ctx, certs[0], conn.RemoteAddr().String())
	}
	return nil
}

// checkCertSAN accepts a certificate without SANs, one whose IP SANs hold
// the remote host, or one with a DNS SAN that resolves to it (or that the
// remote host's reverse lookup names).
func checkCertSAN(ctx context.Context, cert *x509.Certificate, remoteAddr string) error {
	if len(cert.IPAddresses) == 0 && len(cert.DNSNames) == 0 {
		return nil
	}
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		return err
	}
	if len(cert.IPAddresses) > 0 {
		verr := cert.VerifyHostname(host)
		if verr == nil {
			return nil
		}
		if len(cert.DNSNames) == 0 {
			return verr
		}
	}
	ok, lookupErr := hostInDNSNames(ctx, host, cert.DNSNames)
	if ok {
		return nil
	}
	suffix := ""
	if lookupErr != nil {
		suffix = " (" + lookupErr.Error() + ")"
	}
	return fmt.Errorf("tls: %q does not match any of DNSNames %q%s", host, cert.DNSNames, suffix)
}

func hostInDNSNames(ctx context.Context, host string, dnsNames []string) (bool, error) {
	var names, wildcardSuffixes []string
	for _, n := range dnsNames {
		if suffix, ok := strings.CutPrefix(n, "*"); ok {
			wildcardSuffixes = append(wildcardSuffixes, suffix)
		} else {
			names = append(names, n)
		}
	}
	reverse, lastErr := net.DefaultResolver.LookupAddr(ctx, host)
	for _, r := range reverse {
		r = strings.TrimSuffix(r, ".")
		if slices.Contains(names, r) || slices.ContainsFunc(wildcardSuffixes, func(suffix string) bool { return strings.HasSuffix(r, suffix) }) {
			return true, nil
		}
	}
	for _, n := range names {
		addrs, err := net.DefaultResolver.LookupHost(ctx, n)
		if err != nil {
			lastErr = err
			continue
		}
		if slices.Contains(addrs, host) {
			return true, nil
		}
	}
	return false, lastErr
}

// AutoTLSDir is where etcd keeps a side's generated certificate.
func AutoTLSDir(dataDir string, side Side) string {
	return filepath.Join(dataDir, "fixtures", string(side))
}
