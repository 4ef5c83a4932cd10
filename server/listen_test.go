package server

import (
	stdnet "net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
)

// The client and metrics ports open before the data directory loads (so a
// client waits in the backlog instead of backing off while a large store
// loads); a member that then fails to open its data directory closes them
// again, and the addresses are free for the next start.
func TestClientPortClosedWhenDataDirFails(t *testing.T) {
	tms := newTestConfigs(t, 1)
	cfg := tms[0].cfg
	free := func() url.URL {
		l := listenLoopback(t)
		u := urlOf(t, l)
		l.Close()
		return u
	}
	client, metrics := free(), free()
	cfg.ClientListeners = nil // opened by Start
	cfg.ListenClientURLs = []url.URL{client}
	cfg.AdvertiseClientURLs = []url.URL{client}
	cfg.ListenMetricsURLs = []url.URL{metrics}
	// A data directory whose member directory is a file cannot be opened.
	cfg.DataDir = t.TempDir()
	if err := os.WriteFile(filepath.Join(cfg.DataDir, "member"), []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := Start(cfg)
	if err == nil {
		m.Stop()
		t.Fatal("a member started on a data directory whose member directory is a file")
	}
	t.Logf("start failed as it should: %v", err)
	for _, u := range []url.URL{client, metrics} {
		l, err := stdnet.Listen("tcp", u.Host)
		if err != nil {
			t.Fatalf("%s is still held after the failed start: %v", u.Host, err)
		}
		l.Close()
	}
}
