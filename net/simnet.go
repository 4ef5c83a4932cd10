package net

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
)

// SimNetwork is the simulated twin of the peer transport: it decides, for
// each message, whether and when it arrives. It holds no clock and no
// queue of its own; the simulator asks Route at virtual time now and
// schedules the deliveries it returns. Every decision is drawn from the
// generator it was built with, in call order, so one seed gives one
// network.
//
// Faults it models (shared/reference/sim-faults.md, N1-N6): latency with a
// floor and a mean, loss, duplication, reordering (independent latencies
// reorder messages on one link), partitions that cut chosen directed
// links (so asymmetric and leader-isolating cuts are expressible), and
// clogging (a link that holds messages for a while, then lets them go).
type SimNetwork struct {
	rng *rand.Rand

	DelayMinNs   int64 // latency floor
	DelayMeanNs  int64 // mean latency above the floor (exponential)
	LossPermille int   // chance in 1000 a message is lost
	DupPermille  int   // chance in 1000 a message arrives twice

	cut   map[link]bool  // directed links that drop everything; lookups only
	clog  map[link]int64 // directed links held until this time; lookups only
	stats SimNetworkStats
}

type link struct{ from, to uint64 }

// SimNetworkStats counts what the network did, for reports.
type SimNetworkStats struct {
	Sent, Delivered, Lost, Cut, Duplicated int64
}

func (s SimNetworkStats) String() string {
	return fmt.Sprintf("sent=%d delivered=%d lost=%d cut=%d duplicated=%d", s.Sent, s.Delivered, s.Lost, s.Cut, s.Duplicated)
}

// NewSimNetwork builds a network that draws from rng.
func NewSimNetwork(rng *rand.Rand) *SimNetwork {
	return &SimNetwork{rng: rng, cut: map[link]bool{}, clog: map[link]int64{}}
}

// Route decides the fate of one message sent at virtual time now from one
// member to another: the times at which copies of it arrive (none if it
// is lost or the link is cut, two if it is duplicated).
func (sn *SimNetwork) Route(now int64, from, to uint64) []int64 {
	sn.stats.Sent++
	l := link{from, to}
	if sn.cut[l] {
		sn.stats.Cut++
		return nil
	}
	if sn.LossPermille > 0 && sn.rng.IntN(1000) < sn.LossPermille {
		sn.stats.Lost++
		return nil
	}
	copies := 1
	if sn.DupPermille > 0 && sn.rng.IntN(1000) < sn.DupPermille {
		copies = 2
		sn.stats.Duplicated++
	}
	at := make([]int64, copies)
	for i := range at {
		at[i] = now + sn.latency()
		if until, ok := sn.clog[l]; ok && at[i] < until {
			// A clogged link holds what it carries and releases it in a
			// burst, in a random order, once unclogged.
			at[i] = until + sn.latency()
		}
	}
	sn.stats.Delivered += int64(copies)
	return at
}

func (sn *SimNetwork) latency() int64 {
	d := sn.DelayMinNs
	if sn.DelayMeanNs > 0 {
		d += int64(sn.rng.ExpFloat64() * float64(sn.DelayMeanNs))
	}
	return d
}

// Cut drops every message from one member to another until Heal.
func (sn *SimNetwork) Cut(from, to uint64) { sn.cut[link{from, to}] = true }

// Clog holds messages from one member to another until virtual time until.
func (sn *SimNetwork) Clog(from, to uint64, until int64) { sn.clog[link{from, to}] = until }

// Unclog releases a clogged link at once (messages already held still
// arrive at the times Route gave them).
func (sn *SimNetwork) Unclog(from, to uint64) { delete(sn.clog, link{from, to}) }

// HealLink restores one directed link.
func (sn *SimNetwork) HealLink(from, to uint64) {
	delete(sn.cut, link{from, to})
	delete(sn.clog, link{from, to})
}

// HealAll restores every link.
func (sn *SimNetwork) HealAll() {
	clear(sn.cut)
	clear(sn.clog)
}

// Partition cuts every link between the two sides, in both directions.
func (sn *SimNetwork) Partition(sideA, sideB []uint64) {
	for _, a := range sideA {
		for _, b := range sideB {
			sn.Cut(a, b)
			sn.Cut(b, a)
		}
	}
}

// IsCut reports whether the directed link is cut.
func (sn *SimNetwork) IsCut(from, to uint64) bool { return sn.cut[link{from, to}] }

// Stats reports the counts so far.
func (sn *SimNetwork) Stats() SimNetworkStats { return sn.stats }

// String lists the cut and clogged links in a deterministic order.
func (sn *SimNetwork) String() string {
	var cuts, clogs []string
	//noded:map-order-ok collected and sorted before use
	for l := range sn.cut {
		cuts = append(cuts, fmt.Sprintf("%x->%x", l.from, l.to))
	}
	//noded:map-order-ok collected and sorted before use
	for l, until := range sn.clog {
		clogs = append(clogs, fmt.Sprintf("%x->%x@%d", l.from, l.to, until))
	}
	slices.Sort(cuts)
	slices.Sort(clogs)
	return fmt.Sprintf("net delay=%d+%dns loss=%d‰ dup=%d‰ cut=[%s] clog=[%s]",
		sn.DelayMinNs, sn.DelayMeanNs, sn.LossPermille, sn.DupPermille, strings.Join(cuts, " "), strings.Join(clogs, " "))
}
