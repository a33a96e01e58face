package controllers

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	"github.com/portmux/portmux/controllers/compile"
	"github.com/portmux/portmux/test/peers"
)

// TestPortPolicyKeepsPortsWithTheirOwner: the cluster grants a port to one
// namespace. A PortMux elsewhere that asks for it is not accepted, with a
// reason that says so, even when it is older; the owner's PortMux serves the
// port, and serves it again when it is deleted and recreated while the
// squatter still asks for it.
func TestPortPolicyKeepsPortsWithTheirOwner(t *testing.T) {
	port := int32(peers.FreePort(t))
	var squat string
	// The port is granted to the test's namespace, the owner's.
	setup := func(owner string, copt *Options) {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "pmx-squat-"}}
		create(t, ns)
		squat = ns.Name
		t.Cleanup(func() { _ = k8s.Delete(context.Background(), ns) })
		rule, err := compile.ParsePortRule(fmt.Sprintf("%d=%s", port, owner))
		if err != nil {
			t.Fatal(err)
		}
		copt.PortPolicy = compile.PortPolicy{rule}
	}
	owner, _, _ := startControllerWithOptions(t, restCfg, setup, func(o *ctrl.Options) {
		o.Cache.DefaultNamespaces[squat] = cache.Config{}
	})

	echoService(t, squat, "squatter")
	echoService(t, owner, "owner")

	create(t, sshMux(squat, "grab", port, "squatter"))
	cond := condition(t, squat, "grab", "Accepted", metav1.ConditionFalse, compile.ReasonPortNotAllowed)
	if !strings.Contains(cond.Message, strconv.Itoa(int(port))) || !strings.Contains(cond.Message, squat) {
		t.Errorf("the refusal should name the port and the namespace: %q", cond.Message)
	}
	time.Sleep(1100 * time.Millisecond) // the owner's PortMux is younger
	mux := sshMux(owner, "public", port, "owner")
	createReady(t, mux)
	if got, err := talk(port, "x"); got != "owner:x" {
		t.Fatalf("the port should serve the owner: %q, %v", got, err)
	}

	// Deleted and recreated: the squatter, older now, still gets nothing.
	remove(t, mux)
	condition(t, squat, "grab", "Accepted", metav1.ConditionFalse, compile.ReasonPortNotAllowed)
	time.Sleep(1100 * time.Millisecond)
	createReady(t, sshMux(owner, "public", port, "owner"))
	peers.Eventually(t, settleTimeout, "the recreated owner serves the port", func() error {
		if got, err := talk(port, "x"); got != "owner:x" {
			return fmt.Errorf("%q, %v", got, err)
		}
		return nil
	})
}
