package measure

import (
	"bytes"
	"testing"

	"pgregory.net/rapid"
)

// TestUEFIVariableRoundTrip: any variable encoded as UEFI_VARIABLE_DATA
// decodes to the same GUID, name and data.
func TestUEFIVariableRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var g GUID
		copy(g[:], rapid.SliceOfN(rapid.Byte(), 16, 16).Draw(t, "guid"))
		name := rapid.StringMatching(`[A-Za-z0-9_]{0,24}`).Draw(t, "name")
		data := rapid.SliceOfN(rapid.Byte(), 0, 300).Draw(t, "data")
		v, err := ParseUEFIVariable(uefiVar(g, name, data))
		if err != nil {
			t.Fatal(err)
		}
		if v.GUID != g || v.Name != name || !bytes.Equal(v.Data, data) {
			t.Fatalf("round trip: %v %q %x", v.GUID, v.Name, v.Data)
		}
	})
}

// sipaTree draws a SIPA tree: leaves with random payloads, containers
// with children.
func sipaTree(t *rapid.T, depth int) []SIPAEvent {
	n := rapid.IntRange(0, 4).Draw(t, "n")
	out := make([]SIPAEvent, 0, n)
	for range n {
		if depth < 3 && rapid.Bool().Draw(t, "container") {
			kids := sipaTree(t, depth+1)
			out = append(out, SIPAEvent{Type: SIPATrustBoundary, Data: encodeSIPA(kids), Children: kids})
			continue
		}
		typ := SIPAType(rapid.Uint32().Draw(t, "type"))
		if typ.IsContainer() {
			typ = SIPABootCounter
		}
		out = append(out, SIPAEvent{Type: typ, Data: rapid.SliceOfN(rapid.Byte(), 0, 40).Draw(t, "payload")})
	}
	return out
}

// TestSIPARoundTrip: any SIPA tree encodes and decodes to itself.
func TestSIPARoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		tree := sipaTree(t, 0)
		got, err := ParseSIPA(encodeSIPA(tree))
		if err != nil {
			t.Fatal(err)
		}
		var eq func(a, b []SIPAEvent) bool
		eq = func(a, b []SIPAEvent) bool {
			if len(a) != len(b) {
				return false
			}
			for i := range a {
				if a[i].Type != b[i].Type || !bytes.Equal(a[i].Data, b[i].Data) || !eq(a[i].Children, b[i].Children) {
					return false
				}
			}
			return true
		}
		if !eq(got, tree) {
			t.Fatalf("round trip differs")
		}
	})
}
