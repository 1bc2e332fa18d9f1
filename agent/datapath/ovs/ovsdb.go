package ovs

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/ovn-kubernetes/libovsdb/client"
	"github.com/ovn-kubernetes/libovsdb/model"
	"github.com/ovn-kubernetes/libovsdb/ovsdb"

	"github.com/weft-net/weft/agent/datapath/ovs/vswitch"
)

// ovsDB is the driver's view of the Open_vSwitch database: bridges, ports and interfaces.
type ovsDB struct {
	c client.Client
}

func connectOVSDB(ctx context.Context, endpoint string) (*ovsDB, error) {
	m, err := model.NewClientDBModel("Open_vSwitch", map[string]model.Model{
		vswitch.OpenvSwitchTable: &vswitch.OpenvSwitch{},
		vswitch.BridgeTable:      &vswitch.Bridge{},
		vswitch.PortTable:        &vswitch.Port{},
		vswitch.InterfaceTable:   &vswitch.Interface{},
	})
	if err != nil {
		return nil, err
	}
	c, err := client.NewOVSDBClient(m, client.WithEndpoint(endpoint))
	if err != nil {
		return nil, err
	}
	if err := c.Connect(ctx); err != nil {
		return nil, fmt.Errorf("connecting to OVSDB at %s: %w", endpoint, err)
	}
	if _, err := c.MonitorAll(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("monitoring OVSDB: %w", err)
	}
	return &ovsDB{c: c}, nil
}

func (o *ovsDB) close() { o.c.Close() }

func (o *ovsDB) transact(ctx context.Context, ops ...ovsdb.Operation) error {
	reply, err := o.c.Transact(ctx, ops...)
	if err != nil {
		return err
	}
	_, err = ovsdb.CheckOperationResults(reply, ops)
	return err
}

func (o *ovsDB) root() (*vswitch.OpenvSwitch, error) {
	var rows []vswitch.OpenvSwitch
	if err := o.c.List(context.Background(), &rows); err != nil {
		return nil, err
	}
	if len(rows) != 1 {
		return nil, fmt.Errorf("OVSDB has %d Open_vSwitch rows, want 1 (is the database initialized?)", len(rows))
	}
	return &rows[0], nil
}

func (o *ovsDB) bridge(name string) (*vswitch.Bridge, error) {
	br := &vswitch.Bridge{Name: name}
	if err := o.c.Get(context.Background(), br); err != nil {
		return nil, err
	}
	return br, nil
}

// ensureBridge creates a bridge with its local internal port, or fixes its datapath type and
// fail mode. The Bridge row is referenced from the root row in the same transaction (Bridge
// is not a root table: an unreferenced row would vanish). A secure bridge forwards only by
// the flows it is given; a standalone one is a plain learning switch.
func (o *ovsDB) ensureBridge(ctx context.Context, name, datapathType string, failMode vswitch.BridgeFailMode) error {
	secure := failMode
	protocols := []string{vswitch.BridgeProtocolsOpenflow13}
	if br, err := o.bridge(name); err == nil {
		if br.DatapathType == datapathType && br.FailMode != nil && *br.FailMode == secure && len(br.Protocols) == 1 {
			return nil
		}
		br.DatapathType, br.FailMode, br.Protocols = datapathType, &secure, protocols
		ops, err := o.c.Where(br).Update(br, &br.DatapathType, &br.FailMode, &br.Protocols)
		if err != nil {
			return err
		}
		return o.transact(ctx, ops...)
	} else if !errors.Is(err, client.ErrNotFound) {
		return err
	}
	root, err := o.root()
	if err != nil {
		return err
	}
	iface := &vswitch.Interface{UUID: "newiface", Name: name, Type: "internal"}
	port := &vswitch.Port{UUID: "newport", Name: name, Interfaces: []string{iface.UUID}}
	br := &vswitch.Bridge{UUID: "newbridge", Name: name, DatapathType: datapathType, FailMode: &secure,
		Protocols: protocols, Ports: []string{port.UUID}, ExternalIDs: map[string]string{"owner": "weft"}}
	var ops []ovsdb.Operation
	for _, m := range []model.Model{iface, port, br} {
		op, err := o.c.Create(m)
		if err != nil {
			return err
		}
		ops = append(ops, op...)
	}
	mut, err := o.c.Where(root).Mutate(root, model.Mutation{Field: &root.Bridges, Mutator: ovsdb.MutateOperationInsert, Value: []string{br.UUID}})
	if err != nil {
		return err
	}
	return o.transact(ctx, append(ops, mut...)...)
}

