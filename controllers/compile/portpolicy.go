package compile

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// PortPolicy says which namespaces may claim which ports: the cluster
// admin's answer to port squatting. Without it any PortMux may claim any
// port, and the oldest claim wins; when a squatter in another namespace is
// older than the owner's PortMux (the owner deleted and recreated it), the
// squatter keeps the port. With it, a listener whose port its namespace is
// not granted is not accepted and takes nothing from anyone, so the owner
// always gets its port back.
//
// Rules are tried in order; the first whose ports include a port decides
// which namespaces may claim it. A port no rule names may be claimed by no
// one. A nil or empty PortPolicy allows everything.
type PortPolicy []PortRule

// PortRule grants ports to namespaces.
type PortRule struct {
	// Ports are inclusive ranges; nil: every port.
	Ports []PortRange
	// Namespaces may claim the ports; nil: every namespace.
	Namespaces []string
}

// PortRange is an inclusive range of ports.
type PortRange struct{ From, To int32 }

// Allows reports whether a PortMux in namespace may claim port.
func (p PortPolicy) Allows(port int32, namespace string) bool {
	if len(p) == 0 {
		return true
	}
	for _, r := range p {
		if r.Ports != nil && !slices.ContainsFunc(r.Ports, func(pr PortRange) bool { return pr.From <= port && port <= pr.To }) {
			continue
		}
		return r.Namespaces == nil || slices.Contains(r.Namespaces, namespace)
	}
	return false
}

// ParsePortRule parses the manager's --port-policy value: PORTS=NAMESPACES,
// where PORTS is "*" or a comma-separated list of ports and ranges
// ("443,8000-8099") and NAMESPACES is "*" or a comma-separated list of
// namespaces.
func ParsePortRule(s string) (PortRule, error) {
	ports, namespaces, ok := strings.Cut(s, "=")
	if !ok || ports == "" || namespaces == "" {
		return PortRule{}, fmt.Errorf("port rule %q: want PORTS=NAMESPACES, e.g. 443,8000-8099=edge,team-a or *=edge", s)
	}
	var r PortRule
	if ports != "*" {
		for p := range strings.SplitSeq(ports, ",") {
			pr, err := parsePortRange(strings.TrimSpace(p))
			if err != nil {
				return PortRule{}, fmt.Errorf("port rule %q: %w", s, err)
			}
			r.Ports = append(r.Ports, pr)
		}
	}
	if namespaces != "*" {
		for ns := range strings.SplitSeq(namespaces, ",") {
			ns = strings.TrimSpace(ns)
			if !dnsLabel.MatchString(ns) {
				return PortRule{}, fmt.Errorf("port rule %q: %q is not a namespace name", s, ns)
			}
			r.Namespaces = append(r.Namespaces, ns)
		}
	}
	return r, nil
}

func parsePortRange(s string) (PortRange, error) {
	from, to, isRange := strings.Cut(s, "-")
	a, err := parsePort(from)
	if err != nil {
		return PortRange{}, err
	}
	if !isRange {
		return PortRange{a, a}, nil
	}
	b, err := parsePort(to)
	if err != nil {
		return PortRange{}, err
	}
	if b < a {
		return PortRange{}, fmt.Errorf("range %q ends before it starts", s)
	}
	return PortRange{a, b}, nil
}

func parsePort(s string) (int32, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("%q is not a port (1-65535)", s)
	}
	return int32(n), nil
}

// String is the rule as --port-policy takes it.
func (r PortRule) String() string {
	ports, namespaces := "*", "*"
	if r.Ports != nil {
		var ps []string
		for _, p := range r.Ports {
			if p.From == p.To {
				ps = append(ps, strconv.Itoa(int(p.From)))
			} else {
				ps = append(ps, fmt.Sprintf("%d-%d", p.From, p.To))
			}
		}
		ports = strings.Join(ps, ",")
	}
	if r.Namespaces != nil {
		namespaces = strings.Join(r.Namespaces, ",")
	}
	return ports + "=" + namespaces
}
