// Package e2e tests the portmux binary from the outside.
//
// TestManagerProcess (no build tag: `make test` runs it) is the process
// tier: `portmux manager` as its own process against a real kube-apiserver
// and etcd (envtest, from KUBEBUILDER_ASSETS), configured with the real
// kubectl, carrying traffic from real clients (ssh, openssl s_client) to
// real backends (sshd, openssl s_server) that Services and EndpointSlices
// name. It needs root for the test addresses of test/hostaddr (the API
// server refuses loopback endpoints) and skips with a one-line reason when
// KUBEBUILDER_ASSETS is unset or a program is missing. Everything binds
// 127.0.0.1 or the test addresses.
//
// TestSplitProcesses is the same tier for the pod's shape: `portmux
// dataplane --socket` and `portmux manager --dataplane-socket` as two
// processes, each killed and restarted while the other carries on.
//
// TestUserGuide (no build tag either) tries each setup of
// docs/user-guide.md: `portmux serve -f` with the guide's own file from
// docs/examples, only its port and addresses filled in, its Secrets written
// by docs/examples/secret.sh, and the clients the guide names (ssh,
// openvpn, curl, openssl s_client, portmux tunnel) against real servers on
// 127.0.0.1. It needs no cluster.
//
// Tests behind the e2e build tag (`make test-e2e`) run on a kind cluster.
//
// The package has no code of its own; it decides nothing.
package e2e
