// Command weftctl is weft's command-line tool: `weftctl lab` runs the multi-cluster lab.
// Called as agnhost or pause (through a symlink), it is the lab's built-in test image.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/weft-net/weft/test/lab/agnhost"
)

func main() {
	switch filepath.Base(os.Args[0]) {
	case "agnhost":
		os.Exit(agnhost.Main(os.Args[1:]))
	case "pause":
		os.Exit(agnhost.Main([]string{"pause"}))
	}
	root := &cobra.Command{
		Use:           "weftctl",
		Short:         "weft's command-line tool",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(labCommand())
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "weftctl:", err)
		os.Exit(1)
	}
}
