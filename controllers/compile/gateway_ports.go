package compile

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/portmux/portmux/dataplane/snapshot"
)

// Per-Gateway Services.
//
// On the dataplane's one address, Gateways that ask for the same port
// must be merged or refused: the conformance suite's three base Gateways,
// each with an HTTP listener on 80 and no hostname, can never all be
// Programmed. With GatewayServices set, each Gateway gets an address of
// its own instead: a Service the manager owns, in the dataplane's
// namespace and selecting the dataplane pod, whose ports are the
// Gateway's listener ports and whose targetPorts are dataplane ports
// allocated to that Gateway from a configured range. Gateways then never
// share a port; listeners are distinct (HostnameConflict,
// ProtocolConflict) only within one Gateway.
//
// Allocation is stable: a Gateway keeps the targetPort its Service
// records for a listener port (read back from the cluster as
// GatewayServices.Existing), and a port without one starts from a hash of
// the Gateway and port, so that a lost Service gets its port back. The
// whole range is the Gateways': a PortMux listener asking for a port in it
// is not Accepted (PortConflict).

// GatewayServices is the input of per-Gateway Services.
type GatewayServices struct {
	// Namespace holds the Services (the dataplane's, the release
	// namespace).
	Namespace string
	// Range is where dataplane ports are allocated from
	// (--gateway-port-range).
	Range PortRange
	// Existing are the Services found in the cluster, by the Gateway each
	// serves: where allocations are read back from, and the Gateway's
	// addresses.
	Existing map[types.NamespacedName]ExistingGatewayService
}

// ExistingGatewayService is what the cluster says of a Gateway's Service.
type ExistingGatewayService struct {
	// Ports are the Service's ports: each targetPort is the dataplane port
	// allocated to that listener port.
	Ports []corev1.ServicePort
	// Addresses are its load balancer's addresses, or its cluster IPs.
	Addresses []gwv1.GatewayStatusAddress
}

// GatewayService is the Service a Gateway should have: the controller
// creates or updates it (its type and selector are the dataplane
// Service's) and deletes the Services of Gateways that have none.
type GatewayService struct {
	types.NamespacedName
	// Ports, sorted by port then protocol: port is the listener port,
	// targetPort the allocated dataplane port.
	Ports []corev1.ServicePort
}

// ParseGatewayPortRange parses --gateway-port-range ("20000-20999").
func ParseGatewayPortRange(s string) (PortRange, error) {
	r, err := parsePortRange(strings.TrimSpace(s))
	if err != nil {
		return PortRange{}, fmt.Errorf("gateway port range: %w", err)
	}
	return r, nil
}

// GatewayServiceName names the Service of a Gateway: readable, a valid
// DNS label, and distinct for every Gateway (the hash of namespace/name
// tells apart names the dashes would confuse, like a-b/c and a/b-c).
func GatewayServiceName(gw types.NamespacedName) string {
	sum := sha256.Sum256([]byte(gw.String()))
	base := "gw-" + gw.Namespace + "-" + gw.Name
	const maxBase = 63 - 1 - 8
	if len(base) > maxBase {
		base = base[:maxBase]
	}
	base = strings.TrimRight(strings.ReplaceAll(base, ".", "-"), "-")
	return base + "-" + hex.EncodeToString(sum[:4])
}

// rangeHolder is how the port range holds its ports in the port table
// shared with PortMuxes; conflictMessage recognises it.
func rangeHolder(r PortRange) string {
	return fmt.Sprintf("the Gateway port range %d-%d", r.From, r.To)
}

// portRequest asks for one dataplane port: key identifies the Gateway,
// transport and listener port (it seeds the hash); previous is the port
// its Service records, 0 for none.
type portRequest struct {
	key      string
	previous int32
}

// allocatePorts gives each request a distinct port of r, or 0 when r is
// exhausted. Requests come in precedence order (oldest Gateway first):
// first every request keeps its previous port if it is in r and no
// earlier request kept it, so that no new allocation can take a port in
// use; then each other request takes the first free port from a hash of
// its key, wrapping around r.
func allocatePorts(r PortRange, reqs []portRequest) []int32 {
	out := make([]int32, len(reqs))
	used := map[int32]bool{}
	for i, q := range reqs {
		if q.previous >= r.From && q.previous <= r.To && !used[q.previous] {
			out[i] = q.previous
			used[q.previous] = true
		}
	}
	size := uint32(r.To-r.From) + 1
	for i, q := range reqs {
		if out[i] != 0 {
			continue
		}
		sum := sha256.Sum256([]byte(q.key))
		start := binary.BigEndian.Uint32(sum[:4]) % size
		for n := range size {
			p := r.From + int32((start+n)%size)
			if !used[p] {
				out[i] = p
				used[p] = true
				break
			}
		}
	}
	return out
}

// allocate gives each Gateway port group a dataplane port and each
// Gateway its Service, then reserves the range against PortMuxes: ports
// allocated in it are held by their Gateway, the others by the range.
func (g *gwCompiler) allocate(ports map[portKey]string) {
	svcs := g.gin.Services
	var reqs []portRequest
	for _, pk := range g.order {
		prev := int32(0)
		for _, sp := range svcs.Existing[pk.gw].Ports {
			if sp.Port == pk.port && cmp.Or(sp.Protocol, corev1.ProtocolTCP) == protocolOf(pk.t) && sp.TargetPort.Type == intstr.Int {
				prev = sp.TargetPort.IntVal
			}
		}
		reqs = append(reqs, portRequest{key: fmt.Sprintf("%s/%s/%d", pk.gw, pk.t, pk.port), previous: prev})
	}
	got := allocatePorts(svcs.Range, reqs)
	for i, pk := range g.order {
		pg := g.groups[pk]
		if got[i] == 0 {
			for _, gl := range pg.listeners {
				gl.res.Refused = Finding{reasonPortUnavailable, fmt.Sprintf("no dataplane port is left in the Gateway port range %d-%d (--gateway-port-range)", svcs.Range.From, svcs.Range.To)}
			}
			continue
		}
		pg.bind = got[i]
		ports[portKey{t: pk.t, port: got[i]}] = pg.holder
		gg := g.gateways[pk.gw]
		if gg.res.Service == nil {
			gg.res.Service = &GatewayService{NamespacedName: types.NamespacedName{Namespace: svcs.Namespace, Name: GatewayServiceName(pk.gw)}}
		}
		gg.res.Service.Ports = append(gg.res.Service.Ports, corev1.ServicePort{
			Name:       fmt.Sprintf("%s-%d", strings.ToLower(string(protocolOf(pk.t))), pk.port),
			Protocol:   protocolOf(pk.t),
			Port:       pk.port,
			TargetPort: intstr.FromInt32(got[i]),
		})
	}
	for _, gg := range g.gateways {
		if s := gg.res.Service; s != nil {
			slices.SortFunc(s.Ports, func(a, b corev1.ServicePort) int {
				return cmp.Or(cmp.Compare(a.Port, b.Port), cmp.Compare(a.Protocol, b.Protocol))
			})
		}
	}
	for p := svcs.Range.From; p <= svcs.Range.To; p++ {
		for _, t := range []snapshot.Transport{snapshot.TCP, snapshot.UDP} {
			if _, held := ports[portKey{t: t, port: p}]; !held {
				ports[portKey{t: t, port: p}] = rangeHolder(svcs.Range)
			}
		}
	}
}

// protocolOf is a transport's Service protocol.
func protocolOf(t snapshot.Transport) corev1.Protocol {
	if t == snapshot.UDP {
		return corev1.ProtocolUDP
	}
	return corev1.ProtocolTCP
}
