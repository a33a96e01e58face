package forward

import "errors"

// ErrNothingQueued is ReadQueued's answer when the socket has no bytes
// waiting: the caller waits for them (ReadOrWait), under a deadline.
var ErrNothingQueued = errors.New("nothing queued")
