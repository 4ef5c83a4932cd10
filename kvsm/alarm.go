package kvsm

import (
	"cmp"
	"slices"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// Alarms are state: they are raised and cleared through committed
// AlarmRequests, so every member agrees on them. A NOSPACE alarm (from any
// member) makes Put, putting Txns and LeaseGrant fail with ErrGRPCNoSpace; a
// CORRUPT alarm makes every request but Alarm fail with ErrGRPCCorrupt.

func compareAlarm(a, b *pb.AlarmMember) int {
	if c := cmp.Compare(a.GetMemberID(), b.GetMemberID()); c != 0 {
		return c
	}
	return cmp.Compare(a.GetAlarm(), b.GetAlarm())
}

// Alarms returns the active alarms sorted by member ID, then alarm type.
// The messages are fresh copies.
func (s *Store) Alarms() []*pb.AlarmMember {
	return cloneAlarms(s.alarms)
}

func cloneAlarms(in []*pb.AlarmMember) []*pb.AlarmMember {
	out := make([]*pb.AlarmMember, len(in))
	for i, a := range in {
		out[i] = &pb.AlarmMember{MemberID: a.GetMemberID(), Alarm: a.GetAlarm()}
	}
	return out
}

func (s *Store) alarmActive(t pb.AlarmType) bool {
	for _, a := range s.alarms {
		if a.GetAlarm() == t {
			return true
		}
	}
	return false
}

func (s *Store) alarmsOfType(t pb.AlarmType) []*pb.AlarmMember {
	var out []*pb.AlarmMember
	for _, a := range s.alarms {
		if t == pb.AlarmType_NONE || a.GetAlarm() == t {
			out = append(out, a)
		}
	}
	return cloneAlarms(out)
}

// applyAlarm is etcd's applierV3backend.Alarm: GET lists alarms of a type
// (NONE: all); ACTIVATE adds one (NONE is ignored) and answers it, even if
// it was already active; DEACTIVATE removes one and answers it if it was
// active. An unknown action answers nothing.
func (s *Store) applyAlarm(r *pb.AlarmRequest) ApplyResult {
	resp := &pb.AlarmResponse{Header: s.header()}
	m := &pb.AlarmMember{MemberID: r.GetMemberID(), Alarm: r.GetAlarm()}
	i, found := slices.BinarySearchFunc(s.alarms, m, compareAlarm)
	switch r.GetAction() {
	case pb.AlarmRequest_GET:
		resp.Alarms = s.alarmsOfType(r.GetAlarm())
	case pb.AlarmRequest_ACTIVATE:
		if r.GetAlarm() == pb.AlarmType_NONE {
			break
		}
		if !found {
			s.alarms = slices.Insert(s.alarms, i, m)
		}
		resp.Alarms = cloneAlarms([]*pb.AlarmMember{m})
	case pb.AlarmRequest_DEACTIVATE:
		if !found {
			break
		}
		s.alarms = slices.Delete(s.alarms, i, i+1)
		resp.Alarms = cloneAlarms([]*pb.AlarmMember{m})
	}
	s.kv.corrupt = s.alarmActive(pb.AlarmType_CORRUPT)
	return ApplyResult{Resp: resp, Rev: s.kv.rev}
}
