// Command genargocd writes config/argocd/argocd-cm-patch.yaml from the health scripts
// (`make generate-argocd`).
package main

import (
	"fmt"
	"os"

	"github.com/weft-net/weft/internal/argohealth"
)

func main() {
	out, err := argohealth.ConfigMapPatch(".")
	if err == nil {
		err = os.WriteFile("config/argocd/argocd-cm-patch.yaml", out, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "genargocd:", err)
		os.Exit(1)
	}
}
