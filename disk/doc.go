// Package disk is where a member's raft log, hard state and snapshots live:
// a write-ahead log of CRC-checked records in segment files and a directory of
// snapshot files, both written against a narrow FS interface.
//
// Two FS implementations stand side by side: OSFS, over the operating
// system's files, and SimFS, an in-memory twin that knows which bytes were
// synced and, on a simulated crash, keeps only those (or a torn prefix of the
// rest). Everything above the FS interface is written once for both; only
// OSFS touches the operating system. The twin's files (sim*.go) are
// deterministic and held to the lint in determinism_test.go at the root.
//
// disk may import the standard library, go.etcd.io/raft/v3/raftpb and
// google.golang.org/protobuf. It imports no other noded package but
// internal/raftwire (the log entry decoder disk and net share).
//
// # Using it
//
// Create (or Open) gives a Storage. On every raft Ready: Append(hardState,
// entries) writes the records through the FS at once; Sync makes everything
// appended since the last Sync durable with one sync of the open segment
// (fdatasync on Linux; group commit); only then may the member send the
// Ready's messages. SaveSnapshot makes a
// snapshot durable and releases what it covers. Any write or fsync error is
// returned by that call and by every call after it: the member must stop.
//
// # Format
//
// Records (record.go): a 32-byte header (body length, type, raft index and
// term, a chained record CRC-32C, a header CRC-32C), the body, and a
// non-zero end marker. The record CRC covers type, index, term and body and
// is seeded with the previous record's, so a record is valid only right
// after the record it was written after: misdirected writes, stale records
// and missing or swapped segments break the chain. The header CRC lets the
// length be trusted before anything is read or sized by it.
//
// Segments (segment.go): <seq>-<firstIndex>.wal, each opening with a head
// (segment header chained to the previous segment's last CRC, metadata, the
// newest snapshot record and hard state), so older segments can be removed.
// A full segment is fsynced before the next one starts, so only the newest
// segment can end torn. Each segment is allocated Options.SegmentSizeBytes
// of zeros (fallocate on Linux), durably, before its first record, and
// records are written at tracked offsets inside it, so that a sync flushes
// data without a metadata commit for a growing file, as etcd does; a
// segment is its records followed by zeros (a record may run past the
// allocation, growing the file).
//
// Snapshots (snap.go): <index>-<term>.snap, written to a temporary name,
// fsynced, renamed and the directory fsynced; then a snapshot record in the
// WAL, carrying the file's checksum and size, is the commit point. Only then
// are WAL segments released (up to the previous snapshot, so a damaged
// newest snapshot can fall back to it) and old snapshot files removed.
//
// # Opening
//
// Open replays the segments, reading zeros after a segment's last whole
// record as the end of its data (and leaving them, to append into), cuts a
// torn tail of the newest one (judged by shape: a record cut short, or a
// damaged header, followed only by zeros), and cuts stray bytes in its
// unused tail (zeros where the next record would start, then non-zero
// bytes that hold no sound record header and do not end in a record end
// marker: no record, synced or not, is there). It passes over whatever
// follows an older segment's last record when the next segment's header
// continues the log from that record. It refuses any other damage (a damaged whole record; stray bytes
// that could be records written in the wrong place or whose first blocks
// were lost) with a *CorruptError naming the file and the offset (of the
// damaged record, with the range its checks narrow the damage to, or of
// the first stray byte), picks the newest snapshot the WAL vouches for
// and continues from, and makes what it returns durable before returning
// it. A damaged snapshot file it passes over is renamed <name>.broken
// (kept, never read again). It never starts empty on a WAL that needs a
// snapshot it cannot find. Every repair and every file set aside is
// reported in Recovered.Notes (recovery.go): disk writes no logs, the
// member that opened it does.
//
// A restart reads every entry after the newest snapshot and the snapshot
// itself, so both are decoded without protobuf's reflection: entries by
// entry.go (the shapes the log writes; anything else by proto.Unmarshal),
// the snapshot's data left where the file was read rather than copied. A
// snapshot is written in pieces around its data, which is never copied
// into a file-sized buffer.
package disk
