// Command genbundle writes weft's OLM bundle (`make bundle`): bundle/ and bundle.Dockerfile
// from config/, see internal/olmbundle.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/weft-net/weft/internal/olmbundle"
)

func main() {
	var o olmbundle.Options
	var channels string
	flag.StringVar(&o.Root, "root", ".", "repository root")
	flag.StringVar(&o.Version, "version", "", "operator version (the Makefile's VERSION)")
	flag.StringVar(&channels, "channels", "stable,candidate", "channels, comma-separated")
	flag.StringVar(&o.DefaultChannel, "default-channel", "stable", "default channel")
	flag.Parse()
	o.Channels = strings.Split(channels, ",")
	o.Out = filepath.Join(o.Root, "bundle")
	o.Dockerfile = filepath.Join(o.Root, "bundle.Dockerfile")
	if err := olmbundle.Generate(o); err != nil {
		fmt.Fprintln(os.Stderr, "genbundle:", err)
		os.Exit(1)
	}
}
