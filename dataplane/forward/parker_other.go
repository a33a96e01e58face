//go:build !linux

package forward

import (
	"errors"
	"time"
)

// DefaultParkThreshold is how long a direction waits before it is parked.
const DefaultParkThreshold = 100 * time.Millisecond

// Parker needs Linux's epoll; elsewhere every direction keeps its goroutine.
type Parker struct{ threshold time.Duration }

// NewParker reports that parking is not available on this platform.
func NewParker(time.Duration) (*Parker, error) {
	return nil, errors.New("parking idle connections needs Linux epoll")
}

// Parked is always 0 here.
func (pk *Parker) Parked() int { return 0 }

// Close does nothing here.
func (pk *Parker) Close() error { return nil }

func (pk *Parker) park(*dir) bool { return false }

func (pk *Parker) detach(*pipe) []*dir { return nil }
