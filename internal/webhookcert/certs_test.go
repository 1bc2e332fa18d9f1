package webhookcert

import (
	"net"
	"strings"
	"testing"
	"time"
)

func mustBundle(t *testing.T, now time.Time, caValidity, validity time.Duration, names []string, ips []net.IP) bundle {
	t.Helper()
	caCert, caKey, err := newCA(now, caValidity)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := newLeaf(caCert, caKey, names, ips, now, validity)
	if err != nil {
		t.Fatal(err)
	}
	return bundle{CACert: caCert, CAKey: caKey, Cert: cert, Key: key}
}

func TestUsable(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	names := []string{"weft-webhook.weft-system.svc"}
	ips := []net.IP{net.ParseIP("127.0.0.1")}
	day := 24 * time.Hour
	good := mustBundle(t, now, 3650*day, 365*day, names, ips)
	other := mustBundle(t, now, 3650*day, 365*day, names, ips)

	cases := []struct {
		name     string
		b        bundle
		names    []string
		ips      []net.IP
		at       time.Time
		wantCAOK bool
		wantErr  string
	}{
		{"fresh", good, names, ips, now, true, ""},
		{"needs another name", good, append(names, "other.svc"), ips, now, true, "lacks DNS name other.svc"},
		{"needs another IP", good, names, []net.IP{net.ParseIP("10.0.0.1")}, now, true, "lacks IP 10.0.0.1"},
		{"leaf within renewal window", good, names, ips, now.Add(340 * day), true, "expires soon"},
		{"CA within renewal window", good, names, ips, now.Add(3630 * day), false, "CA expires soon"},
		{"empty", bundle{}, names, ips, now, false, "CA: no PEM certificate"},
		{"leaf from another CA", bundle{CACert: good.CACert, CAKey: good.CAKey, Cert: other.Cert, Key: other.Key},
			names, ips, now, true, "does not verify against the CA"},
		{"key of another leaf", bundle{CACert: good.CACert, CAKey: good.CAKey, Cert: good.Cert, Key: other.Key},
			names, ips, now, true, "private key does not match"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			caOK, err := c.b.usable(c.names, c.ips, c.at, 30*day)
			if caOK != c.wantCAOK {
				t.Errorf("caOK = %v, want %v", caOK, c.wantCAOK)
			}
			switch {
			case c.wantErr == "" && err != nil:
				t.Errorf("unexpected error %v", err)
			case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
				t.Errorf("error = %v, want one containing %q", err, c.wantErr)
			}
		})
	}
}

func TestLeafNeverOutlivesCA(t *testing.T) {
	now := time.Now()
	b := mustBundle(t, now, 48*time.Hour, 365*24*time.Hour, []string{"x"}, nil)
	ca, _ := parseCert(b.CACert)
	leaf, _ := parseCert(b.Cert)
	if leaf.NotAfter.After(ca.NotAfter) {
		t.Errorf("leaf expires %v after CA %v", leaf.NotAfter, ca.NotAfter)
	}
}
