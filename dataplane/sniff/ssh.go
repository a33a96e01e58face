package sniff

// The identification prefixes a client may send (RFC 4253 §4.2 and §5.1):
// "SSH-2.0-" from every SSH-2 client, "SSH-1.99-" from software that also
// speaks SSH-1. SSH-1 proper ("SSH-1.5-") is obsolete and not matched.
const (
	sshPrefix20  = "SSH-2.0-"
	sshPrefix199 = "SSH-1.99-"
)

// sshMaxLine is the longest identification string without its CR LF: RFC
// 4253 §4.2 allows 255 characters including CR LF.
const sshMaxLine = 255 - 2

// SSH sniffs an SSH client by its identification string (RFC 4253 §4.2,
// https://www.rfc-editor.org/rfc/rfc4253#section-4.2). Only servers may send
// other lines before theirs; the client speaks first with
// "SSH-protoversion-softwareversion SP comments CR LF", so the stream must
// start with "SSH-2.0-" or "SSH-1.99-".
//
// It answers Match as soon as that prefix is there, without waiting for the
// CR LF: a banner split over segments is routed as early as a whole one.
// SSHVersion is the line up to its CR or LF, cut at 253 bytes; while the line
// end has not arrived it is what has arrived so far, so it may grow with more
// bytes (it is the one Info field that can, and only by being extended).
func SSH(b []byte) (Verdict, Info) {
	b = clip(b)
	v := prefixVerdict(b, sshPrefix20)
	if v == NoMatch {
		v = prefixVerdict(b, sshPrefix199)
	}
	if v != Match {
		return v, Info{}
	}
	line := b[:min(len(b), sshMaxLine)]
	for i, c := range line {
		if c == '\r' || c == '\n' {
			line = line[:i]
			break
		}
	}
	return Match, Info{SSHVersion: string(line)}
}
