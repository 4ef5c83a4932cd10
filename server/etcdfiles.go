package server

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.uber.org/zap"

	"github.com/noded/noded/disk"
	"github.com/noded/noded/node"
	"github.com/noded/noded/server/etcddata"
)

// Wiring of package etcddata: an etcd member's data directory converted
// in place when a member opens it, and the Maintenance Snapshot stream in
// etcd's format.

// prepareDataDir runs before the member opens its data directory: an etcd
// member's directory is converted (once) and the member's own files are
// then noded's beside etcd's; a noded directory is left as it is. It
// returns the WAL and snapshot directories to open (OS paths), and clears
// what an interrupted snapshot stream left in the data directory.
func (m *Member) prepareDataDir(fsys disk.FS, dataDir, walDir, snapDir string) (string, string, error) {
	rel := func(p string) string { return strings.TrimPrefix(filepath.ToSlash(p), "/") }
	abs := func(p string) string { return "/" + p }
	removeSnapshotStreamLeftovers(dataDir, m.lg)
	layout, err := etcddata.Prepare(etcddata.PrepareConfig{
		FS:        fsys,
		DataDir:   rel(dataDir),
		WALDir:    rel(walDir),
		SnapDir:   rel(snapDir),
		WALDirSet: m.cfg.WALDir != "",
		DBPath:    filepath.Join(snapDir, "db"),
		Options:   disk.Options{SnapshotsKept: m.cfg.MaxSnapshots},
		Logger:    m.lg,
	})
	if err != nil {
		return "", "", err
	}
	if layout.Etcd && layout.Converted == nil {
		m.lg.Info("etcd member's data directory, converted earlier; noded's files are beside etcd's",
			zap.String("noded-wal-dir", abs(layout.WALDir)), zap.String("noded-snap-dir", abs(layout.SnapDir)))
	}
	return filepath.FromSlash(abs(layout.WALDir)), filepath.FromSlash(abs(layout.SnapDir)), nil
}

// snapshotStreamDirPrefix names the temporary directories the Snapshot
// stream writes etcd's database into, in the data directory.
const snapshotStreamDirPrefix = ".snapshot-stream-"

func removeSnapshotStreamLeftovers(dataDir string, lg *zap.Logger) {
	leftovers, _ := filepath.Glob(filepath.Join(dataDir, snapshotStreamDirPrefix+"*"))
	for _, d := range leftovers {
		if err := os.RemoveAll(d); err != nil {
			lg.Warn("cannot remove an interrupted snapshot stream's files", zap.String("path", d), zap.Error(err))
		}
	}
}

// streamSnapshot is the Maintenance Snapshot RPC: the applied state,
// frozen on the loop, written off it as etcd's bbolt database, and sent in
// etcd's framing: 32 KiB chunks with the bytes remaining, then the sha256
// of everything sent as the last chunk. etcdctl and etcdutl check, restore
// and report it as they do etcd's.
func (m *Member) streamSnapshot(stream pb.Maintenance_SnapshotServer) error {
	var ex node.Exported
	var exErr error
	var st *memberState
	if err := m.call(stream.Context(), func() {
		ex, exErr = m.node.Export()
		st = m.state.Load()
	}); err != nil {
		return err
	}
	if exErr != nil {
		return exErr
	}
	dir, err := os.MkdirTemp(m.dataDir, snapshotStreamDirPrefix)
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	defer os.RemoveAll(dir)
	dbPath := filepath.Join(dir, "db")
	if err := etcddata.WriteSnapshotDB(dbPath, ex, ClusterVersion); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	f, err := os.Open(dbPath)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	size := fi.Size()
	h := sha256.New()
	for sent := int64(0); sent < size; {
		// A fresh buffer per chunk: gRPC may hold a sent message's bytes
		// after Send returns.
		buf := make([]byte, min(snapshotChunkBytes, size-sent))
		n, err := io.ReadFull(f, buf)
		if err != nil {
			return fmt.Errorf("snapshot: read %s: %w", dbPath, err)
		}
		h.Write(buf[:n])
		sent += int64(n)
		resp := &pb.SnapshotResponse{Header: m.stateHeader(st), RemainingBytes: uint64(size - sent), Blob: buf[:n]}
		if sent == int64(n) {
			resp.Version = ClusterVersion
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
	return stream.Send(&pb.SnapshotResponse{Header: m.stateHeader(st), Blob: h.Sum(nil)})
}

// snapshotChunkBytes is etcd's chunk size for the Snapshot stream.
const snapshotChunkBytes = 32 * 1024

// InitialMembers is the cluster --initial-cluster and
// --initial-cluster-token describe: its members, this member's ID (the one
// named --name, whose peer URLs must be --initial-advertise-peer-urls) and
// the cluster ID, derived as etcd derives them. `noded snapshot restore`
// lays out a data directory for it.
func (c Config) InitialMembers() (members []node.Member, self, clusterID uint64, err error) {
	return c.bootstrapMembers()
}
