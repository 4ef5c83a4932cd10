// Package features parses etcd's --feature-gates: a comma-separated list
// of Name=true|false for etcd 3.7's server feature gates, with etcd's
// syntax, names, defaults and error messages (AllAlpha and AllBeta set
// every alpha or beta gate not named explicitly). A member reads the
// result through Gates.Enabled; gates that change nothing in noded are
// accepted and reported by NoEffect so the member can say so once.
//
// features may import the standard library only.
package features

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Gate is a feature gate's name.
type Gate string

// etcd 3.7's server feature gates.
const (
	AllAlpha                     Gate = "AllAlpha"
	AllBeta                      Gate = "AllBeta"
	CompactHashCheck             Gate = "CompactHashCheck"
	FastLeaseKeepAlive           Gate = "FastLeaseKeepAlive"
	InitialCorruptCheck          Gate = "InitialCorruptCheck"
	LeaseCheckpoint              Gate = "LeaseCheckpoint"
	LeaseCheckpointPersist       Gate = "LeaseCheckpointPersist"
	PriorityRequest              Gate = "PriorityRequest"
	SetMemberLocalAddr           Gate = "SetMemberLocalAddr"
	StopGRPCServiceOnDefrag      Gate = "StopGRPCServiceOnDefrag"
	TxnModeWriteWithSharedBuffer Gate = "TxnModeWriteWithSharedBuffer"
)

// Stage is a gate's maturity, as etcd prints it.
type Stage string

const (
	Alpha Stage = "ALPHA"
	Beta  Stage = "BETA"
)

// Spec is a gate's default and stage, and what it means for noded.
type Spec struct {
	Default bool
	Stage   Stage
	// NoEffect, when not empty, says why setting the gate changes nothing
	// in noded (it is accepted so etcd's command lines run unchanged).
	NoEffect string
}

// Known are the gates etcd 3.7 knows. Gates whose behaviour noded has (or
// will have: InitialCorruptCheck and CompactHashCheck belong to the
// corruption checks) have an empty NoEffect.
var Known = map[Gate]Spec{
	AllAlpha:                     {Default: false, Stage: Alpha},
	AllBeta:                      {Default: false, Stage: Beta},
	CompactHashCheck:             {Default: false, Stage: Alpha},
	InitialCorruptCheck:          {Default: false, Stage: Alpha},
	FastLeaseKeepAlive:           {Default: true, Stage: Beta, NoEffect: "a keepalive is answered by the leader without waiting for the applied index either way"},
	LeaseCheckpoint:              {Default: false, Stage: Alpha, NoEffect: "leases are not checkpointed: a new leader gives every lease its full TTL"},
	LeaseCheckpointPersist:       {Default: false, Stage: Alpha, NoEffect: "leases are not checkpointed: a new leader gives every lease its full TTL"},
	PriorityRequest:              {Default: false, Stage: Alpha, NoEffect: "requests are applied in log order"},
	SetMemberLocalAddr:           {Default: false, Stage: Alpha, NoEffect: "peers are dialled from the address the operating system picks"},
	StopGRPCServiceOnDefrag:      {Default: false, Stage: Alpha, NoEffect: "defragmentation does not pause serving (there is no bbolt file to defragment)"},
	TxnModeWriteWithSharedBuffer: {Default: true, Stage: Beta, NoEffect: "transactions never copy a read buffer"},
}

// Gates are the feature gates after parsing: every known gate with its
// value.
type Gates struct {
	enabled map[Gate]bool
	set     map[Gate]bool // named on the command line (not AllAlpha/AllBeta's doing)
}

// Default returns every gate at its default.
func Default() Gates {
	g := Gates{enabled: map[Gate]bool{}, set: map[Gate]bool{}}
	for name, spec := range Known {
		g.enabled[name] = spec.Default
	}
	return g
}

// Parse reads --feature-gates: "Name=bool,Name=bool"; empty items are
// skipped. Errors are etcd's.
func Parse(s string) (Gates, error) {
	g := Default()
	values := map[Gate]bool{}
	for _, item := range strings.Split(s, ",") {
		if item == "" {
			continue
		}
		name, value, ok := strings.Cut(item, "=")
		name = strings.TrimSpace(name)
		if !ok {
			return Gates{}, fmt.Errorf("missing bool value for %s", name)
		}
		value = strings.TrimSpace(value)
		b, err := strconv.ParseBool(value)
		if err != nil {
			return Gates{}, fmt.Errorf("invalid value of %s=%s, err: %w", name, value, err)
		}
		if _, known := Known[Gate(name)]; !known {
			return Gates{}, fmt.Errorf("unrecognized feature gate: %s", name)
		}
		values[Gate(name)] = b
	}
	// AllAlpha and AllBeta first, so a gate named explicitly wins.
	for _, all := range []struct {
		gate  Gate
		stage Stage
	}{{AllAlpha, Alpha}, {AllBeta, Beta}} {
		v, ok := values[all.gate]
		if !ok {
			continue
		}
		for name, spec := range Known {
			if spec.Stage == all.stage && name != AllAlpha && name != AllBeta {
				g.enabled[name] = v
			}
		}
	}
	for name, v := range values {
		g.enabled[name] = v
		g.set[name] = true
	}
	return g, nil
}

// Enabled reports whether gate is on. An unknown gate is off.
func (g Gates) Enabled(gate Gate) bool {
	if g.enabled == nil {
		return Known[gate].Default
	}
	return g.enabled[gate]
}

// Set reports whether gate was named in the flag.
func (g Gates) Set(gate Gate) bool { return g.set[gate] }

// String lists every gate as Name=bool, sorted, as etcd logs them.
func (g Gates) String() string {
	if g.enabled == nil {
		g = Default()
	}
	var pairs []string
	for name, v := range g.enabled {
		pairs = append(pairs, fmt.Sprintf("%s=%t", name, v))
	}
	sort.Strings(pairs)
	return strings.Join(pairs, ",")
}

// NoEffect lists the gates whose value differs from their default (or
// that were named) but change nothing in noded, each with the reason, in
// name order, for the member to log once at start.
func (g Gates) NoEffect() []string {
	var out []string
	for name, spec := range Known {
		if spec.NoEffect == "" || (!g.set[name] && g.Enabled(name) == spec.Default) {
			continue
		}
		out = append(out, fmt.Sprintf("feature gate %s=%t is accepted and has no effect in noded: %s", name, g.Enabled(name), spec.NoEffect))
	}
	sort.Strings(out)
	return out
}

// Usage lists the gates for --help as etcd does: Name=true|false (STAGE -
// default=bool), in name order.
func Usage() []string {
	var out []string
	for name, spec := range Known {
		out = append(out, fmt.Sprintf("%s=true|false (%s - default=%t)", name, spec.Stage, spec.Default))
	}
	sort.Strings(out)
	return out
}
