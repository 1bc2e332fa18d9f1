// Package version is weft's release version, in one place; images default to it.
package version

// Version is the release; `make` stamps it from the Makefile's VERSION.
var Version = "v0.1.0"
