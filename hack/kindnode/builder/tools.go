//go:build tools

// Package tools records the node programs hack/kind-node-image.sh builds, so
// that `go mod tidy` keeps their whole dependency graph in go.mod and go.sum.
// The build tag keeps this file out of every normal build. kube-apiserver,
// etcd and kubectl come from hack/envtest (the same versions, already built
// for envtest), so they are not here.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubeadm"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
