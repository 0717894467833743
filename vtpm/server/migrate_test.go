package server

import (
	"bytes"
	"context"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/shieldvm/shieldvm/vtpm"
)

var testMigrationKey = [32]byte{1, 2, 3, 4, 5, 6, 7, 8}

// migrationSource is a served TPM after some use: PCR 16 extended, an NV
// index written. It returns the control client, the data channel and the
// PCR value.
func migrationSource(t *testing.T, vmid string) (*ctrlClient, transport.TPM, []byte) {
	t.Helper()
	key := testMigrationKey
	s := serveSwtpm(t, New(newTPM(t, vmid), &Config{VMID: vmid, MigrationKey: &key}), false)
	c := dialCtrl(t, s)
	tpm := rawTPM{c.setDataFD()}
	c.boot(tpm)
	extend16(t, tpm, 0x42)
	defineNV(t, tpm, []byte("migrated"))
	return c, tpm, pcr16(t, tpm)
}

// migrate does what QEMU does on both sides of a migration: the source
// reads the three blobs, the destination (started with -incoming, so
// never initialized) stops, sets the blobs and initializes with
// PTM_INIT_FLAG_DELETE_VOLATILE. It returns the result of the first
// SET_STATEBLOB that failed, or of CMD_INIT.
func migrate(t *testing.T, src *ctrlClient, dst *ctrlClient, tamper func([]byte)) uint32 {
	t.Helper()
	if res := dst.res(cmdStop, nil); res != 0 {
		t.Fatal(res)
	}
	for _, typ := range []uint32{blobPermanent, blobVolatile, blobSaveState} {
		// QEMU asks for the blobs decrypted; they come encrypted anyway.
		res, flags, blob := src.getBlob(typ, 1)
		if res != 0 {
			t.Fatalf("GET_STATEBLOB %d: %d", typ, res)
		}
		if flags != stateFlagEncrypted {
			t.Fatalf("GET_STATEBLOB %d: flags %d, want PTM_STATE_FLAG_ENCRYPTED", typ, flags)
		}
		if len(blob) == 0 {
			continue // QEMU does not send empty blobs
		}
		if tamper != nil {
			tamper(blob)
		}
		if res := dst.setBlob(typ, flags, blob); res != 0 {
			return res
		}
	}
	return dst.res(cmdInit, be32(1))
}

func TestMigration(t *testing.T) {
	src, srcTPM, pcr := migrationSource(t, "vm1")
	key := testMigrationKey
	d := serveSwtpm(t, New(newTPM(t, "vm1"), &Config{VMID: "vm1", MigrationKey: &key}), false)
	dst := dialCtrl(t, d)
	dstTPM := rawTPM{dst.setDataFD()}
	if res := migrate(t, src, dst, nil); res != 0 {
		t.Fatalf("migration: %d", res)
	}
	// The destination runs on without TPM2_Startup, with the PCRs and NV
	// of the source.
	if got := pcr16(t, dstTPM); !bytes.Equal(got, pcr) {
		t.Fatalf("PCR 16 after migration: %x, want %x", got, pcr)
	}
	if got, err := readNV(t, dstTPM, 8); err != nil || string(got) != "migrated" {
		t.Fatalf("NV after migration: %q, %v", got, err)
	}
	// And so does the source, until QEMU stops it.
	extend16(t, srcTPM, 1)
}

func TestStateBlobIsNeverInClear(t *testing.T) {
	src, _, _ := migrationSource(t, "vm1")
	_, _, blob := src.getBlob(blobPermanent, 1) // PTM_STATE_FLAG_DECRYPTED asked
	if bytes.Contains(blob, []byte("migrated")) {
		t.Fatal("the NV contents appear in clear in the migration blob")
	}
	if len(blob) < 100 {
		t.Fatalf("permanent blob of %d bytes", len(blob))
	}
}

func TestMigrationBlobOneByteChangedRefused(t *testing.T) {
	for _, pos := range []int{0, 20, -1} {
		src, _, _ := migrationSource(t, "vm1")
		key := testMigrationKey
		d := serveSwtpm(t, New(newTPM(t, "vm1"), &Config{VMID: "vm1", MigrationKey: &key}), false)
		dst := dialCtrl(t, d)
		dstTPM := rawTPM{dst.setDataFD()}
		res := migrate(t, src, dst, func(b []byte) {
			i := pos
			if i < 0 {
				i = len(b) + i
			}
			b[i] ^= 0x01
		})
		if res == 0 {
			t.Fatalf("a blob changed at byte %d was accepted", pos)
		}
		// QEMU fails the migration here; if anyone inits the TPM anyway,
		// it is the destination's own TPM, reset, not the tampered one.
		dst.res(cmdInit, be32(0))
		if _, err := (tpm2.Startup{StartupType: tpm2.TPMSUClear}).Execute(dstTPM); err != nil {
			t.Fatalf("the destination did not reset: %v", err)
		}
		if _, err := (tpm2.NVReadPublic{NVIndex: tpm2.TPMHandle(testNVIndex)}).Execute(dstTPM); err == nil {
			t.Fatal("the tampered state was installed")
		}
	}
}

