package server

import (
	stdnet "net"
	"net/url"
	"os"
	"path/filepath"
	"slices"

	"github.com/noded/noded/node"
)

// Initialized reports whether the data directory already holds a member's
// log: such a member restarts from it, and --initial-cluster, discovery
// and their flags are ignored (etcd logs the same and goes on).
func (c *Config) Initialized() bool {
	walDir := c.WALDir
	if walDir == "" {
		walDir = filepath.Join(c.DataDir, "member", "wal")
	}
	_, err := os.Stat(walDir)
	return err == nil
}

// LocalMemberID is the ID this member has in a cluster it bootstraps: the
// hash of its advertised peer URLs and --initial-cluster-token, as etcd
// makes it (discovery registers the member under it).
func (c *Config) LocalMemberID() uint64 {
	return node.MemberID(URLStrings(c.InitialAdvertisePeerURLs), c.InitialClusterToken, nil)
}

// resolvedEqual compares two URL lists after resolving their host names,
// as etcd does when --initial-cluster names a member by a host name (DNS
// SRV discovery does) and it advertises an address.
func resolvedEqual(a, b []string) bool {
	ra, ok := resolveURLs(a)
	if !ok {
		return false
	}
	rb, ok := resolveURLs(b)
	return ok && slices.Equal(ra, rb)
}

func resolveURLs(us []string) ([]string, bool) {
	out := make([]string, 0, len(us))
	for _, s := range us {
		u, err := url.Parse(s)
		if err != nil {
			return nil, false
		}
		addr, err := stdnet.ResolveTCPAddr("tcp", u.Host)
		if err != nil {
			return nil, false
		}
		out = append(out, u.Scheme+"://"+addr.String())
	}
	slices.Sort(out)
	return out, true
}
