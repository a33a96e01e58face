//go:build tools

// Package tools records the programs hack/envtest-assets.sh builds, so that
// `go mod tidy` keeps their whole dependency graph in go.mod and go.sum.
// The build tag keeps this file out of every normal build.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"

	_ "github.com/portmux/portmux/hack/envtest/etcd"
)
