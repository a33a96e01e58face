package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/portmux/portmux/hack/internal/harness"
)

// legitAddrs describes where the legitimate clients come from: each
// client has an address of its own (127.0.2.x for SSH, 127.0.3.x for TLS,
// 127.0.4.x for HTTP), none an attacker's, as real users' would be.
const legitAddrs = "127.0.2-4.x"

// legitAddr is the address of the i-th legitimate client of a kind.
func legitAddr(kind string, i int) net.IP {
	third := map[string]byte{"ssh": 2, "tls": 3, "http": 4}[kind]
	return net.IPv4(127, 0, third, byte(i+1))
}

// payloadSize is what each SSH and TLS operation sends and expects back.
const payloadSize = 4 << 10

// opTimeout bounds one legitimate operation; one that takes longer failed.
const opTimeout = 20 * time.Second

// legitResults are the operations of each kind of legitimate client.
type legitResults struct {
	mu    sync.Mutex
	kinds map[string]*kindResults
}

type kindResults struct {
	latencies []time.Duration // of the operations that succeeded
	failures  int
	lost      int // answers that came back with the wrong bytes
	lastErr   string
}

func (r *legitResults) record(kind string, d time.Duration, err error, lost bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := r.kinds[kind]
	if k == nil {
		k = &kindResults{}
		r.kinds[kind] = k
	}
	switch {
	case lost:
		k.lost++
		k.failures++
	case err != nil:
		k.failures++
		k.lastErr = err.Error()
	default:
		k.latencies = append(k.latencies, d)
	}
}

func (r *legitResults) lost() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, k := range r.kinds {
		n += k.lost
	}
	return n
}

// kindSummary is one kind's line of the report.
type kindSummary struct {
	Ops       int     `json:"ops"`
	Failures  int     `json:"failures"`
	Lost      int     `json:"lostBytes"`
	Success   float64 `json:"successRate"`
	P50, P99  float64 // milliseconds
	LastError string  `json:"lastError,omitempty"`
}

func (r *legitResults) summary() map[string]kindSummary {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]kindSummary{}
	for name, k := range r.kinds {
		lat := slices.Clone(k.latencies)
		slices.Sort(lat)
		ops := len(lat) + k.failures
		s := kindSummary{Ops: ops, Failures: k.failures, Lost: k.lost, LastError: k.lastErr,
			P50: ms(harness.Percentile(lat, 50)), P99: ms(harness.Percentile(lat, 99))}
		if ops > 0 {
			s.Success = float64(len(lat)) / float64(ops)
		}
		out[name] = s
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// runLegit runs n clients of each legitimate kind against target for d (or
// until ctx ends), each doing rate operations per second, and returns what
// they saw.
func runLegit(ctx context.Context, n int, rate float64, d time.Duration, target string, be *backends) *legitResults {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	res := &legitResults{kinds: map[string]*kindResults{}}
	var wg sync.WaitGroup
	for _, kind := range []string{"ssh", "tls", "http"} {
		for i := range n {
			dialer := &net.Dialer{Timeout: opTimeout, LocalAddr: &net.TCPAddr{IP: legitAddr(kind, i)}}
			var op func(context.Context) (bool, error)
			switch kind {
			case "ssh":
				op = func(ctx context.Context) (bool, error) { return sshOp(ctx, dialer, target) }
			case "tls":
				op = func(ctx context.Context) (bool, error) { return tlsOp(ctx, dialer, target, be) }
			default:
				client := &http.Client{Timeout: opTimeout, Transport: &http.Transport{
					DialContext: dialer.DialContext, IdleConnTimeout: 30 * time.Second,
				}}
				defer client.CloseIdleConnections()
				op = func(ctx context.Context) (bool, error) { return httpOp(ctx, client, target) }
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
				defer tick.Stop()
				for ctx.Err() == nil {
					octx, ocancel := context.WithTimeout(context.Background(), opTimeout)
					start := time.Now()
					lost, err := op(octx)
					ocancel()
					if err != nil && ctx.Err() != nil && !lost {
						return // cut by the end of the phase, not a failure
					}
					res.record(kind, time.Since(start), err, lost)
					select {
					case <-ctx.Done():
					case <-tick.C:
					}
				}
			}()
		}
	}
	wg.Wait()
	return res
}

func randomPayload() []byte {
	b := make([]byte, payloadSize)
	_, _ = rand.Read(b)
	return b
}

// sshOp: a handshake, an exec whose input comes back, and the exit.
func sshOp(ctx context.Context, d *net.Dialer, target string) (bool, error) {
	c, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		return false, err
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(opTimeout))
	sc, chans, reqs, err := ssh.NewClientConn(c, target, &ssh.ClientConfig{
		User: "soak", HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: opTimeout,
	})
	if err != nil {
		return false, fmt.Errorf("ssh handshake: %w", err)
	}
	client := ssh.NewClient(sc, chans, reqs)
	defer func() { _ = client.Close() }()
	sess, err := client.NewSession()
	if err != nil {
		return false, err
	}
	defer func() { _ = sess.Close() }()
	in, err := sess.StdinPipe()
	if err != nil {
		return false, err
	}
	out, err := sess.StdoutPipe()
	if err != nil {
		return false, err
	}
	if err := sess.Start("echo"); err != nil {
		return false, err
	}
	if lost, err := echoed("ssh", func(p []byte) { _, _ = in.Write(p); _ = in.Close() }, out); lost || err != nil {
		return lost, err
	}
	return false, sess.Wait()
}

// echoed sends a random payload with send (which closes its side when it
// is done) and reads the echo from r to its end; lost says that what came
// back is not what was sent.
func echoed(what string, send func([]byte), r io.Reader) (lost bool, err error) {
	payload := randomPayload()
	go send(payload)
	got, err := io.ReadAll(r)
	if err != nil {
		return false, err
	}
	if !bytes.Equal(got, payload) {
		return true, fmt.Errorf("%s echo: %d bytes back, not the %d sent", what, len(got), len(payload))
	}
	return false, nil
}

// tlsOp: a handshake for soak.test (verified) and an echo.
func tlsOp(ctx context.Context, d *net.Dialer, target string, be *backends) (bool, error) {
	c, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		return false, err
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(opTimeout))
	tc := tls.Client(c, &tls.Config{ServerName: "soak.test", RootCAs: be.roots})
	if err := tc.HandshakeContext(ctx); err != nil {
		return false, fmt.Errorf("tls handshake: %w", err)
	}
	return echoed("tls", func(p []byte) { _, _ = tc.Write(p); _ = tc.CloseWrite() }, tc)
}

// httpOp: a GET on a kept-alive connection whose answer must be its token.
func httpOp(ctx context.Context, client *http.Client, target string) (bool, error) {
	tok := make([]byte, 16)
	_, _ = rand.Read(tok)
	want := hex.EncodeToString(tok)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+target+"/echo?t="+want, nil)
	if err != nil {
		return false, err
	}
	req.Host = "soak.test"
	resp, body, err := readBody(client.Do(req))
	if err != nil {
		return false, err
	}
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("http: %s", resp.Status)
	}
	if string(body) != want {
		return true, fmt.Errorf("http: answer %q, not the token %q", body, want)
	}
	return false, nil
}
