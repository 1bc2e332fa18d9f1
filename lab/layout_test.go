package lab

import "testing"

func TestLayout(t *testing.T) {
	l, err := NewLayout("lab", "/s", 2, 2, 16443)
	if err != nil {
		t.Fatal(err)
	}
	c2 := l.Clusters[1]
	if c2.Name != "weft-2" || c2.PodCIDR.String() != "10.245.0.0/16" || c2.ServiceCIDR.String() != "10.97.0.0/16" ||
		c2.APIPort != 16444 || c2.ControlPlane.IP.String() != "172.30.2.2" || c2.Nodes[1].IP.String() != "172.30.2.12" ||
		c2.Nodes[1].Name != "weft-2-node-2" || c2.Nodes[1].Netns != "weftlab-lab-weft-2-node-2" || l.PodNetnsPrefix() != "weftlab-lab-pod-" {
		t.Errorf("unexpected layout: %+v", c2)
	}
	if got := c2.ServiceIP(10).String(); got != "10.97.0.10" {
		t.Errorf("DNS IP = %s", got)
	}
	for _, h := range append(c2.Nodes, c2.ControlPlane) {
		if len(h.Port) > 15 {
			t.Errorf("switch port name %q is longer than an interface name may be", h.Port)
		}
	}
	if _, err := NewLayout("lab", "/s", 0, 2, 1); err == nil {
		t.Error("0 clusters accepted")
	}
	if _, err := NewLayout("lab", "/s", 1, 12, 1); err == nil {
		t.Error("12 nodes accepted")
	}
}

func TestLayoutOverlap(t *testing.T) {
	l, err := NewLayout("lab", "/s", 3, 1, 16443)
	if err != nil {
		t.Fatal(err)
	}
	l.OverlapLast()
	c1, c2, c3 := l.Clusters[0], l.Clusters[1], l.Clusters[2]
	if c3.PodCIDR != c1.PodCIDR || c3.ServiceCIDR != c1.ServiceCIDR || c2.PodCIDR == c1.PodCIDR {
		t.Errorf("--overlap: weft-3 has pods %s services %s, weft-1 %s %s, weft-2 %s", c3.PodCIDR, c3.ServiceCIDR, c1.PodCIDR, c1.ServiceCIDR, c2.PodCIDR)
	}
	if c3.ControlPlane.IP == c1.ControlPlane.IP || c3.Nodes[0].IP == c1.Nodes[0].IP {
		t.Error("--overlap changed the underlay addresses")
	}
}
