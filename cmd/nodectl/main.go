// Command nodectl is etcdctl 3.7, bundled with noded so that a fresh install
// has a command line that matches the server: it is etcd's own etcdctl
// command tree (go.etcd.io/etcd/etcdctl/v3's ctlv3 package, used as a
// library, not rewritten), so its commands, flags, ETCDCTL_* variables and
// output are etcdctl's to the byte. Any etcdctl release works against noded
// as well.
//
//	nodectl put foo bar
//	nodectl --endpoints=127.0.0.1:2379 get foo -w json
//	nodectl lock mylock -- ./critical-section.sh
package main

import "go.etcd.io/etcd/etcdctl/v3/ctlv3"

func main() {
	ctlv3.MustStart()
}
