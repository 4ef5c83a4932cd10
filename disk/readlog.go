package disk

import (
	"errors"
	"fmt"
	"io/fs"

	"go.etcd.io/raft/v3/raftpb"
)

// ReadLog reads a stopped member's WAL in walDir and returns every entry its
// retained segments hold (entries a snapshot covers included, as long as
// their segment was not released; later appends having replaced the entries
// they overwrote) and the last hard state, changing nothing: a torn tail is
// left where it is and simply ends the log. It is for tools that inspect a
// member's log after the fact, such as the real-process fault campaigns,
// which read the committed log of every member; a member opens its WAL with
// Open.
func ReadLog(fsys FS, walDir string) (*raftpb.HardState, []*raftpb.Entry, error) {
	segs, _, err := listSegments(fsys, walDir)
	if err != nil {
		return nil, nil, fmt.Errorf("disk: read WAL %s: %w", walDir, err)
	}
	if len(segs) == 0 {
		return nil, nil, fmt.Errorf("disk: read WAL %s: no segments: %w", walDir, fs.ErrNotExist)
	}
	r := &replay{}
	for i, seg := range segs {
		data, _, err := readSegment(fsys, seg.name)
		if err != nil {
			return nil, nil, err
		}
		isNewest := i == len(segs)-1
		// Whatever follows a segment's last whole record (sc.tail) ends
		// that segment's data here; Open judges such tails, an inspection
		// only reads the records. The next segment must still continue
		// the log (segmentStart).
		sc, err := scanSegment(seg.name, data)
		if err != nil {
			return nil, nil, err
		}
		if !sc.headComplete {
			if isNewest && i > 0 {
				break // a segment being started when the member stopped
			}
			return nil, nil, &CorruptError{File: seg.name, OffsetBytes: sc.validEndBytes, Err: errors.New("segment ends inside its head")}
		}
		if err := r.segmentStart(i == 0, sc.first); err != nil {
			return nil, nil, &CorruptError{File: seg.name, Err: err}
		}
		for _, rec := range sc.records {
			if err := r.record(rec.Record, seg.seq); err != nil {
				return nil, nil, &CorruptError{File: seg.name, OffsetBytes: rec.offsetBytes, Err: err}
			}
		}
	}
	return r.hs, r.ents, nil
}
