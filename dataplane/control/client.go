package control

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Client talks to the dataplane on a control socket. Its methods are safe
// for concurrent use; each bounds its own wait with the context it is
// given.
type Client struct {
	socket string
	hc     *http.Client
}

// NewClient returns a client of the dataplane on the socket at path. It
// connects at each request, so it outlives dataplane restarts.
func NewClient(path string) *Client {
	t := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		MaxIdleConns:       2,
		IdleConnTimeout:    30 * time.Second,
		DisableCompression: true,
	}
	return &Client{socket: path, hc: &http.Client{Transport: t}}
}

// Socket is the path the client connects to.
func (c *Client) Socket() string { return c.socket }

// Apply sends an encoded snapshot and returns the dataplane's state after
// applying it, with the listeners that could not bind.
func (c *Client) Apply(ctx context.Context, encoded []byte) (State, error) {
	var st State
	err := c.do(ctx, http.MethodPut, PathSnapshot, encoded, func(r io.Reader) error {
		return decodeJSON(r, maxStateBytes, &st)
	})
	return st, err
}

// ApplyDelta sends an encoded delta of the snapshot of version base and
// returns the dataplane's state after applying it; IsBaseMismatch(err)
// when the dataplane serves another version.
func (c *Client) ApplyDelta(ctx context.Context, base string, encoded []byte) (State, error) {
	var st State
	err := c.doHeader(ctx, http.MethodPut, PathDelta, http.Header{BaseVersionHeader: {base}}, encoded, func(r io.Reader) error {
		return decodeJSON(r, maxStateBytes, &st)
	})
	return st, err
}

// State asks which dataplane process serves and what it applied.
func (c *Client) State(ctx context.Context) (State, error) {
	var st State
	err := c.do(ctx, http.MethodGet, PathState, nil, func(r io.Reader) error {
		return decodeJSON(r, maxStateBytes, &st)
	})
	return st, err
}

// Metrics scrapes the dataplane's registry.
func (c *Client) Metrics(ctx context.Context) (map[string]*dto.MetricFamily, error) {
	var fams map[string]*dto.MetricFamily
	err := c.do(ctx, http.MethodGet, PathMetrics, nil, func(r io.Reader) error {
		p := expfmt.NewTextParser(model.UTF8Validation)
		var err error
		fams, err = p.TextToMetricFamilies(io.LimitReader(r, maxMetricsBytes))
		return err
	})
	return fams, err
}

// Probe returns nil when the dataplane is alive (ready false) or has a
// snapshot to serve (ready true), as its exec probes ask.
func (c *Client) Probe(ctx context.Context, ready bool) error {
	path := PathHealthz
	if ready {
		path = PathReadyz
	}
	return c.do(ctx, http.MethodGet, path, nil, func(io.Reader) error { return nil })
}

// do sends one request and reads a 2xx answer with read; any other status
// is a *StatusError, and a request that got no answer matches
// ErrUnreachable.
func (c *Client) do(ctx context.Context, method, path string, body []byte, read func(io.Reader) error) error {
	return c.doHeader(ctx, method, path, nil, body, read)
}

// doHeader is do with more request headers.
func (c *Client) doHeader(ctx context.Context, method, path string, header http.Header, body []byte, read func(io.Reader) error) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://dataplane"+path, rd)
	if err != nil {
		return err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	} else if path == PathMetrics {
		req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return &unreachableError{err: err}
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBytes))
		return &StatusError{Code: resp.StatusCode, Message: strings.TrimSpace(string(msg))}
	}
	if err := read(resp.Body); err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	return nil
}

func decodeJSON(r io.Reader, limit int64, v any) error {
	return json.NewDecoder(io.LimitReader(r, limit)).Decode(v)
}
