package kvsm

import "testing"

// The per-request steps that reached zero allocations stay there: finding
// a key (every put, delete and single-key read does, on the member's
// goroutine) and the permission check of a serializable read with auth off
// (on the client's goroutine, against a view).
func TestHotPathsAllocateNothing(t *testing.T) {
	s := loadStore(10_000)
	key := benchKey(4321)
	view := s.View()
	for _, tc := range []struct {
		name string
		f    func()
	}{
		{"lookup", func() {
			if s.lookup(key) == nil {
				t.Fatal("key not found")
			}
		}},
		{"View.CheckRange", func() {
			if err := view.CheckRange(AuthInfo{}, key, nil); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		if n := testing.AllocsPerRun(50, tc.f); n != 0 {
			t.Errorf("%s: %v allocations, want 0", tc.name, n)
		}
	}
}

// BenchmarkLookup is the key tree search every write makes first.
func BenchmarkLookup(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(size.name, func(b *testing.B) {
			s := benchStore(b, size.keys)
			keys := make([][]byte, 4096)
			for i := range keys {
				keys[i] = benchKey((i * 7919) % size.keys)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if s.lookup(keys[i%len(keys)]) == nil {
					b.Fatal("key not found")
				}
				i++
			}
		})
	}
}
