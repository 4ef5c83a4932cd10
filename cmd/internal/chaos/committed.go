package chaos

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/noded/noded/disk"
	"github.com/noded/noded/linearizability"
	"github.com/noded/noded/node"
)

// The committed log, rebuilt from the members' WALs after the run: the
// ground truth the checkers read (the simulator records it as members
// apply; real processes report nothing, so it is read from disk after they
// stop).
//
// Each WAL (every incarnation of every member: a replaced member's old data
// directory is kept) holds a run of entries and a hard state whose Commit
// says how far that member knew the log to be committed. An entry at index
// i is committed if some WAL with Commit >= i holds it; all such WALs must
// hold the same entry there (raft's log matching: a disagreement is a
// safety violation, reported as such). WALs start after a snapshot when the
// member caught up from one (a replaced member), so the log is stitched
// together: below the first index of one WAL, another that holds that same
// entry (same index and term) holds the committed entries before it too.
// A gap no WAL covers means the log cannot be rebuilt (the segments were
// released); the run reports that rather than guess.

// walLog is one WAL's contents.
type walLog struct {
	name string
	// current: the member's last incarnation, which converged with the
	// others, so everything up to the applied floor is committed in it.
	current bool
	commit  uint64
	entries map[uint64]*raftpb.Entry
	first   uint64
	last    uint64
}

func readWAL(name, dataDir string, current bool) (*walLog, error) {
	walDir := filepath.Join(dataDir, "member", "wal")
	if _, err := os.Stat(walDir); err != nil {
		return nil, err
	}
	hs, ents, err := disk.ReadLog(disk.NewOSFS(walDir), ".")
	if err != nil {
		return nil, err
	}
	w := &walLog{name: name, current: current, commit: hs.GetCommit(), entries: map[uint64]*raftpb.Entry{}}
	for _, e := range ents {
		w.entries[e.GetIndex()] = e
		if w.first == 0 {
			w.first = e.GetIndex()
		}
		w.last = e.GetIndex()
	}
	return w, nil
}

func sameEntry(a, b *raftpb.Entry) bool {
	return a.GetTerm() == b.GetTerm() && a.GetType() == b.GetType() && bytes.Equal(a.GetData(), b.GetData())
}

// errLogDisagreement marks WALs that disagree on a committed entry.
var errLogDisagreement = errors.New("raft log disagreement")

// committedLog rebuilds the committed log from the WALs and returns its
// normal entries with requests, as the checkers read them, and the highest
// committed index. appliedFloor is an index every member reported applied
// (so committed), in case no hard state on disk says so yet.
func committedLog(wals []*walLog, appliedFloor uint64) ([]linearizability.CommittedEntry, uint64, error) {
	top := appliedFloor
	for _, w := range wals {
		top = max(top, min(w.commit, w.last))
	}
	committedIn := func(w *walLog) uint64 {
		if w.current {
			return max(w.commit, appliedFloor)
		}
		return w.commit
	}
	log := map[uint64]*raftpb.Entry{}
	var errs []error
	// Entries a WAL holds at or below its own commit (or, for a member's
	// last incarnation, the applied floor) are committed.
	for _, w := range wals {
		for i := w.first; i != 0 && i <= min(committedIn(w), w.last); i++ {
			e := w.entries[i]
			if prev, ok := log[i]; ok && !sameEntry(prev, e) {
				errs = append(errs, fmt.Errorf("%w: index %d is term %d in one committed log and term %d in %s's", errLogDisagreement, i, prev.GetTerm(), e.GetTerm(), w.name))
				continue
			}
			log[i] = e
		}
	}
	// Entries a WAL holds below one that matches the committed log are
	// committed too (log matching), whatever its own commit said.
	for changed := true; changed; {
		changed = false
		for _, w := range wals {
			for i := w.last; i >= w.first && i > 0; i-- {
				c, ok := log[i]
				if !ok || !sameEntry(c, w.entries[i]) {
					continue
				}
				for j := w.first; j < i; j++ {
					if prev, ok := log[j]; ok {
						if !sameEntry(prev, w.entries[j]) {
							errs = append(errs, fmt.Errorf("%w: index %d differs in %s's log below the matching entry %d", errLogDisagreement, j, w.name, i))
						}
						continue
					}
					log[j] = w.entries[j]
					changed = true
				}
				break
			}
		}
	}
	if len(errs) > 0 {
		return nil, top, errors.Join(errs...)
	}
	var out []linearizability.CommittedEntry
	window := newRequestWindow()
	for i := uint64(1); i <= top; i++ {
		e, ok := log[i]
		if !ok {
			return nil, top, fmt.Errorf("the committed log cannot be rebuilt: no WAL shows index %d (of %d) committed", i, top)
		}
		if e.GetType() != raftpb.EntryNormal || len(e.GetData()) == 0 {
			continue
		}
		r := &pb.InternalRaftRequest{}
		if err := proto.Unmarshal(e.GetData(), r); err != nil {
			continue // members skip it alike
		}
		id := r.GetHeader().GetID()
		if id == 0 {
			id = r.GetID()
		}
		if id != 0 && !window.add(id) {
			continue // the same proposal appended twice: applied once
		}
		out = append(out, linearizability.CommittedEntry{Index: i, RequestID: id, Request: r})
	}
	return out, top, nil
}

// requestWindow mirrors the members' rule for a request appended twice: a
// request ID among the last node.RequestWindowSize applied is skipped.
type requestWindow struct {
	ring []uint64
	next int
	seen map[uint64]bool
}

func newRequestWindow() *requestWindow { return &requestWindow{seen: map[uint64]bool{}} }

// add records id and reports whether it was new to the window.
func (w *requestWindow) add(id uint64) bool {
	if w.seen[id] {
		return false
	}
	if len(w.ring) < node.RequestWindowSize {
		w.ring = append(w.ring, id)
	} else {
		delete(w.seen, w.ring[w.next])
		w.ring[w.next] = id
		w.next = (w.next + 1) % node.RequestWindowSize
	}
	w.seen[id] = true
	return true
}