func TestStateBlobFromAnotherVMRefused(t *testing.T) {
	src, _, _ := migrationSource(t, "vm-other")
	key := testMigrationKey
	d := serveSwtpm(t, New(newTPM(t, "vm1"), &Config{VMID: "vm1", MigrationKey: &key}), false)
	dst := dialCtrl(t, d)
	if res := migrate(t, src, dst, nil); res != ptmBadParameter {
		t.Fatalf("a blob of another VM: result %d, want TPM_BAD_PARAMETER", res)
	}
}

func TestMigrationBlobUnderAnotherKeyIsRefused(t *testing.T) {
	src, _, _ := migrationSource(t, "vm1")
	other := testMigrationKey
	other[0] ^= 1
	d := serveSwtpm(t, New(newTPM(t, "vm1"), &Config{VMID: "vm1", MigrationKey: &other}), false)
	dst := dialCtrl(t, d)
	if res := migrate(t, src, dst, nil); res != ptmDecryptError {
		t.Fatalf("a blob under another key: result %d, want TPM_DECRYPT_ERROR", res)
	}
}

// TestSealedStateIsNotAMigrationBlob checks the domain separation: a state
// sealed for storage under the migration key itself does not install.
func TestSealedStateIsNotAMigrationBlob(t *testing.T) {
	key := testMigrationKey
	tp := newTPM(t, "vm1")
	sealed, err := tp.Seal(&key)
	if err != nil {
		t.Fatal(err)
	}
	d := serveSwtpm(t, New(newTPM(t, "vm1"), &Config{VMID: "vm1", MigrationKey: &key}), false)
	dst := dialCtrl(t, d)
	dst.res(cmdStop, nil)
	if res := dst.setBlob(blobPermanent, stateFlagEncrypted, sealed); res != ptmDecryptError {
		t.Fatalf("a storage-sealed state as a migration blob: %d", res)
	}
}

func TestMigrationRules(t *testing.T) {
	t.Run("no key", func(t *testing.T) {
		s := serveSwtpm(t, New(newTPM(t, ""), nil), false)
		c := dialCtrl(t, s)
		c.boot(rawTPM{c.setDataFD()})
		caps := c.call(cmdGetCapability, nil, 8)
		if caps[6]&(capGetStateBlob>>8|capSetStateBlob>>8) != 0 {
			t.Fatalf("state-blob capabilities advertised without a migration key: % x", caps)
		}
		if res, _, _ := c.getBlob(blobPermanent, 0); res != ptmBadOrdinal {
			t.Fatalf("GET_STATEBLOB without a key: %d", res)
		}
	})
	t.Run("set while running", func(t *testing.T) {
		src, _, _ := migrationSource(t, "vm1")
		_, _, blob := src.getBlob(blobPermanent, 0)
		if res := src.setBlob(blobPermanent, stateFlagEncrypted, blob); res != ptmBadOrdinal {
			t.Fatalf("SET_STATEBLOB on a running TPM: %d", res)
		}
		// The body was consumed: the channel is still in step.
		if res := src.res(cmdCancelTPMCmd, nil); res != 0 {
			t.Fatalf("after a refused SET_STATEBLOB: %d", res)
		}
	})
	t.Run("get while stopped", func(t *testing.T) {
		src, _, _ := migrationSource(t, "vm1")
		src.res(cmdStop, nil)
		if res, _, _ := src.getBlob(blobPermanent, 0); res != ptmBadOrdinal {
			t.Fatalf("GET_STATEBLOB on a stopped TPM: %d", res)
		}
	})
	t.Run("offset", func(t *testing.T) {
		src, _, _ := migrationSource(t, "vm1")
		_, _, whole := src.getBlob(blobPermanent, 0)
		r := src.call(cmdGetStateBlob, append(append(be32(0), be32(blobPermanent)...), be32(10)...), 16)
		n := int(r[15]) | int(r[14])<<8 | int(r[13])<<16
		if n != len(whole)-10 {
			t.Fatalf("length at offset 10: %d, want %d", n, len(whole)-10)
		}
		if rest := src.read(n); !bytes.Equal(rest, whole[10:]) {
			t.Fatal("a read at an offset returned another blob")
		}
	})
	t.Run("volatile blob refused", func(t *testing.T) {
		key := testMigrationKey
		d := serveSwtpm(t, New(newTPM(t, "vm1"), &Config{VMID: "vm1", MigrationKey: &key}), false)
		dst := dialCtrl(t, d)
		dst.res(cmdStop, nil)
		if res := dst.setBlob(blobVolatile, 0, []byte("x")); res != ptmBadParameter {
			t.Fatalf("a non-empty volatile blob: %d", res)
		}
	})
	t.Run("persisted after install", func(t *testing.T) {
		src, _, _ := migrationSource(t, "vm1")
		key := testMigrationKey
		persisted := 0
		d := serveSwtpm(t, New(newTPM(t, "vm1"), &Config{VMID: "vm1", MigrationKey: &key,
			Persist: func(_ context.Context, _ *vtpm.TPM) error { persisted++; return nil }}), false)
		dst := dialCtrl(t, d)
		if res := migrate(t, src, dst, nil); res != 0 {
			t.Fatal(res)
		}
		if persisted != 1 {
			t.Fatalf("an installed migration state was persisted %d times, want 1", persisted)
		}
	})
}
