package ovs

// WithoutOFCtl makes the driver's ovs-ofctl a command that does not exist: a test that
// expects a change to go through the OpenFlow connection alone fails if it spawns one.
func WithoutOFCtl(d *Driver) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ofctl = "/nonexistent/ovs-ofctl"
}

// OFCtlOnly makes the driver send every flow change through ovs-ofctl, as it did before it
// had an OpenFlow connection of its own (the benchmark's baseline).
func OFCtlOnly(d *Driver, on bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ofctlOnly = on
}
