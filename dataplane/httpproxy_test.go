package dataplane

import "testing"

func TestForwardedHeader(t *testing.T) {
	tests := []struct {
		ip, proto, host string
		want            string
	}{
		{"203.0.113.7", "http", "www.test", "for=203.0.113.7;proto=http;host=www.test"},
		{"203.0.113.7", "https", "www.test:8443", `for=203.0.113.7;proto=https;host="www.test:8443"`},
		{"2001:db8::7", "https", "www.test", `for="[2001:db8::7]";proto=https;host=www.test`},
		{"fe80::1%eth0", "http", "[fe80::1]:80", `for="[fe80::1%eth0]";proto=http;host="[fe80::1]:80"`},
		{"", "http", "", "for=unknown;proto=http"},
		{"203.0.113.7", "http", `a"b\c`, `for=203.0.113.7;proto=http;host="a\"b\\c"`},
	}
	for _, tt := range tests {
		if got := forwardedHeader(tt.ip, tt.proto, tt.host); got != tt.want {
			t.Errorf("forwardedHeader(%q, %q, %q) = %s, want %s", tt.ip, tt.proto, tt.host, got, tt.want)
		}
	}
}
