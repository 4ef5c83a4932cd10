package sim

import (
	"crypto/rand"
	mrand "math/rand/v2"
)

// go.etcd.io/raft draws each member's randomized election timeout from
// crypto/rand.Reader, the one source of randomness in a run that the run's
// seed does not control. For the duration of a run, the reader is a
// ChaCha8 stream seeded from the run's seed; members draw from it in the
// order the single-threaded run steps them, so the draws repeat exactly.
//
// This is the only file in the deterministic packages allowed to touch
// crypto/rand (determinism_test.go lists it), and the reason runs of the
// simulator must not overlap within one process: Run holds the reader for
// as long as it runs.

// withSeededEntropy runs fn with crypto/rand.Reader drawing from seed.
func withSeededEntropy(seed uint64, fn func()) {
	var key [32]byte
	s := mrand.New(mrand.NewPCG(seed, 0x656e74726f7079)) // "entropy"
	for i := range key {
		key[i] = byte(s.Uint32())
	}
	saved := rand.Reader
	rand.Reader = mrand.NewChaCha8(key)
	defer func() { rand.Reader = saved }()
	fn()
}
