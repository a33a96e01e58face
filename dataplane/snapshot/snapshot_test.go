package snapshot_test

import (
	"testing"

	"github.com/portmux/portmux/dataplane/snapshot"
)

func TestCanonicalOrigin(t *testing.T) {
	for _, tc := range []struct {
		in, want string // want "": not an origin
	}{
		{"https://app.example.com", "https://app.example.com"},
		{"HTTPS://App.Example.COM", "https://app.example.com"},
		{"https://app.example.com:443", "https://app.example.com"},
		{"http://app.example.com:80", "http://app.example.com"},
		{"http://app.example.com:443", "http://app.example.com:443"},
		{"https://app.example.com:80", "https://app.example.com:80"},
		{"wss://app.example.com:443", "wss://app.example.com"},
		{"http://localhost:08080", "http://localhost:8080"},
		{"https://[2001:DB8::1]:8443", "https://[2001:db8::1]:8443"},
		{"https://[2001:db8::1]:443", "https://[2001:db8::1]"},
		{"chrome-extension://abcdef", "chrome-extension://abcdef"},
		{"null", ""},
		{"", ""},
		{"app.example.com", ""},
		{"//app.example.com", ""},
		{"https://", ""},
		{"https://:443", ""},
		{"https://app.example.com:", ""},
		{"https://app.example.com/", ""},
		{"https://app.example.com/page", ""},
		{"https://app.example.com?x", ""},
		{"https://app.example.com?", ""},
		{"https://app.example.com#x", ""},
		{"https://user@app.example.com", ""},
		{"https://app.example.com:0", ""},
		{"https://app.example.com:65536", ""},
		{"https://app.example.com:https", ""},
		{"mailto:someone@example.com", ""},
	} {
		got, ok := snapshot.CanonicalOrigin(tc.in)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("CanonicalOrigin(%q) = %q, %v; want %q", tc.in, got, ok, tc.want)
		}
	}
}
