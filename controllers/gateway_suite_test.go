package controllers

import (
	"fmt"
	"path/filepath"

	"sigs.k8s.io/controller-runtime/pkg/envtest"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/portmux/portmux/test/apiserver"
)

// gatewayAPIErr says why the Gateway API CRDs could not be installed; the
// Gateway API tests fail with it.
var gatewayAPIErr error

// installGatewayAPI makes the test API server a cluster with the Gateway
// API: its types in the scheme and its standard CRDs, as
// hack/gateway-api-crds.sh copies them from the module into
// config/gateway-api.
func installGatewayAPI(e *apiserver.Env) error {
	if err := gwv1.Install(e.Scheme); err != nil {
		return fmt.Errorf("add the Gateway API to the scheme: %w", err)
	}
	if e.SkipReason != "" {
		return nil
	}
	if _, err := envtest.InstallCRDs(e.Config, envtest.CRDInstallOptions{
		Paths:              []string{filepath.Join("..", "config", "gateway-api")},
		ErrorIfPathMissing: true,
	}); err != nil {
		return fmt.Errorf("install the Gateway API CRDs from config/gateway-api: %w", err)
	}
	return nil
}
