package measure

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// corpusEventData returns the data of every event of the real logs whose
// type is in types (all types when empty).
func corpusEventData(f testing.TB, types ...EventType) [][]byte {
	f.Helper()
	var out [][]byte
	for _, c := range factsCorpus(f) {
		for _, ev := range c.log.UnverifiedEvents() {
			for _, t := range types {
				if ev.Type == t {
					out = append(out, ev.Data)
					break
				}
			}
		}
	}
	if len(out) == 0 {
		f.Fatal("no seeds")
	}
	return out
}

// FuzzUEFIVariable: any input either fails to parse or round-trips, and
// its accessors never panic.
func FuzzUEFIVariable(f *testing.F) {
	for _, d := range corpusEventData(f, EV_EFI_VARIABLE_DRIVER_CONFIG, EV_EFI_VARIABLE_BOOT, EV_EFI_VARIABLE_AUTHORITY) {
		f.Add(d)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := ParseUEFIVariable(data)
		if err != nil {
			return
		}
		_ = v.String()
		_, _ = v.Bool()
		_, _ = v.BootOrder()
		if lo, err := v.LoadOption(); err == nil {
			_ = lo.FilePath.String()
		}
		if got := uefiVar(v.GUID, v.Name, v.Data); !bytes.Equal(got, data) && isASCIIName(data) {
			t.Fatalf("round trip: %x != %x", got, data)
		}
	})
}

// isASCIIName reports whether the variable name in data is ASCII without
// NULs, the only names uefiVar re-encodes byte for byte.
func isASCIIName(data []byte) bool {
	n := binary.LittleEndian.Uint64(data[16:])
	name := data[32 : 32+2*n]
	for i := 0; i < len(name); i += 2 {
		if name[i] == 0 || name[i] >= 0x80 || name[i+1] != 0 {
			return false
		}
	}
	return true
}

