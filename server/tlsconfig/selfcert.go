package tlsconfig

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"
)

// selfCert returns the self-signed certificate and key files in dir
// (cert.pem, key.pem), generating them first if either is missing, as
// etcd's auto TLS does: a member restarted keeps its certificate. The
// certificate is issued for the hosts of hostPorts and is good for
// validityYears.
func selfCert(dir string, hostPorts []string, validityYears uint, now time.Time, lg *zap.Logger) (certPath, keyPath string, err error) {
	if dir == "" {
		return "", "", errors.New("no directory for the generated certificate")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("cannot create cert directory: %w", err)
	}
	if certPath, err = filepath.Abs(filepath.Join(dir, "cert.pem")); err != nil {
		return "", "", err
	}
	if keyPath, err = filepath.Abs(filepath.Join(dir, "key.pem")); err != nil {
		return "", "", err
	}
	_, certErr := os.Stat(certPath)
	_, keyErr := os.Stat(keyPath)
	if certErr == nil && keyErr == nil {
		return certPath, keyPath, nil
	}

	serialLimit := new(big.Int).Lsh(big.NewInt(1), 128)
	serial, err := rand.Int(rand.Reader, serialLimit)
	if err != nil {
		return "", "", err
	}
	tmpl := x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{Organization: []string{"noded"}},
		NotBefore:    now,
		NotAfter:     now.Add(time.Duration(validityYears) * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		// Both usages: a peer presents the same certificate when it dials.
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	for _, hp := range hostPorts {
		host, _, err := net.SplitHostPort(hp)
		if err != nil {
			host = hp
		}
		if ip := net.ParseIP(host); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if host != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, host)
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("cannot generate ECDSA key: %w", err)
	}
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", fmt.Errorf("cannot generate x509 certificate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", err
	}
	lg.Warn("automatically generate certificates", zap.Time("certificate-validity-bound-not-after", tmpl.NotAfter))
	// The key first: a crash between the two leaves no certificate, and the
	// next start generates both again.
	if err := writeAtomically(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return "", "", err
	}
	if err := writeAtomically(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", err
	}
	lg.Info("created cert file", zap.String("path", certPath))
	lg.Info("created key file", zap.String("path", keyPath))
	return certPath, keyPath, nil
}

// writeAtomically writes data to path through a synced temporary file and
// a rename.
func writeAtomically(path string, data []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
