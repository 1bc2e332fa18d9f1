package dns

import (
	"bytes"
	"encoding/binary"
	"sync"

	"github.com/miekg/dns"
)

// The UDP fast path. A cluster's resolvers ask the same few questions over and over, so
// the first answer to a question is packed by Answer and kept with the zone snapshot it
// came from, under the question's bytes as sent (so the case of the name is echoed) and the
// client's EDNS UDP size (which decides the OPT record and truncation). Later queries copy
// it and patch what miekg's SetReply takes from a request: the ID and the RD and CD bits.
// Anything unusual — another opcode, more sections, a malformed or compressed name — takes
// the full path every time.

// maxCached bounds the answers kept per snapshot: a flood of random names stops adding.
const maxCached = 50000

type answerCache struct {
	mu sync.RWMutex
	m  map[string][]byte
}

func newAnswerCache() *answerCache { return &answerCache{m: map[string][]byte{}} }

func (c *answerCache) get(key []byte) []byte {
	if c == nil {
		return nil
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.m[string(key)]
}

func (c *answerCache) put(key, answer []byte) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) < maxCached {
		c.m[string(key)] = answer
	}
}

// cacheKey checks that req is a plain query — QR clear, opcode QUERY, one question with an
// uncompressed name, no answer or authority records, at most one additional record which is
// an OPT, no trailing bytes — and appends its key to key[:0]: the question's bytes, then
// whether it has EDNS and the UDP size it offers.
func cacheKey(req, key []byte) ([]byte, bool) {
	if len(req) < 12 || req[2]&0xf8 != 0 { // QR or an opcode
		return key, false
	}
	be := binary.BigEndian
	if be.Uint16(req[4:]) != 1 || be.Uint16(req[6:]) != 0 || be.Uint16(req[8:]) != 0 || be.Uint16(req[10:]) > 1 {
		return key, false
	}
	off := 12
	for {
		if off >= len(req) {
			return key, false
		}
		l := int(req[off])
		if l == 0 {
			off++
			break
		}
		if l > 63 { // a compression pointer or a reserved label type
			return key, false
		}
		off += 1 + l
	}
	end := off + 4 // type and class
	if off-12 > 255 || end > len(req) {
		return key, false
	}
	edns, size := byte(0), uint16(0)
	if be.Uint16(req[10:]) == 1 {
		// OPT: root owner, TYPE 41, CLASS = UDP size, TTL, RDLENGTH, options.
		o := end
		if o+11 > len(req) || req[o] != 0 || be.Uint16(req[o+1:]) != dns.TypeOPT ||
			o+11+int(be.Uint16(req[o+9:])) != len(req) {
			return key, false
		}
		edns, size = 1, be.Uint16(req[o+3:])
	} else if end != len(req) {
		return key, false
	}
	key = append(key[:0], req[12:end]...)
	return append(key, edns, byte(size>>8), byte(size)), true
}

// udpScratch is one UDP reader's reusable buffers.
type udpScratch struct{ key, out []byte }

// answerUDP answers one query received over UDP, in wire form, into s.out; nil means
// nothing is sent (responses and what does not parse are dropped, as miekg's server does).
func (a *Answerer) answerUDP(req []byte, s *udpScratch) []byte {
	snap := a.snap()
	key, plain := cacheKey(req, s.key)
	s.key = key
	if plain {
		if b := snap.answers.get(key); b != nil {
			out := append(s.out[:0], b...)
			out[0], out[1] = req[0], req[1]
			out[2] = out[2]&^0x01 | req[2]&0x01 // RD
			out[3] = out[3]&^0x10 | req[3]&0x10 // CD
			s.out = out
			return out
		}
	}
	m := new(dns.Msg)
	if err := m.Unpack(req); err != nil || m.Response {
		return nil
	}
	resp := a.answer(snap.zone, m)
	resp.Truncate(udpSize(m))
	out, err := resp.PackBuffer(s.out[:cap(s.out)])
	if err != nil {
		return nil
	}
	s.out = out
	if plain {
		snap.answers.put(key, bytes.Clone(out))
	}
	return out
}
