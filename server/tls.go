package server

import (
	"crypto/tls"
	"fmt"
	"net/url"

	"go.uber.org/zap"

	"github.com/noded/noded/server/tlsconfig"
)

// loadTLS builds the client and peer sides' TLS sources from the
// configuration (reading every file, generating auto TLS certificates)
// and the configurations the member dials with. Its errors name the flag
// and the file.
func (m *Member) loadTLS() error {
	cfg := &m.cfg
	options := func(side tlsconfig.Side, settings tlsconfig.Settings, listen []url.URL) tlsconfig.Options {
		hosts := make([]string, len(listen))
		for i, u := range listen {
			hosts[i] = u.Host
		}
		return tlsconfig.Options{
			Side:                        side,
			Settings:                    settings,
			CipherSuites:                cfg.CipherSuites,
			MinVersion:                  cfg.TLSMinVersion,
			MaxVersion:                  cfg.TLSMaxVersion,
			AutoTLSDir:                  tlsconfig.AutoTLSDir(cfg.DataDir, side),
			AutoTLSHosts:                hosts,
			SelfSignedCertValidityYears: cfg.SelfSignedCertValidity,
			Logger:                      m.lg,
		}
	}
	var err error
	if !cfg.ClientTLS.Empty() {
		if m.clientTLS, err = tlsconfig.New(options(tlsconfig.Client, cfg.ClientTLS, cfg.ListenClientURLs)); err != nil {
			return err
		}
		m.lg.Info("starting with client TLS", zap.String("tls-info", describeTLS(m.clientTLS.Settings())), zap.Strings("cipher-suites", cfg.CipherSuites))
	}
	if !cfg.PeerTLS.Empty() {
		if m.peerTLS, err = tlsconfig.New(options(tlsconfig.Peer, cfg.PeerTLS, cfg.ListenPeerURLs)); err != nil {
			return err
		}
		m.lg.Info("starting with peer TLS", zap.String("tls-info", describeTLS(m.peerTLS.Settings())), zap.Strings("cipher-suites", cfg.CipherSuites))
	}
	m.clientDialTLS, m.peerDialTLS = dialConfig(m.clientTLS, cfg), dialConfig(m.peerTLS, cfg)
	for _, u := range cfg.ListenClientURLs {
		m.warnPlainURL("client", u, m.clientTLS, "--client-cert-auth")
	}
	for _, u := range cfg.ListenPeerURLs {
		m.warnPlainURL("peer", u, m.peerTLS, "--peer-client-cert-auth")
	}
	return nil
}

// dialConfig is what a side dials https URLs with: its source's client
// configuration, or, without TLS settings, the system's roots (as etcd
// dials with an empty TLS configuration).
func dialConfig(src *tlsconfig.Source, cfg *Config) *tls.Config {
	if src != nil {
		return src.ClientConfig()
	}
	minVersion, maxVersion, _ := tlsconfig.ParseVersions(cfg.TLSMinVersion, cfg.TLSMaxVersion)
	return &tls.Config{MinVersion: minVersion, MaxVersion: maxVersion}
}

// warnPlainURL says, as etcd does, that an http URL ignores the side's
// certificate and client certificate authentication.
func (m *Member) warnPlainURL(kind string, u url.URL, src *tlsconfig.Source, certAuthFlag string) {
	if u.Scheme != "http" || src == nil {
		return
	}
	m.lg.Warn("scheme is HTTP while key and cert files are present; ignoring key and cert files", zap.String(kind+"-url", u.String()))
	if src.RequiresClientCert() {
		m.lg.Warn(fmt.Sprintf("scheme is HTTP while %s is enabled; ignoring client cert auth for this URL", certAuthFlag), zap.String(kind+"-url", u.String()))
	}
}

// describeTLS renders settings for the start log, as etcd's TLSInfo
// String does.
func describeTLS(s tlsconfig.Settings) string {
	return fmt.Sprintf("cert = %s, key = %s, client-cert=%s, client-key=%s, trusted-ca = %s, client-cert-auth = %v, crl-file = %s",
		s.CertFile, s.KeyFile, s.ClientCertFile, s.ClientKeyFile, s.TrustedCAFile, s.ClientCertAuth, s.CRLFile)
}
