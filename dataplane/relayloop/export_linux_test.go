package relayloop

// WithMoveBudget is opt with the bytes a direction moves per turn
// lowered to n, so that a test's transfer takes many turns.
func WithMoveBudget(opt Options, n int) Options {
	opt.moveBudget = n
	return opt
}