// FuzzSignatureList: any input either fails to parse or the lists cover
// it exactly; no panic, no allocation beyond the input's size.
func FuzzSignatureList(f *testing.F) {
	for _, d := range corpusEventData(f, EV_EFI_VARIABLE_DRIVER_CONFIG) {
		if v, err := ParseUEFIVariable(d); err == nil && v.IsSignatureDatabase() {
			f.Add(v.Data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		lists, err := ParseSignatureLists(data)
		if err != nil {
			return
		}
		total := 0
		for _, l := range lists {
			total += 28 + len(l.Header)
			for _, s := range l.Signatures {
				total += 16 + len(s.Data)
				if l.Type == CertX509GUID {
					c := &Certificate{Owner: s.Owner, DER: s.Data}
					_, _ = c.Parse()
					if _, err := json.Marshal(c); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		if total != len(data) {
			t.Fatalf("lists cover %d of %d bytes", total, len(data))
		}
	})
}

// FuzzDevicePath: parsing and printing never panic, and the nodes re-encode
// to the input.
func FuzzDevicePath(f *testing.F) {
	for _, d := range corpusEventData(f, EV_EFI_BOOT_SERVICES_APPLICATION, EV_EFI_BOOT_SERVICES_DRIVER, EV_EFI_VARIABLE_BOOT) {
		if im, err := ParseImageLoad(d); err == nil {
			f.Add([]byte(im.DevicePath))
		} else if v, err := ParseUEFIVariable(d); err == nil {
			if lo, err := v.LoadOption(); err == nil {
				f.Add([]byte(lo.FilePath))
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p := DevicePath(data)
		_ = p.String()
		_ = p.FilePath()
		nodes, err := p.Nodes()
		if err != nil {
			return
		}
		var enc []byte
		for _, n := range nodes {
			enc = append(enc, n.Type, n.SubType)
			enc = binary.LittleEndian.AppendUint16(enc, uint16(4+len(n.Data)))
			enc = append(enc, n.Data...)
		}
		if len(data) > 0 {
			enc = append(enc, DevicePathEnd, 0xFF, 4, 0)
		}
		if !bytes.Equal(enc, data) {
			t.Fatalf("re-encoding %x != %x", enc, data)
		}
	})
}

// FuzzSIPA: the Windows SIPA tree decoder re-encodes to its input, and
// describing and summarizing it never panics.
func FuzzSIPA(f *testing.F) {
	for _, d := range corpusEventData(f, EV_EVENT_TAG) {
		f.Add(d)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkCountSIPAAgrees(t, data)
		evs, err := ParseSIPA(data)
		if err != nil {
			return
		}
		_ = (&SIPAEvents{Events: evs}).String()
		if enc := encodeSIPA(evs); !bytes.Equal(enc, data) {
			t.Fatalf("re-encoding %x != %x", enc, data)
		}
		// Summarize it as the data of a verified Windows event.
		raw := buildSHA1Log([]legacyEvent{{12, EV_EVENT_TAG, data}, {12, EV_SEPARATOR, []byte("WBCL")}})
		l, err := Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		v, err := l.Verify(quotedFromReplay(t, l), VerifyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Facts(); err != nil {
			t.Fatal(err)
		}
		checkFastPathsAgree(t, v)
	})
}

func encodeSIPA(evs []SIPAEvent) []byte {
	var b []byte
	for _, e := range evs {
		b = binary.LittleEndian.AppendUint32(b, uint32(e.Type))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(e.Data)))
		b = append(b, e.Data...)
	}
	return b
}

// FuzzDecodeEvent: decoding any data as any event type never panics.
func FuzzDecodeEvent(f *testing.F) {
	for _, c := range factsCorpus(f) {
		for _, ev := range c.log.UnverifiedEvents() {
			f.Add(uint32(ev.Type), ev.Register, ev.Data)
		}
	}
	f.Fuzz(func(t *testing.T, typ, reg uint32, data []byte) {
		ev := &Event{Type: EventType(typ), Register: reg, Data: data}
		d := decodeEvent(ev, PCR, 0)
		if d.Data == nil {
			t.Fatal("nil Decoded")
		}
		_ = d.Data.String()
		_ = DescribeUnverified(ev)
		// With a digest to check, the arena (remembered digests, carved
		// strings) decodes and binds the data as plain decoding does, on
		// the first call and on a repeat.
		// The digest is of the data, then, for a variable, of its
		// VariableData only, then of the data again, so that the arena's
		// guess of what the firmware hashed is both right and wrong.
		hashed := [][]byte{data}
		if v, ok := d.Data.(*UEFIVariable); ok {
			hashed = append(hashed, v.Data, data)
		}
		var a decodeArena
		for _, h := range hashed {
			sum := sha256.Sum256(h)
			ev.digests = []Digest{{Alg: SHA256, Value: sum[:]}}
			want := decodeEventTree(ev, PCR, SHA256, false, nil)
			for range 2 {
				got := decodeEventTree(ev, PCR, SHA256, false, &a)
				if got.Binding != want.Binding || got.Data.String() != want.Data.String() || (got.Err == nil) != (want.Err == nil) {
					t.Fatalf("arena decoding: %v %q %v, plain: %v %q %v", got.Binding, got.Data, got.Err, want.Binding, want.Data, want.Err)
				}
			}
		}
	})
}

// FuzzFacts: facts from any log that parses and verifies never panic.
func FuzzFacts(f *testing.F) {
	files, _ := filepath.Glob("testdata/eventlogs/*.bin")
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	j, err := os.ReadFile("testdata/quotes/windows_gcp_shielded_vm.json")
	if err != nil {
		f.Fatal(err)
	}
	var wq windowsQuote
	if err := json.Unmarshal(j, &wq); err != nil {
		f.Fatal(err)
	}
	f.Add(wq.Log.Raw)
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := Parse(data)
		if err != nil {
			return
		}
		regs, err := l.Replay()
		if err != nil {
			return
		}
		q := QuotedValues{}
		for _, b := range regs.Banks {
			q[b.Alg] = map[uint32][]byte{}
			for _, r := range b.ExtendedRegisters() {
				q[b.Alg][uint32(r)] = b.Value(r)
			}
		}
		v, err := l.Verify(q, VerifyOptions{})
		if err != nil {
			return
		}
		fs, err := v.Facts()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := json.Marshal(fs); err != nil {
			t.Fatal(err)
		}
		checkFastPathsAgree(t, v)
	})
}
