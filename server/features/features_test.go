package features

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		flag    string
		on, off []Gate
		err     string
	}{
		{flag: "", on: []Gate{TxnModeWriteWithSharedBuffer, FastLeaseKeepAlive}, off: []Gate{InitialCorruptCheck, CompactHashCheck, LeaseCheckpoint}},
		{flag: "InitialCorruptCheck=true,CompactHashCheck=true", on: []Gate{InitialCorruptCheck, CompactHashCheck, TxnModeWriteWithSharedBuffer}, off: []Gate{LeaseCheckpoint}},
		{flag: " InitialCorruptCheck = true ,,", on: []Gate{InitialCorruptCheck}},
		{flag: "TxnModeWriteWithSharedBuffer=false,StopGRPCServiceOnDefrag=1", on: []Gate{StopGRPCServiceOnDefrag}, off: []Gate{TxnModeWriteWithSharedBuffer}},
		{flag: "AllAlpha=true", on: []Gate{InitialCorruptCheck, CompactHashCheck, LeaseCheckpoint, PriorityRequest, SetMemberLocalAddr}},
		{flag: "AllAlpha=true,LeaseCheckpoint=false", on: []Gate{InitialCorruptCheck}, off: []Gate{LeaseCheckpoint}},
		{flag: "LeaseCheckpoint=false,AllAlpha=true", on: []Gate{CompactHashCheck}, off: []Gate{LeaseCheckpoint}},
		{flag: "AllBeta=false", off: []Gate{TxnModeWriteWithSharedBuffer, FastLeaseKeepAlive}, on: []Gate{}},
		{flag: "Foo=true", err: "unrecognized feature gate: Foo"},
		{flag: "InitialCorruptCheck", err: "missing bool value for InitialCorruptCheck"},
		{flag: "InitialCorruptCheck=maybe", err: `invalid value of InitialCorruptCheck=maybe, err: strconv.ParseBool: parsing "maybe": invalid syntax`},
	}
	for _, tt := range tests {
		t.Run(tt.flag, func(t *testing.T) {
			g, err := Parse(tt.flag)
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, gate := range tt.on {
				if !g.Enabled(gate) {
					t.Errorf("%s is off", gate)
				}
			}
			for _, gate := range tt.off {
				if g.Enabled(gate) {
					t.Errorf("%s is on", gate)
				}
			}
		})
	}
}

// Gates that change nothing are reported once each, with the reason; gates
// left at their defaults and gates noded acts on are not.
func TestNoEffect(t *testing.T) {
	g, err := Parse("InitialCorruptCheck=true,LeaseCheckpoint=true,TxnModeWriteWithSharedBuffer=true")
	if err != nil {
		t.Fatal(err)
	}
	notes := g.NoEffect()
	if len(notes) != 2 || !strings.Contains(notes[0], "LeaseCheckpoint=true") || !strings.Contains(notes[1], "TxnModeWriteWithSharedBuffer=true") {
		t.Fatalf("notes %q", notes)
	}
	if notes := Default().NoEffect(); len(notes) != 0 {
		t.Errorf("defaults reported: %q", notes)
	}
	var zero Gates
	if !zero.Enabled(TxnModeWriteWithSharedBuffer) || zero.Enabled(InitialCorruptCheck) {
		t.Errorf("the zero Gates do not answer the defaults")
	}
	if !strings.HasPrefix(zero.String(), "AllAlpha=false,AllBeta=false,CompactHashCheck=false") {
		t.Errorf("String %q", zero.String())
	}
}

func TestUsageListsEveryGate(t *testing.T) {
	u := Usage()
	if len(u) != len(Known) || u[0] != "AllAlpha=true|false (ALPHA - default=false)" {
		t.Fatalf("usage %q", u)
	}
}
