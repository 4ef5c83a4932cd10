package tlsconfig

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"
)

// stamp identifies one version of a file: a rotation changes its
// modification time or size (a rename over it changes both, usually).
type stamp struct {
	modTime time.Time
	size    int64
}

func statStamp(path string) (stamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return stamp{}, err
	}
	return stamp{modTime: fi.ModTime(), size: fi.Size()}, nil
}

// readFile reads path; its error is the reason alone (the caller names the
// flag and the path).
func readFile(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	var pathErr *fs.PathError
	if errors.As(err, &pathErr) {
		return nil, pathErr.Err
	}
	return data, err
}

// keyPairFile is a certificate and key read from files, read again when
// either file changes.
type keyPairFile struct {
	certFile, keyFile string
	certFlag, keyFlag string
	now               func() time.Time
	lg                *zap.Logger

	mu      sync.Mutex
	stamps  [2]stamp // of the files cert was loaded from
	failed  [2]stamp // of the files that last failed to load
	lastErr string   // the last reload error logged, to log each once
	cert    *tls.Certificate
}

// newKeyPairFile loads the pair; any problem is an error naming the flags.
func newKeyPairFile(certFile, keyFile, certFlag, keyFlag string, now func() time.Time, lg *zap.Logger) (*keyPairFile, error) {
	k := &keyPairFile{certFile: certFile, keyFile: keyFile, certFlag: certFlag, keyFlag: keyFlag, now: now, lg: lg}
	stamps, err := k.stat()
	if err != nil {
		return nil, err
	}
	cert, err := k.load()
	if err != nil {
		return nil, err
	}
	k.cert, k.stamps = cert, stamps
	return k, nil
}

func (k *keyPairFile) stat() ([2]stamp, error) {
	var stamps [2]stamp
	var err error
	if stamps[0], err = statStamp(k.certFile); err != nil {
		return stamps, fmt.Errorf("%s %s: %w", k.certFlag, k.certFile, unwrapPath(err))
	}
	if stamps[1], err = statStamp(k.keyFile); err != nil {
		return stamps, fmt.Errorf("%s %s: %w", k.keyFlag, k.keyFile, unwrapPath(err))
	}
	return stamps, nil
}

func unwrapPath(err error) error {
	var pathErr *fs.PathError
	if errors.As(err, &pathErr) {
		return pathErr.Err
	}
	return err
}

// load reads and checks the pair: both files readable, the key matching
// the certificate, the certificate within its validity period.
func (k *keyPairFile) load() (*tls.Certificate, error) {
	certPEM, err := readFile(k.certFile)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", k.certFlag, k.certFile, err)
	}
	keyPEM, err := readFile(k.keyFile)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", k.keyFlag, k.keyFile, err)
	}
	if block, _ := pem.Decode(certPEM); block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s %s: no PEM CERTIFICATE block in the file", k.certFlag, k.certFile)
	}
	if block, _ := pem.Decode(keyPEM); block == nil || !bytes.HasSuffix([]byte(block.Type), []byte("PRIVATE KEY")) {
		return nil, fmt.Errorf("%s %s: no PEM PRIVATE KEY block in the file", k.keyFlag, k.keyFile)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s %s and %s %s: %w", k.certFlag, k.certFile, k.keyFlag, k.keyFile, err)
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("%s %s: %w", k.certFlag, k.certFile, err)
		}
		pair.Leaf = leaf
	}
	now := k.now()
	switch {
	case now.After(leaf.NotAfter):
		return nil, fmt.Errorf("%s %s: the certificate (CN %q, serial %x) expired at %s", k.certFlag, k.certFile,
			leaf.Subject.CommonName, leaf.SerialNumber.Bytes(), leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		return nil, fmt.Errorf("%s %s: the certificate (CN %q, serial %x) is not valid before %s", k.certFlag, k.certFile,
			leaf.Subject.CommonName, leaf.SerialNumber.Bytes(), leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	return &pair, nil
}

// current returns the pair to use for a handshake: reloaded if a file
// changed since it was loaded and the new files load; otherwise the one
// loaded before.
func (k *keyPairFile) current() *tls.Certificate {
	k.mu.Lock()
	defer k.mu.Unlock()
	stamps, err := k.stat()
	if err != nil {
		k.lastErr = warnOnce(k.lg, k.lastErr, "cannot reload TLS certificate; keeping the one loaded before", err)
		return k.cert
	}
	if stamps == k.stamps || stamps == k.failed {
		return k.cert
	}
	cert, err := k.load()
	if err != nil {
		k.failed = stamps
		k.lastErr = warnOnce(k.lg, k.lastErr, "cannot reload TLS certificate; keeping the one loaded before", err)
		return k.cert
	}
	k.cert, k.stamps, k.lastErr = cert, stamps, ""
	k.lg.Info("reloaded TLS certificate",
		zap.String("cert-file", k.certFile), zap.String("key-file", k.keyFile),
		zap.String("common-name", cert.Leaf.Subject.CommonName),
		zap.String("serial", fmt.Sprintf("%x", cert.Leaf.SerialNumber.Bytes())),
		zap.Time("not-after", cert.Leaf.NotAfter))
	return k.cert
}

// loadCertPool reads a PEM bundle of CA certificates.
func loadCertPool(path string) (*x509.CertPool, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	found := 0
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d of the file: %w", found+1, err)
		}
		pool.AddCert(cert)
		found++
	}
	if found == 0 {
		return nil, errors.New("no PEM CERTIFICATE block in the file")
	}
	return pool, nil
}

