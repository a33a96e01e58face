package compile

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/portmux/portmux/dataplane/snapshot"
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
//
// A claim is a port of one transport, as listeners bind them: TCP 443 and
// UDP 443 are two claims, which two PortMuxes may hold. A rule's port
// without a transport covers both, which is what an admin granting "443"
// means; "443/udp" covers UDP 443 only, to grant HTTP/3 to another team
// than HTTPS.
type PortPolicy []PortRule

// PortRule grants ports to namespaces.
type PortRule struct {
	// Ports are inclusive ranges; nil: every port.
	Ports []PortRange
	// Namespaces may claim the ports; nil: every namespace.
	Namespaces []string
}

// PortRange is an inclusive range of ports, of one transport or of both.
type PortRange struct {
	From, To int32
	// Transport limits the range to TCP or UDP ports; "": both.
	Transport snapshot.Transport
}

// includes reports whether the range holds port of transport t.
func (pr PortRange) includes(port int32, t snapshot.Transport) bool {
	return pr.From <= port && port <= pr.To && (pr.Transport == "" || pr.Transport == t)
}

// Allows reports whether a PortMux in namespace may claim port of
// transport t (snapshot.TCP or snapshot.UDP).
func (p PortPolicy) Allows(port int32, t snapshot.Transport, namespace string) bool {
	if len(p) == 0 {
		return true
	}
	for _, r := range p {
		if r.Ports != nil && !slices.ContainsFunc(r.Ports, func(pr PortRange) bool { return pr.includes(port, t) }) {
			continue
		}
		return r.Namespaces == nil || slices.Contains(r.Namespaces, namespace)
	}
	return false
}

// ParsePortRule parses the manager's --port-policy value: PORTS=NAMESPACES,
// where PORTS is "*" or a comma-separated list of ports and ranges, each
// of both transports or followed by /tcp or /udp ("443,8000-8099/udp"),
// and NAMESPACES is "*" or a comma-separated list of namespaces.
func ParsePortRule(s string) (PortRule, error) {
	ports, namespaces, ok := strings.Cut(s, "=")
	if !ok || ports == "" || namespaces == "" {
		return PortRule{}, fmt.Errorf("port rule %q: want PORTS=NAMESPACES, e.g. 443,8000-8099=edge,team-a, 443/udp=edge or *=edge", s)
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
	ports, transport, qualified := strings.Cut(s, "/")
	var t snapshot.Transport
	if qualified {
		switch strings.ToLower(transport) {
		case "tcp":
			t = snapshot.TCP
		case "udp":
			t = snapshot.UDP
		default:
			return PortRange{}, fmt.Errorf("%q: the transport after / is tcp or udp", s)
		}
	}
	from, to, isRange := strings.Cut(ports, "-")
	a, err := parsePort(from)
	if err != nil {
		return PortRange{}, err
	}
	if !isRange {
		return PortRange{a, a, t}, nil
	}
	b, err := parsePort(to)
	if err != nil {
		return PortRange{}, err
	}
	if b < a {
		return PortRange{}, fmt.Errorf("range %q ends before it starts", s)
	}
	return PortRange{a, b, t}, nil
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
			s := strconv.Itoa(int(p.From))
			if p.From != p.To {
				s = fmt.Sprintf("%d-%d", p.From, p.To)
			}
			if p.Transport != "" {
				s += "/" + strings.ToLower(string(p.Transport))
			}
			ps = append(ps, s)
		}
		ports = strings.Join(ps, ",")
	}
	if r.Namespaces != nil {
		namespaces = strings.Join(r.Namespaces, ",")
	}
	return ports + "=" + namespaces
}
