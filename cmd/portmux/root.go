package main

import (
	"flag"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/portmux/portmux/dataplane/daemon"
)

// version is stamped at build time (-X main.version=...).
var version = "dev"

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "portmux",
		Short:         "One port, many protocols: SSH, TLS, HTTP, WebSocket tunnels, OpenVPN on :443",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newManagerCommand(), daemon.NewCommand(logFlags), newServeCommand(), newTunnelCommand(), newVersionCommand())
	return root
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			cmd.Println("portmux", version)
		},
	}
}

// logFlags adds the zap logger's flags (--zap-log-level, --zap-devel, ...)
// to a command and returns a function that builds the logger from them.
func logFlags(cmd *cobra.Command) func() logr.Logger {
	opts := zap.Options{Development: false}
	fs := flag.NewFlagSet("zap", flag.ContinueOnError)
	opts.BindFlags(fs)
	cmd.Flags().AddGoFlagSet(fs)
	return func() logr.Logger { return zap.New(zap.UseFlagOptions(&opts)) }
}
