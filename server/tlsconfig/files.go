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

// watchedFile is a file and the flag that names it, for errors.
type watchedFile struct{ path, flag string }

func (f watchedFile) errorf(err error) error {
	return fmt.Errorf("%s %s: %w", f.flag, f.path, err)
}

// stampsOf stats every file; its error names the flag and the file.
func stampsOf(files []watchedFile) ([]stamp, error) {
	stamps := make([]stamp, len(files))
	for i, f := range files {
		fi, err := os.Stat(f.path)
		if err != nil {
			return nil, f.errorf(unwrapPath(err))
		}
		stamps[i] = stamp{modTime: fi.ModTime(), size: fi.Size()}
	}
	return stamps, nil
}

func equalStamps(a, b []stamp) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].modTime.Equal(b[i].modTime) || a[i].size != b[i].size {
			return false
		}
	}
	return true
}

// readFile reads f, its error naming the flag and the file.
func (f watchedFile) read() ([]byte, error) {
	data, err := os.ReadFile(f.path)
	if err != nil {
		return nil, f.errorf(unwrapPath(err))
	}
	return data, nil
}

func unwrapPath(err error) error {
	var pathErr *fs.PathError
	if errors.As(err, &pathErr) {
		return pathErr.Err
	}
	return err
}

// reloading is a value loaded from files and loaded again when one of
// them changes. A change that does not load is logged once and the value
// loaded before kept.
type reloading[T any] struct {
	files []watchedFile
	load  func() (T, error)
	what  string // for log lines: "TLS certificate", "CRL"
	lg    *zap.Logger
	// describe gives the fields of a successful reload's log line.
	describe func(T) []zap.Field

	mu      sync.Mutex
	stamps  []stamp // of the files value was loaded from
	failed  []stamp // of the files that last failed to load
	lastErr string  // the last reload error logged
	value   T
}

// newReloading loads the value; any problem is an error.
func newReloading[T any](r *reloading[T]) (*reloading[T], error) {
	stamps, err := stampsOf(r.files)
	if err != nil {
		return nil, err
	}
	if r.value, err = r.load(); err != nil {
		return nil, err
	}
	r.stamps = stamps
	return r, nil
}

// current returns the value, loaded again first if a file changed since.
func (r *reloading[T]) current() T {
	r.mu.Lock()
	defer r.mu.Unlock()
	stamps, err := stampsOf(r.files)
	if err == nil && (equalStamps(stamps, r.stamps) || equalStamps(stamps, r.failed)) {
		return r.value
	}
	var value T
	if err == nil {
		value, err = r.load()
	}
	if err != nil {
		r.failed = stamps
		if err.Error() != r.lastErr {
			r.lg.Warn(fmt.Sprintf("cannot reload the %s; keeping the one loaded before", r.what), zap.Error(err))
			r.lastErr = err.Error()
		}
		return r.value
	}
	r.value, r.stamps, r.lastErr = value, stamps, ""
	r.lg.Info("reloaded the "+r.what, r.describe(value)...)
	return r.value
}

// newKeyPairFile loads a certificate and key (re-read when either file
// changes): both readable, the key matching the certificate, the
// certificate within its validity period.
func newKeyPairFile(cert, key watchedFile, now func() time.Time, lg *zap.Logger) (*reloading[*tls.Certificate], error) {
	return newReloading(&reloading[*tls.Certificate]{
		files: []watchedFile{cert, key},
		load:  func() (*tls.Certificate, error) { return loadKeyPair(cert, key, now()) },
		what:  "TLS certificate",
		lg:    lg,
		describe: func(c *tls.Certificate) []zap.Field {
			return []zap.Field{zap.String("cert-file", cert.path), zap.String("key-file", key.path),
				zap.String("common-name", c.Leaf.Subject.CommonName), zap.String("serial", fmt.Sprintf("%x", c.Leaf.SerialNumber.Bytes())),
				zap.Time("not-after", c.Leaf.NotAfter)}
		},
	})
}

func loadKeyPair(cert, key watchedFile, now time.Time) (*tls.Certificate, error) {
	certPEM, err := cert.read()
	if err != nil {
		return nil, err
	}
	keyPEM, err := key.read()
	if err != nil {
		return nil, err
	}
	if block, _ := pem.Decode(certPEM); block == nil || block.Type != "CERTIFICATE" {
		return nil, cert.errorf(errors.New("no PEM CERTIFICATE block in the file"))
	}
	if block, _ := pem.Decode(keyPEM); block == nil || !bytes.HasSuffix([]byte(block.Type), []byte("PRIVATE KEY")) {
		return nil, key.errorf(errors.New("no PEM PRIVATE KEY block in the file"))
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s %s and %s %s: %w", cert.flag, cert.path, key.flag, key.path, err)
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, cert.errorf(err)
		}
		pair.Leaf = leaf
	}
	switch {
	case now.After(leaf.NotAfter):
		return nil, cert.errorf(fmt.Errorf("the certificate (CN %q, serial %x) expired at %s",
			leaf.Subject.CommonName, leaf.SerialNumber.Bytes(), leaf.NotAfter.UTC().Format(time.RFC3339)))
	case now.Before(leaf.NotBefore):
		return nil, cert.errorf(fmt.Errorf("the certificate (CN %q, serial %x) is not valid before %s",
			leaf.Subject.CommonName, leaf.SerialNumber.Bytes(), leaf.NotBefore.UTC().Format(time.RFC3339)))
	}
	return &pair, nil
}

// loadCertPool reads a PEM bundle of CA certificates.
func loadCertPool(f watchedFile) (*x509.CertPool, error) {
	data, err := f.read()
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
			return nil, f.errorf(fmt.Errorf("certificate %d of the file: %w", found+1, err))
		}
		pool.AddCert(cert)
		found++
	}
	if found == 0 {
		return nil, f.errorf(errors.New("no PEM CERTIFICATE block in the file"))
	}
	return pool, nil
}

// revokedSerials are the serial numbers a CRL revokes, as big-endian
// bytes.
type revokedSerials map[string]struct{}

// newCRLFile loads a certificate revocation list (DER, as etcd reads it,
// or PEM), re-read when it changes.
func newCRLFile(f watchedFile, lg *zap.Logger) (*reloading[revokedSerials], error) {
	return newReloading(&reloading[revokedSerials]{
		files: []watchedFile{f},
		load:  func() (revokedSerials, error) { return loadCRL(f) },
		what:  "CRL",
		lg:    lg,
		describe: func(r revokedSerials) []zap.Field {
			return []zap.Field{zap.String("crl-file", f.path), zap.Int("revoked", len(r))}
		},
	})
}

func loadCRL(f watchedFile) (revokedSerials, error) {
	data, err := f.read()
	if err != nil {
		return nil, err
	}
	if block, _ := pem.Decode(data); block != nil && block.Type == "X509 CRL" {
		data = block.Bytes
	}
	list, err := x509.ParseRevocationList(data)
	if err != nil {
		return nil, f.errorf(err)
	}
	revoked := make(revokedSerials, len(list.RevokedCertificateEntries))
	for _, e := range list.RevokedCertificateEntries {
		revoked[string(e.SerialNumber.Bytes())] = struct{}{}
	}
	return revoked, nil
}

// checkRevoked refuses certs if any of them is revoked, with etcd's error.
func checkRevoked(revoked revokedSerials, certs []*x509.Certificate) error {
	for _, cert := range certs {
		serial := cert.SerialNumber.Bytes()
		if _, ok := revoked[string(serial)]; ok {
			return fmt.Errorf("transport: certificate serial %x revoked", serial)
		}
	}
	return nil
}
