package sim

import "go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

// answerOf is a member's answer to an applied entry as the agreement
// checker compares it: "ok", or the error's text.
func answerOf(err error) string {
	if err == nil {
		return "ok"
	}
	return rpctypes.ErrorDesc(err)
}

// checkAnswerAgreement compares the answer a member gave to the entry at an
// index with the first member's (auth-agreement: a permission decision is
// a pure function of replicated state, so every member must decide alike;
// apply-agreement for any other answer). It reports whether they agree.
func (w *world) checkAnswerAgreement(m *member, index uint64, rec *committedRecord, got error) bool {
	if answerOf(got) == rec.answer {
		return true
	}
	checker := "apply-agreement"
	if isAuthRefusal(got) || isAuthRefusal(rec.err) {
		checker = "auth-agreement"
	}
	w.fail(checker, "%s answered %q to the entry at index %d (%s), another member answered %q",
		m.name, answerOf(got), index, describeRequest(rec), rec.answer)
	return false
}

func describeRequest(rec *committedRecord) string {
	if rec.request == nil {
		return "no request"
	}
	s := rec.request.String()
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}
