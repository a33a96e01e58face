package forward

import (
	"errors"
	"sync"
	"testing"
	"time"
)

// TestReadQueuedNeverWaits reads a socket the way a connection accepted
// after its first bytes is sniffed: what is queued comes back at once (up
// to the limit), an empty queue is ErrNothingQueued at once with no
// buffer taken, and a peer that closed is end of stream (no buffer, no error).
func TestReadQueuedNeverWaits(t *testing.T) {
	tests := []struct {
		name    string
		send    string
		close   bool
		limit   int
		want    string
		wantErr error
	}{
		{name: "queued bytes", send: "SSH-2.0-x\r\n", want: "SSH-2.0-x\r\n"},
		{name: "at most limit", send: "0123456789", limit: 4, want: "0123"},
		{name: "nothing queued", wantErr: ErrNothingQueued},
		{name: "peer closed", close: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			peer, c := tcpPair(t)
			defer peer.Close()
			defer c.Close()
			if tt.send != "" {
				if _, err := peer.Write([]byte(tt.send)); err != nil {
					t.Fatal(err)
				}
			}
			if tt.close {
				_ = peer.Close()
			}
			if tt.send != "" || tt.close {
				// Until the bytes or the FIN are queued on c.
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := WaitReadable(c); err != nil {
					t.Fatal(err)
				}
				_ = c.SetReadDeadline(time.Time{})
			}
			pool := &sync.Pool{New: func() any { b := make([]byte, 64); return &b }}
			start := time.Now()
			bp, n, err := ReadQueued(c, pool, tt.limit)
			if waited := time.Since(start); waited > time.Second {
				t.Errorf("ReadQueued took %v", waited)
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("ReadQueued: %v, want %v", err, tt.wantErr)
			}
			got := ""
			if bp != nil {
				got = string((*bp)[:n])
			}
			if got != tt.want || (bp == nil) != (tt.want == "") {
				t.Fatalf("ReadQueued = %q (buffer %v), want %q", got, bp != nil, tt.want)
			}
		})
	}
}
