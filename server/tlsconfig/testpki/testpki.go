// Package testpki makes throwaway certificate authorities, certificates and
// revocation lists for tests and benchmarks: everything a TLS deployment of
// noded or etcd reads from files, generated at run time with crypto/x509 so
// that no private key is ever checked in.
//
//	ca := testpki.NewCA(t, "test CA")
//	server := ca.Issue(t, testpki.Leaf{CommonName: "m0", IPs: []string{"127.0.0.1"}, Server: true, Client: true})
//	paths := server.WriteFiles(t, dir, "m0")    // m0.crt, m0.key
//	crl := ca.CRL(t, client)                     // a CRL revoking client
//
// testpki may import the standard library only. Its functions take a TB so
// that tests and the benchmark command (which passes a TB that exits) share
// them.
package testpki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
)

// TB is the part of testing.TB these helpers use.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// serials hands out certificate serial numbers unique within the process,
// so that a CRL revoking one certificate never revokes another.
var serials atomic.Int64

func nextSerial() *big.Int { return big.NewInt(serials.Add(1) + 1000) }

// CA is a self-signed certificate authority.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	PEM  []byte // the CA certificate, PEM encoded
}

// NewCA makes a CA valid from an hour ago for a year.
func NewCA(t TB, commonName string) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          nextSerial(),
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"noded tests"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(365 * 24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatalf("testpki: create CA: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testpki: parse CA: %v", err)
	}
	return &CA{Cert: cert, Key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// Pool is a pool holding only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// WriteFile writes the CA certificate to dir/name and returns the path.
func (ca *CA) WriteFile(t TB, dir, name string) string {
	t.Helper()
	return writeFile(t, filepath.Join(dir, name), ca.PEM, 0o644)
}

// Leaf describes a certificate to issue.
type Leaf struct {
	CommonName string
	IPs        []string // IP SANs
	DNSNames   []string // DNS SANs
	Server     bool     // extended key usage serverAuth
	Client     bool     // extended key usage clientAuth
	// NotBefore and NotAfter default to an hour ago and a year ahead; set
	// NotAfter in the past for an expired certificate.
	NotBefore, NotAfter time.Time
}

// Cert is an issued certificate with its key.
type Cert struct {
	Leaf    *x509.Certificate
	CertPEM []byte
	KeyPEM  []byte
}

// Issue signs a certificate for l.
func (ca *CA) Issue(t TB, l Leaf) *Cert {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(),
		Subject:      pkix.Name{CommonName: l.CommonName, Organization: []string{"noded tests"}},
		NotBefore:    l.NotBefore,
		NotAfter:     l.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		DNSNames:     l.DNSNames,
	}
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Hour)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = time.Now().Add(365 * 24 * time.Hour)
	}
	for _, ip := range l.IPs {
		parsed := net.ParseIP(ip)
		if parsed == nil {
			t.Fatalf("testpki: %q is not an IP address", ip)
		}
		tmpl.IPAddresses = append(tmpl.IPAddresses, parsed)
	}
	if l.Server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if l.Client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		t.Fatalf("testpki: issue %q: %v", l.CommonName, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testpki: parse %q: %v", l.CommonName, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("testpki: marshal key: %v", err)
	}
	return &Cert{
		Leaf:    leaf,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
}

// TLSCertificate is the certificate and key as crypto/tls uses them.
func (c *Cert) TLSCertificate(t TB) tls.Certificate {
	t.Helper()
	pair, err := tls.X509KeyPair(c.CertPEM, c.KeyPEM)
	if err != nil {
		t.Fatalf("testpki: key pair: %v", err)
	}
	return pair
}

// Files are the paths a certificate was written to.
type Files struct {
	Cert, Key string
}

// WriteFiles writes dir/name.crt and dir/name.key (the key readable by its
// owner only, as a real deployment keeps it).
func (c *Cert) WriteFiles(t TB, dir, name string) Files {
	t.Helper()
	return Files{
		Cert: writeFile(t, filepath.Join(dir, name+".crt"), c.CertPEM, 0o644),
		Key:  writeFile(t, filepath.Join(dir, name+".key"), c.KeyPEM, 0o600),
	}
}

// CRL returns a DER revocation list signed by the CA that revokes certs
// (etcd reads CRL files as DER).
func (ca *CA) CRL(t TB, revoked ...*Cert) []byte {
	t.Helper()
	tmpl := &x509.RevocationList{
		Number:     nextSerial(),
		ThisUpdate: time.Now().Add(-time.Hour),
		NextUpdate: time.Now().Add(365 * 24 * time.Hour),
	}
	for _, c := range revoked {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{
			SerialNumber:   c.Leaf.SerialNumber,
			RevocationTime: time.Now().Add(-time.Minute),
		})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		t.Fatalf("testpki: create CRL: %v", err)
	}
	return der
}

// WriteCRL writes ca.CRL(revoked...) to dir/name and returns the path.
func (ca *CA) WriteCRL(t TB, dir, name string, revoked ...*Cert) string {
	t.Helper()
	return writeFile(t, filepath.Join(dir, name), ca.CRL(t, revoked...), 0o644)
}

func newKey(t TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testpki: generate key: %v", err)
	}
	return key
}

// writeFile writes data through a temporary file and a rename, so that a
// member re-reading the path never sees half a file.
func writeFile(t TB, path string, data []byte, perm os.FileMode) string {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, perm); err != nil {
		t.Fatalf("testpki: %v", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatalf("testpki: %v", err)
	}
	return path
}
