// Package monitoring checks config/monitoring against what weft serves: its PodMonitors
// scrape ports the workloads declare, with an identity that may read them; its alerts and
// dashboard name only metrics docs/metrics.md documents; promtool accepts the rules and
// their unit tests pass.
package monitoring
