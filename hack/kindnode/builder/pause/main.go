// Command pause is the pod sandbox's first process for the kind node image
// built by hack/kind-node-image.sh, standing in for registry.k8s.io/pause
// (build/pause/linux/pause.c in Kubernetes), which no registry here serves.
// Like it, it holds the pod's namespaces and does nothing else: it exits on
// SIGINT or SIGTERM and, as PID 1 of a pod that shares its process
// namespace, reaps the zombies reparented to it.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// version is what -v prints; hack/kind-node-image.sh stamps the image tag.
var version = "dev"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-v" {
		fmt.Printf("pause.go %s\n", version)
		return
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "Warning: pause should be the first process")
	}
	sig := make(chan os.Signal, 16)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sig {
		if s != syscall.SIGCHLD {
			fmt.Fprintf(os.Stderr, "Shutting down, got signal: %v\n", s)
			os.Exit(0)
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
