package vtpm

import (
	"slices"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// TestCapabilityLoadedAndSavedSessions: TPM_CAP_HANDLES lists loaded
// sessions under 0x02 and saved ones under 0x03, and the TPM_PT_HR_
// properties count them apart (tpm2_getcap handles-loaded-session and
// handles-saved-session, and resource managers, rely on it).
func TestCapabilityLoadedAndSavedSessions(t *testing.T) {
	v := newTestTPM(t)
	handles := func(ht uint32) []tpm2.TPMHandle {
		rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: ht << 24, PropertyCount: 64}.Execute(v)
		if err != nil {
			t.Fatal(err)
		}
		hl, err := rsp.CapabilityData.Data.Handles()
		if err != nil {
			t.Fatal(err)
		}
		return hl.Handle
	}
	prop := func(p uint32) uint32 {
		rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapTPMProperties, Property: p, PropertyCount: 1}.Execute(v)
		if err != nil {
			t.Fatal(err)
		}
		tp, err := rsp.CapabilityData.Data.TPMProperties()
		if err != nil || len(tp.TPMProperty) == 0 || uint32(tp.TPMProperty[0].Property) != p {
			t.Fatalf("property %#x: %v", p, err)
		}
		return tp.TPMProperty[0].Value
	}
	start := func(typ tpm2.TPMSE) tpm2.TPMHandle {
		rsp, err := tpm2.StartAuthSession{TPMKey: tpm2.TPMRHNull, Bind: tpm2.TPMRHNull, NonceCaller: tpm2.TPM2BNonce{Buffer: make([]byte, 16)},
			SessionType: typ, Symmetric: tpm2.TPMTSymDef{Algorithm: tpm2.TPMAlgNull}, AuthHash: tpm2.TPMAlgSHA256}.Execute(v)
		if err != nil {
			t.Fatal(err)
		}
		return rsp.SessionHandle
	}
	hmac, pol := start(tpm2.TPMSEHMAC), start(tpm2.TPMSEPolicy)
	if _, err := (tpm2.ContextSave{SaveHandle: pol}).Execute(v); err != nil {
		t.Fatal(err)
	}
	if got := handles(0x02); !slices.Equal(got, []tpm2.TPMHandle{hmac}) {
		t.Errorf("loaded sessions %v, want [%#x]", got, hmac)
	}
	if got := handles(0x03); !slices.Equal(got, []tpm2.TPMHandle{pol}) {
		t.Errorf("saved sessions %v, want [%#x]", got, pol)
	}
	if loaded, active := prop(0x203), prop(0x205); loaded != 1 || active != 2 {
		t.Errorf("TPM_PT_HR_LOADED %d, TPM_PT_HR_ACTIVE %d; want 1 and 2", loaded, active)
	}
	if avail := prop(0x204); avail != maxSessions-1 {
		t.Errorf("TPM_PT_HR_LOADED_AVAIL %d, want %d", avail, maxSessions-1)
	}
	if got := prop(0x201); got != 0xF {
		t.Errorf("TPM_PT_STARTUP_CLEAR %#x, want 0xf", got)
	}
	mustSend(t, v, rawCommand(ccHierarchyControl, []uint32{rhOwner}, 1, nil, u32b(rhOwner), []byte{0}))
	if got := prop(0x201); got != 0xD {
		t.Errorf("TPM_PT_STARTUP_CLEAR after disabling the owner hierarchy %#x, want 0xd", got)
	}
}