// portSpec is the desired state of a port with one interface.
type portSpec struct {
	Bridge, Name, Type   string
	Options, ExternalIDs map[string]string
}

// ensurePort creates the port, or updates its interface when type, options or external IDs
// differ. An identical port is left alone.
func (o *ovsDB) ensurePort(ctx context.Context, p portSpec) error {
	iface := &vswitch.Interface{Name: p.Name}
	err := o.c.Get(ctx, iface)
	if err == nil {
		if iface.Type == p.Type && maps.Equal(iface.Options, p.Options) && maps.Equal(iface.ExternalIDs, p.ExternalIDs) {
			return nil
		}
		iface.Type, iface.Options, iface.ExternalIDs = p.Type, p.Options, p.ExternalIDs
		ops, err := o.c.Where(iface).Update(iface, &iface.Type, &iface.Options, &iface.ExternalIDs)
		if err != nil {
			return err
		}
		return o.transact(ctx, ops...)
	}
	if !errors.Is(err, client.ErrNotFound) {
		return err
	}
	br, err := o.bridge(p.Bridge)
	if err != nil {
		return fmt.Errorf("bridge %s: %w", p.Bridge, err)
	}
	newIface := &vswitch.Interface{UUID: "newiface", Name: p.Name, Type: p.Type, Options: p.Options, ExternalIDs: p.ExternalIDs}
	newPort := &vswitch.Port{UUID: "newport", Name: p.Name, Interfaces: []string{newIface.UUID}, ExternalIDs: p.ExternalIDs}
	var ops []ovsdb.Operation
	for _, m := range []model.Model{newIface, newPort} {
		op, err := o.c.Create(m)
		if err != nil {
			return err
		}
		ops = append(ops, op...)
	}
	mut, err := o.c.Where(br).Mutate(br, model.Mutation{Field: &br.Ports, Mutator: ovsdb.MutateOperationInsert, Value: []string{newPort.UUID}})
	if err != nil {
		return err
	}
	return o.transact(ctx, append(ops, mut...)...)
}

// deletePort removes a port from its bridge; OVSDB collects the unreferenced Port and
// Interface rows. A missing port is no error.
func (o *ovsDB) deletePort(ctx context.Context, bridge, name string) error {
	port := &vswitch.Port{Name: name}
	if err := o.c.Get(ctx, port); err != nil {
		if errors.Is(err, client.ErrNotFound) {
			return nil
		}
		return err
	}
	br, err := o.bridge(bridge)
	if err != nil {
		return err
	}
	mut, err := o.c.Where(br).Mutate(br, model.Mutation{Field: &br.Ports, Mutator: ovsdb.MutateOperationDelete, Value: []string{port.UUID}})
	if err != nil {
		return err
	}
	return o.transact(ctx, mut...)
}

// interfaces returns the interfaces whose external IDs have the key.
func (o *ovsDB) interfaces(key string) ([]vswitch.Interface, error) {
	var out []vswitch.Interface
	err := o.c.WhereCache(func(i *vswitch.Interface) bool { _, ok := i.ExternalIDs[key]; return ok }).List(context.Background(), &out)
	return out, err
}

// waitOFPort waits until vswitchd has attached the interface (ofport assigned), and reports
// its error if it could not.
func (o *ovsDB) waitOFPort(ctx context.Context, name string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		iface := &vswitch.Interface{Name: name}
		if err := o.c.Get(ctx, iface); err == nil {
			if iface.Error != nil && *iface.Error != "" {
				return fmt.Errorf("ovs could not attach %s: %s", name, *iface.Error)
			}
			if iface.Ofport != nil && *iface.Ofport > 0 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ovs did not attach %s within 10s", name)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// deleteBridge removes a bridge from the switch (its ports and interfaces go with it). A
// missing bridge is no error.
func (o *ovsDB) deleteBridge(ctx context.Context, name string) error {
	br, err := o.bridge(name)
	if errors.Is(err, client.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	root, err := o.root()
	if err != nil {
		return err
	}
	mut, err := o.c.Where(root).Mutate(root, model.Mutation{Field: &root.Bridges, Mutator: ovsdb.MutateOperationDelete, Value: []string{br.UUID}})
	if err != nil {
		return err
	}
	return o.transact(ctx, mut...)
}
