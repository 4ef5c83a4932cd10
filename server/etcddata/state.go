package etcddata

import (
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/noded/noded/disk/etcdformat"
	"github.com/noded/noded/kvsm"
)

// etcd's files hold noded's state: etcdformat reads them into a Sink and
// writes them from a Source; here the Sink builds a kvsm.Store and the
// Source walks one.

// storeConfig is the kvsm configuration a state is read with. The member's
// own configuration replaces it when the member starts from the state.
var storeConfig = kvsm.Config{}

// builder is etcdformat's Sink over a kvsm.Builder. Revisions convert as
// they are: the two types have the same fields.
type builder struct{ b *kvsm.Builder }

func (b builder) AddRevision(r etcdformat.Revision) error { return b.b.AddRevision(kvsm.Revision(r)) }
func (b builder) MarkRevision(rev int64)                  { b.b.MarkRevision(rev) }
func (b builder) AddLease(l etcdformat.Lease) error       { return b.b.AddLease(l.ID, l.GrantedTTLSeconds) }
func (b builder) AddAlarm(memberID uint64, alarm pb.AlarmType) error {
	return b.b.AddAlarm(memberID, alarm)
}

// ReadSnapshot reads a snapshot file (etcd 3.4 to 3.7's, or noded's) into
// a store, and fills in the status's live key count.
func ReadSnapshot(path string, opts etcdformat.ReadOptions) (*etcdformat.State, *kvsm.Store, error) {
	return read(path, opts, etcdformat.ReadSnapshot)
}

// readDB reads an etcd member's database into a store.
func readDB(path string, opts etcdformat.ReadOptions) (*etcdformat.State, *kvsm.Store, error) {
	return read(path, opts, etcdformat.ReadDB)
}

func read(path string, opts etcdformat.ReadOptions,
	from func(string, etcdformat.ReadOptions, etcdformat.Sink) (*etcdformat.State, error)) (*etcdformat.State, *kvsm.Store, error) {
	b := builder{kvsm.NewBuilder(storeConfig)}
	st, err := from(path, opts, b)
	if err != nil {
		return nil, nil, err
	}
	return build(st, b)
}

func build(st *etcdformat.State, b builder) (*etcdformat.State, *kvsm.Store, error) {
	var s *kvsm.Store
	var err error
	if st.NodedV1 != nil {
		s, err = kvsm.Restore(storeConfig, st.NodedV1)
	} else {
		a := st.Auth
		if err := b.b.SetAuth(kvsm.AuthExport{Enabled: a.Enabled, Revision: a.Revision, Users: a.Users, Roles: a.Roles}); err != nil {
			return nil, nil, err
		}
		s, err = b.b.Build(0, st.CompactRev)
	}
	if err != nil {
		return nil, nil, err
	}
	if st.NodedV1 != nil {
		st.CompactRev, st.Status.Revision = s.CompactRev(), s.Rev()
	}
	st.Status.TotalKey = liveKeys(s)
	return st, s, nil
}

// Status is `snapshot status`: what etcdutl reports of a snapshot file,
// which it reads whether or not its trailer checks.
func Status(path string) (etcdformat.Status, error) {
	st, _, err := ReadSnapshot(path, etcdformat.ReadOptions{SkipHashCheck: true})
	if err != nil {
		return etcdformat.Status{}, err
	}
	return st.Status, nil
}

// liveKeys counts the keys that exist at the store's current revision.
func liveKeys(s *kvsm.Store) int {
	resp, err := s.Range(&pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, CountOnly: true})
	if err != nil {
		return 0
	}
	return int(resp.GetCount())
}

// sourceOf is etcdformat's Source for a frozen store: its revisions in
// order, its compaction, leases and alarms. The rest (members, raft
// position, versions) the caller fills in.
func sourceOf(view *kvsm.View, leases []kvsm.LeaseInfo, alarms []*pb.AlarmMember) *etcdformat.Source {
	src := &etcdformat.Source{
		Revisions: func(yield func(etcdformat.Revision) bool) {
			view.ScanRevisions(func(r kvsm.Revision) bool { return yield(etcdformat.Revision(r)) })
		},
		CompactRev: view.CompactRev(),
		Alarms:     alarms,
	}
	a := view.Auth()
	src.Auth = etcdformat.Auth{Enabled: a.Enabled, Revision: a.Revision, Users: a.Users, Roles: a.Roles}
	for _, l := range leases {
		src.Leases = append(src.Leases, etcdformat.Lease{ID: l.ID, GrantedTTLSeconds: l.GrantedTTLSeconds})
	}
	return src
}
