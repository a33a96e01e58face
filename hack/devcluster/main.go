// Command devcluster runs the offline development control plane for
// `make run`: kube-apiserver and etcd from KUBEBUILDER_ASSETS (built by
// hack/envtest-assets.sh, so nothing prebuilt is downloaded), with the
// PortMux CRDs from config/crd/bases installed, and an admin kubeconfig
// written for kubectl and `portmux manager`.
//
//	KUBEBUILDER_ASSETS=$(hack/envtest-assets.sh) go run ./hack/devcluster --kubeconfig bin/dev/kubeconfig
//
// The kubeconfig appears (written to a temporary file and renamed) only once
// the API server is up and the CRDs are established, so a script can wait
// for the file. Everything listens on 127.0.0.1 only. devcluster runs until
// SIGINT or SIGTERM, then stops both servers and removes their data: every
// run starts from an empty cluster.
//
// It decides nothing about PortMux itself; it is envtest's control plane
// kept running for a person instead of a test.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/portmux/portmux/test/apiserver"
)

func main() {
	// Not flag.CommandLine: controller-runtime registers its own
	// --kubeconfig there.
	fs := flag.NewFlagSet("devcluster", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", filepath.Join("bin", "dev", "kubeconfig"), "where to write the admin kubeconfig (removed on exit)")
	crdDir := fs.String("crd-dir", filepath.Join("config", "crd", "bases"), "directory of CRD manifests to install")
	_ = fs.Parse(os.Args[1:])
	logf.SetLogger(zap.New(zap.UseDevMode(false)))
	if err := run(*kubeconfig, *crdDir); err != nil {
		fmt.Fprintln(os.Stderr, "devcluster:", err)
		os.Exit(1)
	}
}

func run(kubeconfig, crdDir string) error {
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		return errors.New("KUBEBUILDER_ASSETS is not set: run KUBEBUILDER_ASSETS=$(hack/envtest-assets.sh) " + os.Args[0])
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{crdDir},
		ErrorIfCRDPathMissing: true,
		// A cold start of a freshly built apiserver can take a while on a
		// busy machine; envtest's default is 20s.
		ControlPlaneStartTimeout: time.Minute,
	}
	start := time.Now()
	fmt.Fprintf(os.Stderr, "devcluster: starting kube-apiserver and etcd from %s\n", assets)
	if _, err := env.Start(); err != nil {
		return fmt.Errorf("start the control plane: %w", err)
	}
	defer func() {
		fmt.Fprintln(os.Stderr, "devcluster: stopping kube-apiserver and etcd")
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "devcluster: stop:", err)
		}
		_ = os.Remove(kubeconfig)
	}()

	// envtest's own user is in system:masters; a separate one gets its own
	// client certificate, written into a plain kubeconfig file.
	admin, err := apiserver.WriteAdminKubeconfig(env, "portmux-dev-admin", kubeconfig)
	if err != nil {
		return err
	}

	fmt.Fprintf(os.Stderr, "devcluster: ready in %s\n", time.Since(start).Round(100*time.Millisecond))
	fmt.Fprintf(os.Stderr, "devcluster:   API server  %s\n", admin.Config().Host)
	fmt.Fprintf(os.Stderr, "devcluster:   etcd        %s\n", env.ControlPlane.Etcd.URL)
	fmt.Fprintf(os.Stderr, "devcluster:   CRDs        %d from %s\n", len(env.CRDs), crdDir)
	fmt.Fprintf(os.Stderr, "devcluster:   kubeconfig  %s (user portmux-dev-admin, group system:masters)\n", kubeconfig)
	fmt.Fprintf(os.Stderr, "devcluster:   kubectl     %s\n", filepath.Join(assets, "kubectl"))
	fmt.Fprintln(os.Stderr, "devcluster: running until SIGINT or SIGTERM")

	<-ctx.Done()
	return nil
}