// crlFile is a certificate revocation list read from a file (DER, as etcd
// reads it, or PEM), read again when it changes.
type crlFile struct {
	path, flag string
	lg         *zap.Logger

	mu      sync.Mutex
	stamp   stamp
	failed  stamp
	lastErr string
	revoked map[string]struct{} // serial numbers, as big-endian bytes
}

func newCRLFile(path, flag string, lg *zap.Logger) (*crlFile, error) {
	c := &crlFile{path: path, flag: flag, lg: lg}
	st, err := statStamp(path)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", flag, path, unwrapPath(err))
	}
	revoked, err := c.load()
	if err != nil {
		return nil, err
	}
	c.stamp, c.revoked = st, revoked
	return c, nil
}

func (c *crlFile) load() (map[string]struct{}, error) {
	data, err := readFile(c.path)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", c.flag, c.path, err)
	}
	if block, _ := pem.Decode(data); block != nil && block.Type == "X509 CRL" {
		data = block.Bytes
	}
	list, err := x509.ParseRevocationList(data)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", c.flag, c.path, err)
	}
	revoked := make(map[string]struct{}, len(list.RevokedCertificateEntries))
	for _, e := range list.RevokedCertificateEntries {
		revoked[string(e.SerialNumber.Bytes())] = struct{}{}
	}
	return revoked, nil
}

// check refuses certs if any of them is revoked, with etcd's error.
func (c *crlFile) check(certs []*x509.Certificate) error {
	revoked := c.current()
	for _, cert := range certs {
		serial := cert.SerialNumber.Bytes()
		if _, ok := revoked[string(serial)]; ok {
			return fmt.Errorf("transport: certificate serial %x revoked", serial)
		}
	}
	return nil
}

func (c *crlFile) current() map[string]struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, err := statStamp(c.path)
	if err != nil {
		c.lastErr = warnOnce(c.lg, c.lastErr, "cannot reload the CRL; keeping the one loaded before", fmt.Errorf("%s %s: %w", c.flag, c.path, unwrapPath(err)))
		return c.revoked
	}
	if st == c.stamp || st == c.failed {
		return c.revoked
	}
	revoked, err := c.load()
	if err != nil {
		c.failed = st
		c.lastErr = warnOnce(c.lg, c.lastErr, "cannot reload the CRL; keeping the one loaded before", err)
		return c.revoked
	}
	c.stamp, c.revoked, c.lastErr = st, revoked, ""
	c.lg.Info("reloaded the CRL", zap.String("crl-file", c.path), zap.Int("revoked", len(revoked)))
	return c.revoked
}

// warnOnce logs err unless it is the one logged last, and returns its text
// as the new last.
func warnOnce(lg *zap.Logger, last, msg string, err error) string {
	if err.Error() != last {
		lg.Warn(msg, zap.Error(err))
	}
	return err.Error()
}
