package server

import (
	"testing"
	"time"
)

// An idle member returns its heap's garbage once per idle period: after
// writes it releases, and writes again after that release start a new
// period with one more release.
func TestIdleMemoryReleaseAfterActivity(t *testing.T) {
	tms := newTestConfigs(t, 1)
	tms[0].cfg.IdleMemoryRelease = 50 * time.Millisecond
	tms[0].start(t)
	waitLeader(t, tms)
	cli := newClient(t, tms...)
	ctx := testContext(t)
	m := tms[0].m
	for round := uint64(1); round <= 2; round++ {
		before := m.idleReleases.Load()
		if _, err := cli.Put(ctx, "k", "v"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "a release after the put", func() bool { return m.idleReleases.Load() > before })
	}
}
