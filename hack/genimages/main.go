// Command genimages writes the Dockerfile from the image table in internal/images
// (`make generate-images`).
package main

import (
	"fmt"
	"os"

	"github.com/weft-net/weft/internal/images"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: genimages <Dockerfile>")
		os.Exit(2)
	}
	if err := os.WriteFile(os.Args[1], images.Dockerfile(), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
