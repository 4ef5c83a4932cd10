package main

// TLS rows: both sides serve an https client URL beside the plain one,
// with the same throwaway CA and certificates (made here, never kept) and
// client certificate authentication on, as production clusters run.

import (
	"crypto/tls"
	"fmt"

	"github.com/noded/noded/server/tlsconfig/testpki"
)

// benchTLS are the certificate files both sides serve with and the
// configuration the clients dial with.
type benchTLS struct {
	caFile, certFile, keyFile string
	client                    *tls.Config
}

// memberFlags are a member's flags for its https client URL.
func (b *benchTLS) memberFlags() []string {
	return []string{"--cert-file=" + b.certFile, "--key-file=" + b.keyFile, "--trusted-ca-file=" + b.caFile, "--client-cert-auth"}
}

// pkiFailure carries testpki's failure out of newBenchTLS.
type pkiFailure struct{ msg string }

// panicTB is testpki's TB for a command: a failure panics with
// pkiFailure, which newBenchTLS recovers into an error.
type panicTB struct{}

func (panicTB) Helper() {}
func (panicTB) Fatalf(format string, args ...any) {
	panic(pkiFailure{fmt.Sprintf(format, args...)})
}

// newBenchTLS makes a CA, a member certificate for 127.0.0.1 and a client
// certificate under dir.
func newBenchTLS(dir string) (b *benchTLS, err error) {
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(pkiFailure)
			if !ok {
				panic(r)
			}
			err = fmt.Errorf("make certificates: %s", f.msg)
		}
	}()
	var t panicTB
	ca := testpki.NewCA(t, "nodebench CA")
	member := ca.Issue(t, testpki.Leaf{CommonName: "member", IPs: []string{"127.0.0.1"}, Server: true, Client: true}).WriteFiles(t, dir, "member")
	client := ca.Issue(t, testpki.Leaf{CommonName: "nodebench", Client: true})
	return &benchTLS{
		caFile:   ca.WriteFile(t, dir, "ca.crt"),
		certFile: member.Cert,
		keyFile:  member.Key,
		client:   &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{client.TLSCertificate(t)}},
	}, nil
}
