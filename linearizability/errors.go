package linearizability

import (
	"maps"
	"slices"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// errorKind is a response error as the model understands it. The three
// groups are described in the package doc.
type errorKind uint8

const (
	errNone errorKind = iota

	// Applied (or refused at apply) with no effect; whether the error is
	// right depends on the state at the linearization point.
	errCompacted
	errFutureRev
	errLeaseNotFound
	errKeyNotFound
	errLeaseExist
	errLeaseTTLTooLarge

	// Refused by validation before raft; a function of the request alone.
	errEmptyKey
	errValueProvided
	errLeaseProvided
	errTooManyOps
	errDuplicateKey
	errInvalidSortOption
	errRequestTooLarge
	// errEmptyOp is etcd's KeyNotFound for a txn holding an empty RequestOp:
	// the same error text as errKeyNotFound, told apart by the request.
	errEmptyOp

	// The outcome is unknown: the request may or may not have been applied.
	errIndeterminate
)

var errorNames = [...]string{
	errNone:              "ok",
	errCompacted:         "Compacted",
	errFutureRev:         "FutureRev",
	errLeaseNotFound:     "LeaseNotFound",
	errKeyNotFound:       "KeyNotFound",
	errLeaseExist:        "LeaseExist",
	errLeaseTTLTooLarge:  "LeaseTTLTooLarge",
	errEmptyKey:          "EmptyKey",
	errValueProvided:     "ValueProvided",
	errLeaseProvided:     "LeaseProvided",
	errTooManyOps:        "TooManyOps",
	errDuplicateKey:      "DuplicateKey",
	errInvalidSortOption: "InvalidSortOption",
	errRequestTooLarge:   "RequestTooLarge",
	errEmptyOp:           "KeyNotFound(empty op)",
	errIndeterminate:     "indeterminate",
}

func (e errorKind) String() string { return errorNames[e] }

// refusedBeforeRaft reports whether the error means the request never
// happened.
func (e errorKind) refusedBeforeRaft() bool { return e >= errEmptyKey && e <= errEmptyOp }

// knownErrors maps the description of each error the model reads to its
// kind. Errors are matched by description, not identity, so both the
// server-side status errors and the client-side rpctypes.Err* twins work.
var knownErrors = map[string]errorKind{
	rpctypes.ErrorDesc(rpctypes.ErrGRPCCompacted):         errCompacted,
	rpctypes.ErrorDesc(rpctypes.ErrGRPCFutureRev):         errFutureRev,
	rpctypes.ErrorDesc(rpctypes.ErrGRPCLeaseNotFound):     errLeaseNotFound,
	rpctypes.ErrorDesc(rpctypes.ErrGRPCKeyNotFound):       errKeyNotFound,
	rpctypes.ErrorDesc(rpctypes.ErrGRPCLeaseExist):        errLeaseExist,
	rpctypes.ErrorDesc(rpctypes.ErrGRPCLeaseTTLTooLarge):  errLeaseTTLTooLarge,
	rpctypes.ErrorDesc(rpctypes.ErrGRPCEmptyKey):          errEmptyKey,
	rpctypes.ErrorDesc(rpctypes.ErrGRPCValueProvided):     errValueProvided,
	rpctypes.ErrorDesc(rpctypes.ErrGRPCLeaseProvided):     errLeaseProvided,
	rpctypes.ErrorDesc(rpctypes.ErrGRPCTooManyOps):        errTooManyOps,
	rpctypes.ErrorDesc(rpctypes.ErrGRPCDuplicateKey):      errDuplicateKey,
	rpctypes.ErrorDesc(rpctypes.ErrGRPCInvalidSortOption): errInvalidSortOption,
	rpctypes.ErrorDesc(rpctypes.ErrGRPCRequestTooLarge):   errRequestTooLarge,
}

// classifyError reads a response error. KeyNotFound is a validation error
// only for a txn holding an empty RequestOp; otherwise it is ignore_value or
// ignore_lease on a missing key, decided at apply.
func classifyError(err error, req *request) errorKind {
	if err == nil {
		return errNone
	}
	kind, ok := knownErrors[rpctypes.ErrorDesc(err)]
	if !ok {
		return errIndeterminate
	}
	if kind == errKeyNotFound && req.kind == kindTxn && hasEmptyOp(req.txn) {
		return errEmptyOp
	}
	return kind
}

func hasEmptyOp(t *txnOp) bool {
	for _, branch := range [][]*request{t.success, t.failure} {
		for _, r := range branch {
			if r.kind == kindNone || (r.kind == kindTxn && hasEmptyOp(r.txn)) {
				return true
			}
		}
	}
	return false
}

// validationErrors returns every error validation before raft may give the
// request, in etcd's order of checks; nil means the request is valid. More
// than one entry appears when the request breaks several rules (the server
// reports the first it checks, and noded need not check in etcd's order),
// or when etcd's interval check and the documented rule disagree (a put
// inside a from-key delete of the same txn; see checkDuplicates).
// RequestTooLarge is not derived: the size limit is not part of the input,
// so a RequestTooLarge refusal is taken at its word.
func validationErrors(r *request, maxTxnOps int) []errorKind {
	var errs []errorKind
	switch r.kind {
	case kindRange:
		errs = validateRange(r.rng)
	case kindPut:
		errs = validatePut(r.put)
	case kindDeleteRange:
		if r.del.keys.start == "" {
			errs = append(errs, errEmptyKey)
		}
	case kindTxn:
		errs = validateTxn(r.txn, maxTxnOps)
		if len(errs) == 0 {
			strict, etcd := checkDuplicates(r.txn)
			if strict || etcd {
				errs = append(errs, errDuplicateKey)
			}
			if strict != etcd {
				// Either answer is right: say so with errNone in the set.
				errs = append(errs, errNone)
			}
		}
	}
	return errs
}

func validateRange(r *rangeOp) []errorKind {
	var errs []errorKind
	if r.emptyKey {
		errs = append(errs, errEmptyKey)
	}
	if _, ok := pb.RangeRequest_SortOrder_name[int32(r.sortOrder)]; !ok {
		errs = append(errs, errInvalidSortOption)
	} else if _, ok := pb.RangeRequest_SortTarget_name[int32(r.sortTarget)]; !ok {
		errs = append(errs, errInvalidSortOption)
	}
	return errs
}

func validatePut(p *putOp) []errorKind {
	var errs []errorKind
	if p.key == "" {
		errs = append(errs, errEmptyKey)
	}
	if p.ignoreValue && p.value != "" {
		errs = append(errs, errValueProvided)
	}
	if p.ignoreLease && p.lease != 0 {
		errs = append(errs, errLeaseProvided)
	}
	return errs
}

// validateTxn follows etcd's checkTxnRequest: the widest of compare, success
// and failure counts against the limit, and a nested txn gets what is left.
func validateTxn(t *txnOp, maxTxnOps int) []errorKind {
	var errs []errorKind
	width := max(len(t.compares), len(t.success), len(t.failure))
	if width > maxTxnOps {
		errs = append(errs, errTooManyOps)
	}
	for _, c := range t.compares {
		if c.keys.start == "" {
			errs = append(errs, errEmptyKey)
			break
		}
	}
	for _, branch := range [][]*request{t.success, t.failure} {
		for _, r := range branch {
			switch r.kind {
			case kindNone:
				errs = append(errs, errEmptyOp)
			case kindTxn:
				errs = append(errs, validateTxn(r.txn, maxTxnOps-width)...)
			default:
				errs = append(errs, validationErrors(r, maxTxnOps)...)
			}
		}
	}
	return errs
}

// checkDuplicates applies etcd's checkIntervals: no key is put twice in one
// branch, and no put lands in a range deleted in the same branch (nested
// txns' puts and deletes count for their parent; the two branches of one
// nested txn may put the same key). It answers twice: strict treats a
// from-key delete ("\x00" range_end) as covering every key at or after its
// key, as the API documents; etcd's interval tree reads "\x00" as a plain
// end key, so such a delete covers nothing there.
func checkDuplicates(t *txnOp) (strict, etcd bool) {
	_, _, strict = duplicates(t.success, true)
	if !strict {
		_, _, strict = duplicates(t.failure, true)
	}
	_, _, etcd = duplicates(t.success, false)
	if !etcd {
		_, _, etcd = duplicates(t.failure, false)
	}
	return strict, etcd
}

func deleteCovers(d keyRange, key string, strict bool) bool {
	if d.shape == shapeFromKey && !strict {
		return false
	}
	return d.contains(key)
}

func duplicates(ops []*request, strict bool) (puts map[string]bool, dels []keyRange, dup bool) {
	for _, r := range ops {
		if r.kind == kindDeleteRange {
			dels = append(dels, r.del.keys)
		}
	}
	covered := func(key string) bool {
		for _, d := range dels {
			if deleteCovers(d, key, strict) {
				return true
			}
		}
		return false
	}
	puts = map[string]bool{}
	for _, r := range ops {
		if r.kind != kindTxn {
			continue
		}
		putsThen, delsThen, dupThen := duplicates(r.txn.success, strict)
		if dupThen {
			return nil, nil, true
		}
		putsElse, delsElse, dupElse := duplicates(r.txn.failure, strict)
		if dupElse {
			return nil, nil, true
		}
		for _, k := range sortedKeys(putsThen) {
			if puts[k] || covered(k) {
				return nil, nil, true
			}
			puts[k] = true
		}
		for _, k := range sortedKeys(putsElse) {
			if (puts[k] && !putsThen[k]) || covered(k) {
				return nil, nil, true
			}
			puts[k] = true
		}
		dels = append(dels, delsThen...)
		dels = append(dels, delsElse...)
	}
	for _, r := range ops {
		if r.kind != kindPut {
			continue
		}
		if puts[r.put.key] || covered(r.put.key) {
			return nil, nil, true
		}
		puts[r.put.key] = true
	}
	return puts, dels, false
}

func sortedKeys(m map[string]bool) []string {
	return slices.Sorted(maps.Keys(m))
}
