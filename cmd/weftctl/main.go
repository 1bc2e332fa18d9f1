// Command weftctl is weft's command-line tool: `weftctl lab` runs the multi-cluster lab.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	root := &cobra.Command{
		Use:           "weftctl",
		Short:         "weft's command-line tool",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(labCommand(), peerCommand(), statusCommand(), diagnoseCommand(), clustersetCommand(), gatewayCommand(), versionCommand())
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "weftctl:", err)
		os.Exit(1)
	}
}
