package snapshot

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"sync"
)

// Encoder writes what Encode writes, byte for byte, but reuses the
// encoding of each listener that is the same value as one of the previous
// snapshot it encoded: at 10,000 listeners encoding the whole snapshot was
// most of the cost of sending one changed EndpointSlice (issue 19). The
// controller's compile hands out the very same listener (the same Routes,
// TLS and ProxyProtocol, which nobody writes after a compile) for a
// PortMux whose inputs did not change, so "the same" is cheap to tell:
// every field equal, slices and pointers by identity.
//
// The zero value is ready; an Encoder is safe for concurrent use.
type Encoder struct {
	mu   sync.Mutex
	prev map[string]encodedListener
}

type encodedListener struct {
	l    Listener
	json []byte
}

// listenersPlaceholder is how the envelope encodes an empty, non-nil
// Listeners list; the listeners' encodings go between its brackets.
var listenersPlaceholder = []byte(`"Listeners":[]`)

// Encode returns snap in the wire format, as Encode does.
func (e *Encoder) Encode(snap *Snapshot) ([]byte, error) {
	if snap == nil || snap.Listeners == nil {
		return Encode(snap)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	shell := *snap
	shell.Listeners = []Listener{}
	head, err := Encode(&shell)
	if err != nil {
		return nil, err
	}
	at := bytes.Index(head, listenersPlaceholder)
	if at < 0 {
		return nil, fmt.Errorf("encode snapshot: no %s in the envelope", listenersPlaceholder)
	}
	at += len(listenersPlaceholder) - 1 // before ']'
	next := make(map[string]encodedListener, len(snap.Listeners))
	parts := make([][]byte, len(snap.Listeners))
	size := len(head)
	for i := range snap.Listeners {
		l := &snap.Listeners[i]
		enc, ok := e.prev[l.Name]
		if !ok || !sameListener(&enc.l, l) {
			b, err := json.Marshal(l)
			if err != nil {
				return nil, fmt.Errorf("encode snapshot: %w", err)
			}
			enc = encodedListener{l: *l, json: b}
		}
		next[l.Name] = enc
		parts[i] = enc.json
		size += len(enc.json) + 1
	}
	out := make([]byte, 0, size)
	out = append(out, head[:at]...)
	for i, p := range parts {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, p...)
	}
	out = append(out, head[at:]...)
	e.prev = next
	return out, nil
}

// sameListener reports whether a and b are the same value: fields equal,
// slices, maps and pointers by identity (same array and length, same
// target).
func sameListener(a, b *Listener) bool {
	va, vb := reflect.ValueOf(a).Elem(), reflect.ValueOf(b).Elem()
	for i := range va.NumField() {
		fa, fb := va.Field(i), vb.Field(i)
		switch fa.Kind() {
		case reflect.Slice:
			if fa.Len() != fb.Len() || (fa.Len() > 0 && fa.Pointer() != fb.Pointer()) {
				return false
			}
		case reflect.Pointer, reflect.Map:
			if fa.Pointer() != fb.Pointer() {
				return false
			}
		default:
			if !fa.Equal(fb) {
				return false
			}
		}
	}
	return true
}
