// Package linearizability checks what a noded cluster did against what it
// must do: a porcupine model of the etcd KV API with revisions, the watch
// guarantees, lease safety and durability of acknowledged writes. It knows
// nothing of how the cluster is built; it reads histories.
//
// linearizability is deterministic. It may import the standard library
// except os, net, sync, time, math/rand and crypto/rand,
// github.com/anishathalye/porcupine and go.etcd.io/etcd/api/v3. It imports
// no other noded package: a checker stays outside the code it checks.
package linearizability
