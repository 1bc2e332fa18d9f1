// Package operator wires the weft-operator: its configuration, the manager, every controller
// and webhook, and the webhook certificate. cmd/operator is a thin main around it; tests and
// the local demo start the same operator in-process.
package operator
