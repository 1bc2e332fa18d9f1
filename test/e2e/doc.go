// Package e2e runs weft's end-to-end specs against a lab (lab/) that the suite brings up
// itself under the name "e2e", beside any lab you run by hand. Specs are functions that take
// an input struct, so later suites reuse them (with weft's CNI, across clusters, ...).
//
// The suite needs root (network namespaces) and the lab's binaries (hack/lab-deps.sh, which
// `make test` runs first).
package e2e
