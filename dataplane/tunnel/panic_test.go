package tunnel_test

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/portmux/portmux/dataplane/panics"
	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/dataplane/tunnel"
)

// TestPanicInRelayEndsOnlyItsTunnel: a panic while relaying one tunnel's
// bytes (here the first buffer taken from the pool) ends that tunnel, is
// reported as its error, and another tunnel through the same handler
// carries on.
func TestPanicInRelayEndsOnlyItsTunnel(t *testing.T) {
	t.Parallel()
	var gets atomic.Int32
	pool := &sync.Pool{New: func() any {
		if gets.Add(1) == 1 {
			panic("bug in a relay")
		}
		buf := make([]byte, 32<<10)
		return &buf
	}}
	hs := startHandler(t, &snapshot.Tunnel{Allow: []snapshot.TunnelTarget{echoTarget(t, "echo:7")}},
		func(o *tunnel.Options) { o.Buffers = &tunnel.Buffers{Pool: pool} })
	c := newClient(t, "ws://"+hs.addr+"/tunnel")

	doomed, err := c.Dial(context.Background(), "echo:7")
	if err != nil {
		t.Fatal(err)
	}
	defer doomed.Close()
	other, err := c.Dial(context.Background(), "echo:7")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()

	if _, err := doomed.Write([]byte("first bytes")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, doomed); err == nil {
		t.Error("the tunnel that panicked ended cleanly, want an error")
	}
	rep := hs.report(t)
	if p := panics.Is(rep.Err); rep.Outcome != tunnel.OutcomeError || p == nil || !strings.Contains(fmt.Sprint(p.Value), "bug in a relay") {
		t.Fatalf("report: outcome %s, error %v; want error with the panic", rep.Outcome, rep.Err)
	}

	msg := "the other tunnel is served"
	if _, err := other.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(other, got); err != nil || string(got) != msg {
		t.Fatalf("other tunnel: %q, %v", got, err)
	}
}
