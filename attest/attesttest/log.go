// Package attesttest holds fakes for tests of code that uses package
// attest: an event-log builder that writes real crypto-agile TCG logs and
// extends a TPM (a simulator or a vTPM) to match them.
//
// Nothing here is for production: the logs it writes describe whatever the
// test says was booted.
package attesttest

import (
	"encoding/binary"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/shieldvm/shieldvm/measure"
)

// Event is one event of a [LogBuilder].
type Event struct {
	PCR     uint32
	Type    measure.EventType
	Data    []byte
	Digests map[measure.HashAlg][]byte
}

// LogBuilder writes a crypto-agile event log (TCG PC Client Platform
// Firmware Profile, section 10.2: a Spec ID Event03 in the SHA-1 format,
// then TCG_PCR_EVENT2 events) and keeps the register values its replay
// gives. The zero value is not usable; use [NewLogBuilder].
type LogBuilder struct {
	algs   []measure.HashAlg
	events []Event
	pcrs   measure.QuotedValues
}

// NewLogBuilder returns a builder for a log with the given banks (SHA-256
// if none).
func NewLogBuilder(algs ...measure.HashAlg) *LogBuilder {
	if len(algs) == 0 {
		algs = []measure.HashAlg{measure.SHA256}
	}
	b := &LogBuilder{algs: algs, pcrs: measure.QuotedValues{}}
	for _, a := range algs {
		b.pcrs[a] = map[uint32][]byte{}
		for r := range uint32(24) {
			b.pcrs[a][r] = make([]byte, a.Size())
		}
	}
	return b
}

// Add appends an event whose digests are the hashes of data.
func (b *LogBuilder) Add(pcr uint32, typ measure.EventType, data []byte) {
	d := map[measure.HashAlg][]byte{}
	for _, a := range b.algs {
		s, _ := a.Sum(data)
		d[a] = s[:a.Size()]
	}
	b.AddDigests(pcr, typ, data, d)
}

// AddDigests appends an event with the given digests (for events whose
// digest is not the hash of their data, such as a boot application's
// Authenticode hash).
func (b *LogBuilder) AddDigests(pcr uint32, typ measure.EventType, data []byte, digests map[measure.HashAlg][]byte) {
	b.events = append(b.events, Event{PCR: pcr, Type: typ, Data: data, Digests: digests})
	if typ == measure.EV_NO_ACTION {
		return
	}
	for _, a := range b.algs {
		reg := b.pcrs[a][pcr]
		s, _ := a.Sum(append(append([]byte{}, reg...), digests[a]...))
		b.pcrs[a][pcr] = s[:a.Size()]
	}
}

// Events returns the events added so far.
func (b *LogBuilder) Events() []Event { return b.events }

// Values returns the register values a TPM extended with every event
// holds, for every register 0-23 (initial values for those not extended).
func (b *LogBuilder) Values() measure.QuotedValues {
	out := measure.QuotedValues{}
	for a, regs := range b.pcrs {
		out[a] = map[uint32][]byte{}
		for r, v := range regs {
			out[a][r] = append([]byte(nil), v...)
		}
	}
	return out
}

// Bytes encodes the log.
func (b *LogBuilder) Bytes() []byte {
	le := binary.LittleEndian
	// Spec ID Event03 (section 10.4.5.1).
	var spec []byte
	spec = append(spec, "Spec ID Event03\x00"...)
	spec = le.AppendUint32(spec, 0) // platformClass
	spec = append(spec, 0, 2, 0, 2) // specVersionMinor, Major, errata, uintnSize
	spec = le.AppendUint32(spec, uint32(len(b.algs)))
	for _, a := range b.algs {
		spec = le.AppendUint16(spec, uint16(a))
		spec = le.AppendUint16(spec, uint16(a.Size()))
	}
	spec = append(spec, 0) // vendorInfoSize
	var out []byte
	out = le.AppendUint32(out, 0)
	out = le.AppendUint32(out, uint32(measure.EV_NO_ACTION))
	out = append(out, make([]byte, 20)...)
	out = le.AppendUint32(out, uint32(len(spec)))
	out = append(out, spec...)
	for _, e := range b.events {
		out = le.AppendUint32(out, e.PCR)
		out = le.AppendUint32(out, uint32(e.Type))
		out = le.AppendUint32(out, uint32(len(b.algs)))
		for _, a := range b.algs {
			out = le.AppendUint16(out, uint16(a))
			d := e.Digests[a]
			if len(d) != a.Size() {
				d = make([]byte, a.Size())
			}
			out = append(out, d...)
		}
		out = le.AppendUint32(out, uint32(len(e.Data)))
		out = append(out, e.Data...)
	}
	return out
}

// Extend extends every event of the log into the TPM's PCRs, as firmware
// would have during boot.
func (b *LogBuilder) Extend(tpm transport.TPM) error {
	for i, e := range b.events {
		if e.Type == measure.EV_NO_ACTION {
			continue
		}
		var ds tpm2.TPMLDigestValues
		for _, a := range b.algs {
			ds.Digests = append(ds.Digests, tpm2.TPMTHA{HashAlg: tpm2.TPMIAlgHash(a), Digest: e.Digests[a]})
		}
		_, err := tpm2.PCRExtend{
			PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(e.PCR), Auth: tpm2.PasswordAuth(nil)},
			Digests:   ds,
		}.Execute(tpm)
		if err != nil {
			return fmt.Errorf("attesttest: extending event %d into PCR %d: %w", i, e.PCR, err)
		}
	}
	return nil
}

// SIPA encodes one Windows measured-boot (SIPA) event as wbcl.h lays it
// out: the type, the payload's size (both little-endian uint32) and the
// payload. A container's payload is its children's encodings one after
// the other. Windows logs trees of them as the data of EV_EVENT_TAG
// events in PCRs 12-14.
func SIPA(typ measure.SIPAType, payload ...[]byte) []byte {
	n := 0
	for _, p := range payload {
		n += len(p)
	}
	out := make([]byte, 8, 8+n)
	binary.LittleEndian.PutUint32(out, uint32(typ))
	binary.LittleEndian.PutUint32(out[4:], uint32(n))
	for _, p := range payload {
		out = append(out, p...)
	}
	return out
}

// SIPAUint encodes a SIPA event whose payload is a little-endian integer
// of size bytes (1, 2, 4 or 8), as Windows logs booleans (one byte) and
// numbers.
func SIPAUint(typ measure.SIPAType, v uint64, size int) []byte {
	p := binary.LittleEndian.AppendUint64(nil, v)
	return SIPA(typ, p[:size])
}
