package compile_test

import (
	"strings"
	"testing"

	"github.com/portmux/portmux/controllers/compile"
	"github.com/portmux/portmux/dataplane/snapshot"
)

func TestPortPolicy(t *testing.T) {
	policy := func(rules ...string) compile.PortPolicy {
		var p compile.PortPolicy
		for _, s := range rules {
			r, err := compile.ParsePortRule(s)
			if err != nil {
				t.Fatalf("ParsePortRule(%q): %v", s, err)
			}
			if r.String() != s {
				t.Errorf("ParsePortRule(%q).String() = %q", s, r.String())
			}
			p = append(p, r)
		}
		return p
	}
	tcp, udp := snapshot.TCP, snapshot.UDP
	tests := []struct {
		name      string
		policy    compile.PortPolicy
		port      int32
		transport snapshot.Transport
		namespace string
		want      bool
	}{
		{"no policy: anything", nil, 443, tcp, "anyone", true},
		{"no policy: any UDP port", nil, 443, udp, "anyone", true},
		{"granted", policy("443=edge"), 443, tcp, "edge", true},
		{"another namespace", policy("443=edge"), 443, tcp, "squat", false},
		{"a port no rule names", policy("443=edge"), 8443, tcp, "edge", false},
		{"a range, lower bound", policy("8000-8099=team-a,team-b"), 8000, tcp, "team-b", true},
		{"a range, upper bound", policy("8000-8099=team-a,team-b"), 8099, tcp, "team-a", true},
		{"past the range", policy("8000-8099=team-a,team-b"), 8100, tcp, "team-a", false},
		{"the first rule that names the port decides", policy("443=edge", "*=*"), 443, tcp, "squat", false},
		{"then the catch-all", policy("443=edge", "*=*"), 2222, tcp, "squat", true},
		{"every port to one namespace", policy("*=portmux-system"), 22, tcp, "portmux-system", true},
		{"a list of ports and ranges", policy("22,443,10000-10010=ops"), 10005, tcp, "ops", true},
		{"a port without transport grants UDP too", policy("443=edge"), 443, udp, "edge", true},
		{"and refuses UDP to others", policy("443=edge"), 443, udp, "squat", false},
		{"a UDP port to one team", policy("443/udp=voice", "443=edge"), 443, udp, "voice", true},
		{"not its TCP port", policy("443/udp=voice", "443=edge"), 443, tcp, "voice", false},
		{"which the next rule grants", policy("443/udp=voice", "443=edge"), 443, tcp, "edge", true},
		{"a TCP range does not name UDP ports", policy("8000-8099/tcp=team-a"), 8050, udp, "team-a", false},
		{"a TCP range", policy("8000-8099/tcp=team-a"), 8050, tcp, "team-a", true},
		{"mixed list", policy("53/udp,443,51820/udp=edge"), 51820, udp, "edge", true},
		{"mixed list, TCP 53 not named", policy("53/udp,443,51820/udp=edge"), 53, tcp, "edge", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.policy.Allows(tt.port, tt.transport, tt.namespace); got != tt.want {
				t.Errorf("Allows(%d, %s, %q) = %v, want %v", tt.port, tt.transport, tt.namespace, got, tt.want)
			}
		})
	}
}

// TestParsePortRuleTransportCase: the transport may be written as
// Kubernetes writes it (UDP) or as /etc/services does (udp); it is said
// back in lower case.
func TestParsePortRuleTransportCase(t *testing.T) {
	r, err := compile.ParsePortRule("443/UDP,8000-8099/Tcp=edge")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := r.String(), "443/udp,8000-8099/tcp=edge"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestParsePortRuleRefuses(t *testing.T) {
	for _, s := range []string{"", "443", "=edge", "443=", "0=edge", "65536=edge", "90-80=edge", "http=edge", "443=Edge", "443=edge,", "443/sctp=edge", "443/=edge", "/udp=edge", "*/udp=edge", "443/udp/tcp=edge"} {
		if _, err := compile.ParsePortRule(s); err == nil || !strings.Contains(err.Error(), "port rule") {
			t.Errorf("ParsePortRule(%q) = %v, want an error naming the rule", s, err)
		}
	}
}
