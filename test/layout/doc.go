// Package layout holds the tests that keep the repository's shape honest: the README's layout
// table names every Go package, and the import rules between layers hold (nothing under
// internal/ imports controllers/, the agent does not import the gateway).
package layout
