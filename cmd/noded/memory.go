package main

// The Go heap's headroom, sized from the quota. A member's live heap is
// mostly its store, which the quota (--quota-backend-bytes) bounds: about
// 1.15 bytes of heap per byte the quota counts, plus a few tens of
// megabytes of buffers. The Go runtime lets the heap grow to twice what is
// live between collections (GOGC=100), which for a store near a 2 to 8 GB
// quota would mean twice the memory. The soft limit below keeps the heap,
// headroom included, within 1.5 times the quota plus 512 MiB: a small store
// keeps GOGC's cheap 100% headroom, a store near its quota about half of
// its size, collected more often. An idle member also returns its garbage
// (server.Config.IdleMemoryRelease). GOMEMLIMIT or GOGC in the environment
// win over both: the runtime has read them, and noded leaves them alone.

import (
	"fmt"
	"os"
	"runtime/debug"
	"time"

	"go.uber.org/zap"

	"github.com/noded/noded/node"
)

const (
	// memoryLimitQuotaFactor and memoryLimitBaseBytes size the soft limit
	// from the quota.
	memoryLimitQuotaFactor = 1.5
	memoryLimitBaseBytes   = 512 << 20
	// idleMemoryRelease is how long a member applies nothing before it
	// returns its garbage to the system.
	idleMemoryRelease = 5 * time.Second
)

// memoryLimitBytes is the Go heap's soft limit for a member with this
// quota (0: etcd's default quota).
func memoryLimitBytes(quotaBytes int64) int64 {
	if quotaBytes <= 0 {
		quotaBytes = node.DefaultQuotaBackendBytes
	}
	return int64(memoryLimitQuotaFactor*float64(quotaBytes)) + memoryLimitBaseBytes
}

// setMemoryLimit sets the soft limit for quotaBytes unless GOMEMLIMIT or
// GOGC chose the runtime's behaviour already.
func setMemoryLimit(lg *zap.Logger, quotaBytes int64) {
	for _, env := range []string{"GOMEMLIMIT", "GOGC"} {
		if v, ok := os.LookupEnv(env); ok {
			lg.Info("Go heap sized by the environment", zap.String(env, v))
			return
		}
	}
	limit := memoryLimitBytes(quotaBytes)
	debug.SetMemoryLimit(limit)
	lg.Info("Go heap soft limit derived from the quota", zap.String("limit", fmt.Sprintf("%d MiB", limit>>20)),
		zap.Int64("quota-backend-bytes", quotaBytes))
}
