// Package planted holds one violation per determinism rule. Each offending
// line carries a `want:` comment naming the rule the lint must report there;
// the lint's own test fails if any is missed or anything else is reported.
package planted

import (
	crand "crypto/rand" // want: import
	"maps"
	"math/rand/v2"
	"os" // want: import
	"slices"
	"sync" // want: import
	"time"
)

var mu sync.Mutex

func goroutine() {
	go func() {}() // want: goroutine
}

func channels() int {
	c := make(chan int, 1) // want: channel
	c <- 1                 // want: channel
	return <-c             // want: channel
}

func selects(c, d func()) {
	select {} // want: select
}

func wallClock() time.Duration {
	start := time.Now()      // want: wall-clock
	time.Sleep(time.Second)  // want: wall-clock
	return time.Since(start) // want: wall-clock
}

func globalRand(seeded *rand.Rand) int {
	a := rand.IntN(10)   // want: global-rand
	b := seeded.IntN(10) // a seeded generator is fine
	r := rand.New(rand.NewPCG(1, 2))
	return a + b + r.IntN(3)
}

func mapOrder(m map[string]int) []string {
	var out []string
	for k := range m { // want: map-order
		out = append(out, k)
	}
	//noded:map-order-ok the keys are sorted right after
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	for k := range maps.Keys(m) { // want: map-order
		out = append(out, k)
	}
	out = append(out, slices.Sorted(maps.Keys(m))...)
	// want+1: map-order
	//noded:map-order-ok
	for k := range m { // want: map-order
		out = append(out, k)
	}
	return out
}

func uses() {
	_, _ = crand.Read(nil)
	_, _ = os.Getwd()
	mu.Lock()
}
