package disk

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// CreateFromSnapshot makes a new WAL in walDir whose log starts after snap
// (a state built elsewhere: a restored backup, a converted data directory)
// and holds ents, then hs, and returns it open for appending.
//
// The WAL appearing is the commit point: first snap's file is written
// durably to snapDir (temp, fsync, rename, fsync directory), then the first
// segment, holding the snapshot record, the entries and the hard state, is
// written under a temporary name, synced and renamed into place. A crash at
// any step leaves either no WAL (Exists is false; at most a snapshot file
// that no WAL vouches for, which Open and a later CreateFromSnapshot clean
// up) or the whole of it. It refuses if a WAL exists.
func CreateFromSnapshot(fsys FS, walDir, snapDir string, metadata []byte, snap *raftpb.Snapshot,
	hs *raftpb.HardState, ents []*raftpb.Entry, opts Options) (*Storage, error) {
	opts = opts.withDefaults()
	index, term := snap.GetMetadata().GetIndex(), snap.GetMetadata().GetTerm()
	switch {
	case len(metadata) > RecordBodyBytesMax:
		return nil, fmt.Errorf("disk: metadata of %d bytes exceeds %d", len(metadata), RecordBodyBytesMax)
	case index == 0:
		return nil, errors.New("disk: create WAL from a snapshot at index 0")
	case Exists(fsys, walDir):
		return nil, fmt.Errorf("disk: create WAL in %s: %w", walDir, fs.ErrExist)
	}
	last := index
	for i, e := range ents {
		if e.GetIndex() != index+1+uint64(i) {
			return nil, fmt.Errorf("disk: entry %d has index %d, want %d (entries follow the snapshot at %d without gaps)",
				i, e.GetIndex(), index+1+uint64(i), index)
		}
		if (i == 0 && e.GetTerm() < term) || (i > 0 && e.GetTerm() < ents[i-1].GetTerm()) {
			return nil, fmt.Errorf("disk: entry %d has term %d, lower than the term before it", e.GetIndex(), e.GetTerm())
		}
		last = e.GetIndex()
	}
	if hs != nil && (hs.GetCommit() < index || hs.GetCommit() > last) {
		return nil, fmt.Errorf("disk: hard state commits %d, outside the log's [%d, %d]", hs.GetCommit(), index, last)
	}
	for _, dir := range []string{walDir, snapDir} {
		if err := fsys.MkdirAll(dir); err != nil {
			return nil, fmt.Errorf("disk: create %s: %w", dir, err)
		}
		if err := syncAncestors(fsys, dir); err != nil {
			return nil, err
		}
	}
	for _, dir := range []string{walDir, snapDir} {
		if err := removeTemporaries(fsys, dir); err != nil {
			return nil, err
		}
	}

	s := &Storage{fs: fsys, walDir: walDir, snapDir: snapDir, opts: opts, metadata: append([]byte(nil), metadata...)}
	f, err := s.WriteSnapshotFile(snap)
	if err != nil {
		return nil, err
	}
	s.markers = []snapshotMarker{{index: index, term: term, payloadCRC: f.payloadCRC, fileSizeBytes: f.fileSizeBytes, usable: true}}
	s.shape = logShape{base: index, baseTerm: term, baseTermKnown: true, last: index}
	seg := segmentInfo{seq: 0, firstIndex: index + 1, name: path.Join(walDir, segmentName(0, index+1))}
	// The head carries the snapshot record; the entries and then the hard
	// state follow it, as Append writes them.
	data, chain := s.encodeHead(nil, seg, 0)
	for _, e := range ents {
		data, chain = AppendRecord(data, Record{Type: RecordEntry, Index: e.GetIndex(), Term: e.GetTerm(), Body: mustMarshal(e)}, chain)
		if err := s.shape.appendEntry(e.GetIndex(), e.GetTerm()); err != nil {
			assertf(false, "checked entry %d rejected: %v", e.GetIndex(), err)
		}
	}
	if hs != nil {
		data, chain = AppendRecord(data, Record{Type: RecordHardState, Index: hs.GetCommit(), Term: hs.GetTerm(), Body: mustMarshal(hs)}, chain)
		s.hs = proto.Clone(hs).(*raftpb.HardState)
	}
	if err := writeFileDurably(fsys, seg.name, opts.SegmentSizeBytes, data); err != nil {
		return nil, fmt.Errorf("disk: create WAL in %s: %w", walDir, err)
	}
	seg0, err := fsys.OpenAppend(seg.name)
	if err != nil {
		return nil, err
	}
	s.segments = []segmentInfo{seg}
	s.file, s.openSegmentSizeBytes, s.chain = seg0, int64(len(data)), chain
	s.segmentHasLog = len(ents) > 0 || hs != nil
	return s, nil
}

// removeTemporaries removes the temporary files a crashed write left in
// dir.
func removeTemporaries(fsys FS, dir string) error {
	names, err := fsys.List(dir)
	if err != nil {
		return err
	}
	var tmps []string
	for _, n := range names {
		if strings.HasSuffix(n, tmpSuffix) {
			tmps = append(tmps, path.Join(dir, n))
		}
	}
	return removeLeftovers(fsys, dir, tmps)
}

// WriteFile writes a whole small file durably: under a temporary name,
// synced, renamed into place, the directory synced. A crash leaves no file
// under name or all of data.
func WriteFile(fsys FS, name string, data []byte) error {
	return writeFileDurably(fsys, name, 0, data)
}

// ReadFile reads a whole file through fsys, refusing one larger than
// limitBytes before reading it; its size comes from Stat, never from the
// file's contents. For readers of other formats kept on an FS (etcd's WAL).
func ReadFile(fsys FS, name string, limitBytes int64) ([]byte, error) {
	return readFile(fsys, name, limitBytes)
}
