package peers

import (
	"errors"
	"testing"
	"time"
)

// IOTimeout bounds any single wait of a test for bytes, a datagram or an
// end of stream. It is generous: a test asserts that things happen, never
// how fast, and a loaded CI box must not fail it.
const IOTimeout = 10 * time.Second

// Eventually calls check until it returns nil and returns how long that
// took. When timeout passes first it fails the test with what and check's
// last error. It checks often at first (1ms) and then every 50ms at the
// most, so that a short wait is measured closely and a long one costs
// little.
func Eventually(t testing.TB, timeout time.Duration, what string, check func() error) time.Duration {
	t.Helper()
	start := time.Now()
	pause := time.Millisecond
	for {
		err := check()
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			if errors.Is(err, errStillFalse) {
				t.Fatalf("%s: not within %s", what, timeout)
			}
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(pause)
		pause = min(2*pause, 50*time.Millisecond)
	}
}

// Until is Eventually for a condition that has no error to tell.
func Until(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	return Eventually(t, timeout, what, func() error {
		if cond() {
			return nil
		}
		return errStillFalse
	})
}

// errStillFalse is Until's check failing.
var errStillFalse = errors.New("still false")
