//go:build tools

// Package tools records CoreDNS, which hack/kind-node-image.sh builds, so
// that `go mod tidy` keeps its dependency graph in go.mod and go.sum.
package tools

import _ "github.com/coredns/coredns"
