// Package gitops holds the tests of what GitOps tools see of weft: objects applied from Git
// with server-side apply stay as Git says (the operator never writes spec), and health reads
// the same in kstatus (Flux) and Argo CD. They run the whole operator against envtest.
package gitops
