// Package tier keeps the built-in policy tiers present, reports tiers whose priority is
// already held by an older tier, and serves the admission webhook that refuses such
// duplicates up front. Policy evaluation itself lives with FabricPolicy, not here.
package tier
