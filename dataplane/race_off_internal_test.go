//go:build !race

package dataplane

// raceEnabled: see race_on_internal_test.go.
const raceEnabled = false
