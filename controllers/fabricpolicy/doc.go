// Package fabricpolicy reconciles FabricPolicies' status (a policy naming a missing tier is
// Stalled; the others wait for the datapath to enforce them) and keeps a tier that policies
// use from being deleted (a finalizer, and a clear refusal at admission in package tier).
// Compiling and enforcing policies is the agents' job, not this package's.
package fabricpolicy
