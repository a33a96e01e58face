package relayloop

// WithMoveBudget is opt with the bytes a direction moves per turn
// lowered to n, so that a test's transfer takes many turns.
func WithMoveBudget(opt Options, n int) Options {
	opt.moveBudget = n
	return opt
}

// PendingTimers is how many timers the Set's loops hold, each a
// connection's or a loop's own task still to come.
func PendingTimers(s *Set) int {
	n := 0
	for _, l := range s.loops {
		ch := make(chan int, 1)
		if l.post(func() { ch <- len(l.timers) }) {
			n += <-ch
		}
	}
	return n
}
