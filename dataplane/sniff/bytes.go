package sniff

import (
	"bytes"
	"regexp"
)

// Prefix sniffs a literal prefix, the `bytes` protocol with `prefix` (like
// haproxy's payload matching): Match once b starts with prefix, NeedMore
// while b is a proper prefix of it, NoMatch on the first differing byte. An
// empty prefix matches everything at once. A prefix longer than MaxBytes can
// never be seen within the probe, so it is NoMatch.
func Prefix(b, prefix []byte) Verdict {
	if len(prefix) > MaxBytes {
		return NoMatch
	}
	n := min(len(b), len(prefix))
	if !bytes.Equal(b[:n], prefix[:n]) {
		return NoMatch
	}
	if n < len(prefix) {
		return NeedMore
	}
	return Match
}

// Regex sniffs the `bytes` protocol with `regex` (like sslh's regex probe):
// Match when re matches somewhere in the first MaxBytes bytes of b, NeedMore
// otherwise. It never answers NoMatch, because for most patterns more bytes
// could still match; the caller decides at the end of the probe (deadline or
// MaxBytes) that NeedMore is a miss.
//
// Unlike the protocol sniffers, a Match is final only for patterns that stay
// matched when bytes are appended: a pattern anchored at the end ($ without
// (?m), \z) may match a short stream and not a longer one. re is unanchored
// unless it says ^ or \A. Go's regexp runs in time linear in len(b), so a
// hostile pattern cannot stall the probe.
func Regex(b []byte, re *regexp.Regexp) Verdict {
	if re.Match(clip(b)) {
		return Match
	}
	return NeedMore
}

// Any is the `any` protocol: Match for every connection, bytes or not, so
// a route to a server-speaks-first backend does not wait for the client.
// A listener that wants silent clients elsewhere puts a `timeout` route
// before it (dataplane/route holds the decision while timeout is undecided).
func Any([]byte) (Verdict, Info) {
	return Match, Info{}
}
