package udp

import (
	"bytes"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/portmux/portmux/dataplane/panics"
	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/test/peers"
)

// TestRelayContainsPanicUnderSessionLock: a panic raised while a
// session's mu is held, in either direction, ends that session only; the
// listener goes on serving another client.
func TestRelayContainsPanicUnderSessionLock(t *testing.T) {
	for _, tc := range []struct {
		name       string
		fromClient bool
	}{
		{"client to backend", true},
		{"backend to client", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := peers.UDPReply(t, echo)
			m := NewMetrics()
			panicked := make(chan *panics.Error, 1)
			opt := Options{
				Metrics: m,
				OnPanic: func(p *panics.Error) { panicked <- p },
				lockedHook: func(fromClient bool, d []byte) {
					if fromClient == tc.fromClient && bytes.Equal(d, []byte("boom")) {
						panic("injected under the session lock")
					}
				},
			}
			r := startRelay(t, listener(routeTo("any", snapshot.Match{Protocol: snapshot.Any}, be.Addr)), opt)
			victim := client(t, r.Addr().String())
			if got := exchange(t, victim, []byte("hello")); string(got) != "hello" {
				t.Fatalf("victim got %q before the panic", got)
			}
			if _, err := victim.Write([]byte("boom")); err != nil {
				t.Fatal(err)
			}
			peers.Until(t, peers.IOTimeout, "the victim's session to end in error", func() bool {
				return testutil.ToFloat64(m.sessionsTotal.WithLabelValues("udp", "any", "any", OutcomeError)) == 1
			})
			if len(panicked) != 1 {
				t.Errorf("OnPanic told of %d panics; want 1", len(panicked))
			}
			other := client(t, r.Addr().String())
			for _, d := range []string{"still", "served"} {
				if got := exchange(t, other, []byte(d)); string(got) != d {
					t.Fatalf("other client got %q; want %q", got, d)
				}
			}
		})
	}
}
