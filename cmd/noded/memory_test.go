package main

import "testing"

func TestMemoryLimitFromQuota(t *testing.T) {
	for _, tc := range []struct{ quota, want int64 }{
		{0, 3<<30 + 512<<20},        // etcd's default quota, 2 GiB
		{2 << 30, 3<<30 + 512<<20},  // the same, given
		{8 << 30, 12<<30 + 512<<20}, // etcd's suggested maximum
		{100 << 20, 150<<20 + 512<<20},
	} {
		if got := memoryLimitBytes(tc.quota); got != tc.want {
			t.Errorf("quota %d: limit %d, want %d", tc.quota, got, tc.want)
		}
	}
}
