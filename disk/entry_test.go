package disk

import (
	"math/rand/v2"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// decodeEntry decodes exactly what proto.Unmarshal does: entries as the log
// writes them, and random changes of them (other field orders, repeats,
// unknown fields and types, truncations) either alike or both refused.
func TestDecodeEntryIsProtoUnmarshal(t *testing.T) {
	var corpus [][]byte
	for _, e := range []*raftpb.Entry{
		{Term: proto.Uint64(3), Index: proto.Uint64(17), Type: raftpb.EntryType_EntryNormal.Enum(), Data: []byte("put k v")},
		{Term: proto.Uint64(1), Index: proto.Uint64(1), Type: raftpb.EntryType_EntryConfChange.Enum(), Data: []byte{}},
		{Term: proto.Uint64(1 << 40), Index: proto.Uint64(1<<63 + 5)},
		{Type: raftpb.EntryType_EntryConfChangeV2.Enum()},
		{},
	} {
		b, err := marshalOptions.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		corpus = append(corpus, b)
	}
	// Shapes proto accepts that the log never writes.
	field := protowire.AppendTag(nil, 2, protowire.VarintType)
	corpus = append(corpus,
		protowire.AppendVarint(append(corpus[0], field...), 9),                                        // Term twice
		protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 7),                  // unknown enum value
		protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 1<<64-1),            // negative enum value
		protowire.AppendBytes(protowire.AppendTag(nil, 9, protowire.BytesType), []byte("x")),          // unknown field
		protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), []byte("x")),          // wrong wire type
		protowire.AppendVarint(protowire.AppendTag(nil, 4, protowire.VarintType), 1),                  // data as a varint
		append(protowire.AppendTag(nil, 3, protowire.VarintType), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), // truncated varint
	)
	rng := rand.New(rand.NewPCG(7, 7))
	check := func(b []byte) {
		t.Helper()
		want := &raftpb.Entry{}
		wantErr := proto.Unmarshal(b, want)
		got, err := decodeEntry(b)
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("%x: error %v, proto.Unmarshal's %v", b, err, wantErr)
		}
		if err == nil && !proto.Equal(got, want) {
			t.Fatalf("%x: decoded %v, proto.Unmarshal %v", b, got, want)
		}
	}
	for _, b := range corpus {
		check(b)
		for range 2000 {
			m := append([]byte(nil), b...)
			switch rng.IntN(3) {
			case 0:
				if len(m) > 0 {
					m[rng.IntN(len(m))] = byte(rng.IntN(256))
				}
			case 1:
				m = m[:rng.IntN(len(m)+1)]
			case 2:
				m = append(m, corpus[rng.IntN(len(corpus))]...)
			}
			check(m)
		}
	}
	// The entries a put makes: one allocation for the entry, one for its data.
	b := corpus[0]
	if n := testing.AllocsPerRun(100, func() { _, _ = decodeEntry(b) }); n != 2 {
		t.Fatalf("decodeEntry makes %v allocations, want 2", n)
	}
}
