// Package operator is the weft-operator's configuration (every flag, its defaults and
// validation) and the scheme of every type it reads or writes. It imports no controller:
// the wiring is cmd/weft-operator/manager.
package operator
