package compile_test

import (
	"strings"
	"testing"

	"github.com/portmux/portmux/controllers/compile"
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
	tests := []struct {
		name      string
		policy    compile.PortPolicy
		port      int32
		namespace string
		want      bool
	}{
		{"no policy: anything", nil, 443, "anyone", true},
		{"granted", policy("443=edge"), 443, "edge", true},
		{"another namespace", policy("443=edge"), 443, "squat", false},
		{"a port no rule names", policy("443=edge"), 8443, "edge", false},
		{"a range, lower bound", policy("8000-8099=team-a,team-b"), 8000, "team-b", true},
		{"a range, upper bound", policy("8000-8099=team-a,team-b"), 8099, "team-a", true},
		{"past the range", policy("8000-8099=team-a,team-b"), 8100, "team-a", false},
		{"the first rule that names the port decides", policy("443=edge", "*=*"), 443, "squat", false},
		{"then the catch-all", policy("443=edge", "*=*"), 2222, "squat", true},
		{"every port to one namespace", policy("*=portmux-system"), 22, "portmux-system", true},
		{"a list of ports and ranges", policy("22,443,10000-10010=ops"), 10005, "ops", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.policy.Allows(tt.port, tt.namespace); got != tt.want {
				t.Errorf("Allows(%d, %q) = %v, want %v", tt.port, tt.namespace, got, tt.want)
			}
		})
	}
}

func TestParsePortRuleRefuses(t *testing.T) {
	for _, s := range []string{"", "443", "=edge", "443=", "0=edge", "65536=edge", "90-80=edge", "http=edge", "443=Edge", "443=edge,"} {
		if _, err := compile.ParsePortRule(s); err == nil || !strings.Contains(err.Error(), "port rule") {
			t.Errorf("ParsePortRule(%q) = %v, want an error naming the rule", s, err)
		}
	}
}
