// Command portmux shares one port between many protocols.
//
//	portmux manager   the controller (and the dataplane, unless --dataplane-socket)
//	portmux dataplane the dataplane alone, programmed over a Unix socket
//	portmux serve     the dataplane from PortMux YAML files, no cluster
//	portmux tunnel    the client end of a WebSocket tunnel
//	portmux version   the build's version
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCommand().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "portmux:", err)
		os.Exit(1)
	}
}
