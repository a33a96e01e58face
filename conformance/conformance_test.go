// Package conformance runs the upstream Gateway API conformance suite
// (sigs.k8s.io/gateway-api/conformance v1.6.3) against the cluster of the
// kubeconfig or the pod's service account: hack/conformance.sh builds this
// test into a binary and runs it as a Job in the kind cluster, where the
// Gateways' cluster IPs are reachable. Every option is a flag of the
// suite's (-gateway-class, -conformance-profiles, -report-output, ...);
// with no -supported-features the suite reads them from the
// GatewayClass's status, as PortMux declares them.
package conformance

import (
	"flag"
	"fmt"
	"os"
	"testing"

	"sigs.k8s.io/gateway-api/conformance"
)

// Markers around the report in the output: the Job's pod has no shell
// and its files die with it, so the report leaves through its log.
const (
	reportBegin = "----- BEGIN CONFORMANCE REPORT -----"
	reportEnd   = "----- END CONFORMANCE REPORT -----"
)

func TestConformance(t *testing.T) {
	// Registered before the suite's own cleanup, so it runs after the
	// suite has written the report.
	t.Cleanup(func() {
		f := flag.Lookup("report-output")
		if f == nil || f.Value.String() == "" {
			return
		}
		b, err := os.ReadFile(f.Value.String())
		if err != nil {
			t.Errorf("read the report: %v", err)
			return
		}
		fmt.Printf("%s\n%s%s\n", reportBegin, b, reportEnd)
	})
	conformance.RunConformance(t)
}
