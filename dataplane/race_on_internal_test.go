//go:build race

package dataplane

// raceEnabled: the race detector drops sync.Pool items at random, so a
// pooled value is allocated anew now and then.
const raceEnabled = true
