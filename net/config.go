package net

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"time"
)

// Config configures a TCPTransport. Zero durations and sizes take the
// defaults below.
type Config struct {
	LocalID   uint64 // this member; non-zero
	ClusterID uint64 // the cluster this member belongs to; non-zero

	// TLS is used to dial https peer URLs (set Certificates for mutual
	// TLS). nil means https peer URLs cannot be dialled. Accepting TLS is
	// the server's business: it wraps the listeners it hands to Serve
	// (tls.NewListener).
	TLS *tls.Config

	// QueueMessagesMax bounds each peer's outbound queue. When it is full
	// Send drops the message and reports the peer unreachable; raft
	// resends.
	QueueMessagesMax int
	// DialTimeout bounds setting up a connection on either side: TCP
	// connect, TLS handshake and the hello exchange.
	DialTimeout time.Duration
	// WriteTimeout bounds one batch write to a peer. A peer that does not
	// take the bytes in this time is treated as gone and redialled.
	WriteTimeout time.Duration
	// IdleTimeout closes a stream that heard nothing for this long: an
	// inbound stream that delivered no frame, an outbound stream whose
	// keepalives got no echo. Senders write a keepalive every
	// IdleTimeout/keepalivesPerIdle, so only a dead, partitioned or wedged
	// peer reaches it. Give every member the same value: a member's
	// keepalive rhythm follows its own setting, its peer's patience theirs.
	IdleTimeout time.Duration
	// BackoffMin and BackoffMax bound the jittered exponential wait
	// between dial attempts to a peer.
	BackoffMin time.Duration
	BackoffMax time.Duration

	// SnapshotChunkBytes is the payload size of one snapshot chunk.
	SnapshotChunkBytes int
	// SnapshotBytesMax refuses inbound snapshots whose data is larger
	// (the server derives it from the member's quota), before any of the
	// data is read.
	SnapshotBytesMax int64
	// SnapshotSpoolDir, when set, receives inbound snapshot data: chunks
	// are written to a file there as they arrive (incoming-*.part, removed
	// once the snapshot is taken or refused, and at start if a crash left
	// one), so a snapshot stream holds no more memory than one chunk until
	// it is complete and its CRC checked. Empty: chunks are kept in memory.
	SnapshotSpoolDir string
	// FrameBytesMax refuses inbound frames (and outbound messages) whose
	// payload is larger. It must exceed the largest raft message: the
	// server's max-request-bytes plus entry and message overhead, or raft's
	// MaxSizePerMsg plus one entry, whichever is larger.
	FrameBytesMax int

	// OnRemoved is called once, from a transport goroutine, when a peer
	// refuses this member because it was removed from the cluster (the
	// peer called RemovePeer for it). A member removed while cut off
	// learns it this way and must stop, as etcd's does. It must not block
	// or call Close: it hands the news to the member loop. nil: the news is
	// only logged.
	OnRemoved func(by uint64)

	// Logger receives the transport's log lines (connections made and lost,
	// refusals, protocol errors). nil logs through the standard library's
	// log.Printf.
	Logger func(format string, args ...any)
	// WarnLogger receives the lines an operator must see: a peer, or
	// something posing as one, broke the protocol or was refused. nil:
	// Logger.
	WarnLogger func(format string, args ...any)
}

const (
	defaultQueueMessagesMax   = 4096
	defaultDialTimeout        = 2 * time.Second
	defaultWriteTimeout       = 5 * time.Second
	defaultIdleTimeout        = 5 * time.Second
	defaultBackoffMin         = 50 * time.Millisecond
	defaultBackoffMax         = 1 * time.Second
	defaultSnapshotChunkBytes = 1 << 20
	defaultSnapshotBytesMax   = 8 << 30
	defaultFrameBytesMax      = 16 << 20

	// keepalivesPerIdle keepalives fit in one IdleTimeout, so a few lost
	// to scheduling delays on a loaded machine do not close a live stream.
	keepalivesPerIdle = 4
)

// withDefaults returns cfg with zero fields set to their defaults, or an
// error naming the first invalid field.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.LocalID == 0 {
		return cfg, errors.New("net: Config.LocalID must be non-zero")
	}
	if cfg.ClusterID == 0 {
		return cfg, errors.New("net: Config.ClusterID must be non-zero")
	}
	setDefault(&cfg.QueueMessagesMax, defaultQueueMessagesMax)
	setDefault(&cfg.DialTimeout, defaultDialTimeout)
	setDefault(&cfg.WriteTimeout, defaultWriteTimeout)
	setDefault(&cfg.IdleTimeout, defaultIdleTimeout)
	setDefault(&cfg.BackoffMin, defaultBackoffMin)
	setDefault(&cfg.BackoffMax, defaultBackoffMax)
	setDefault(&cfg.SnapshotChunkBytes, defaultSnapshotChunkBytes)
	setDefault(&cfg.SnapshotBytesMax, defaultSnapshotBytesMax)
	setDefault(&cfg.FrameBytesMax, defaultFrameBytesMax)
	if cfg.Logger == nil {
		cfg.Logger = log.Printf
	}
	if cfg.WarnLogger == nil {
		cfg.WarnLogger = cfg.Logger
	}
	for _, f := range []struct {
		name  string
		value int64
	}{
		{"QueueMessagesMax", int64(cfg.QueueMessagesMax)},
		{"DialTimeout", int64(cfg.DialTimeout)},
		{"WriteTimeout", int64(cfg.WriteTimeout)},
		{"IdleTimeout", int64(cfg.IdleTimeout)},
		{"BackoffMin", int64(cfg.BackoffMin)},
		{"BackoffMax", int64(cfg.BackoffMax)},
		{"SnapshotChunkBytes", int64(cfg.SnapshotChunkBytes)},
		{"SnapshotBytesMax", cfg.SnapshotBytesMax},
		{"FrameBytesMax", int64(cfg.FrameBytesMax)},
	} {
		if f.value < 0 {
			return cfg, fmt.Errorf("net: Config.%s is negative (%d)", f.name, f.value)
		}
	}
	if cfg.IdleTimeout < keepalivesPerIdle*time.Millisecond {
		return cfg, fmt.Errorf("net: Config.IdleTimeout %v is below %v", cfg.IdleTimeout, keepalivesPerIdle*time.Millisecond)
	}
	if cfg.BackoffMin > cfg.BackoffMax {
		return cfg, fmt.Errorf("net: Config.BackoffMin %v exceeds BackoffMax %v", cfg.BackoffMin, cfg.BackoffMax)
	}
	if cfg.SnapshotChunkBytes > cfg.FrameBytesMax {
		return cfg, fmt.Errorf("net: Config.SnapshotChunkBytes %d exceeds FrameBytesMax %d", cfg.SnapshotChunkBytes, cfg.FrameBytesMax)
	}
	if uint64(cfg.FrameBytesMax) > 1<<32-1 {
		return cfg, fmt.Errorf("net: Config.FrameBytesMax %d does not fit the 32-bit length prefix", cfg.FrameBytesMax)
	}
	return cfg, nil
}

func setDefault[T int | int64 | time.Duration](field *T, value T) {
	if *field == 0 {
		*field = value
	}
}
