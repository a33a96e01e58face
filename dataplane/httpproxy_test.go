package dataplane

import (
	"testing"
	"time"
)

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

func TestHTTPLimitsWithDefaults(t *testing.T) {
	defaults := HTTPLimits{
		MaxHeaderBytes:       64 << 10,
		ReadHeaderTimeout:    10 * time.Second,
		IdleTimeout:          60 * time.Second,
		MaxConcurrentStreams: 100,
		WriteTimeout:         30 * time.Second,
	}
	set := HTTPLimits{MaxHeaderBytes: 1 << 10, ReadHeaderTimeout: time.Second, IdleTimeout: 2 * time.Minute, MaxConcurrentStreams: 8, WriteTimeout: time.Second}
	withIdle := func(d time.Duration) HTTPLimits { l := defaults; l.IdleTimeout = d; return l }
	tests := []struct {
		name   string
		limits HTTPLimits
		idle   time.Duration // Options.IdleTimeout
		want   HTTPLimits
	}{
		{"zero: defaults", HTTPLimits{}, 0, defaults},
		{"negative: defaults", HTTPLimits{MaxHeaderBytes: -1, IdleTimeout: -1}, 0, defaults},
		{"set: kept", set, 0, set},
		{"a shorter idle timeout of the server applies", HTTPLimits{}, 5 * time.Second, withIdle(5 * time.Second)},
		{"a longer one does not", HTTPLimits{}, 10 * time.Minute, defaults},
		{"an idle timeout set here wins", HTTPLimits{IdleTimeout: 2 * time.Minute}, 5 * time.Second, withIdle(2 * time.Minute)},
	}
	for _, tt := range tests {
		if got := tt.limits.withDefaults(tt.idle); got != tt.want {
			t.Errorf("%s: %+v, want %+v", tt.name, got, tt.want)
		}
	}
}
