package server

import (
	"crypto/hkdf"
	"crypto/sha256"
	"errors"

	"github.com/shieldvm/shieldvm/vtpm"
)

// migrationInfo separates the key that migration blobs are sealed under
// from Config.MigrationKey itself, so that a state sealed under the same
// key for storage never opens as a migration blob, nor the reverse.
const migrationInfo = "shieldvm/v1/vtpm-server/migration-blob"

func deriveMigrationKey(k *[32]byte) [32]byte {
	var out [32]byte
	b, err := hkdf.Key(sha256.New, k[:], nil, migrationInfo, len(out))
	if err != nil {
		panic("server: HKDF: " + err.Error()) // unreachable: 32 bytes is always allowed
	}
	copy(out[:], b)
	clear(b)
	return out
}

// exportState seals the served TPM for a migration. in.mu is held.
func (in *Instance) exportStateLocked() ([]byte, error) {
	return in.tpm.Seal(in.cfg.MigrationKey)
}

// importState opens a migration blob. It refuses a blob changed in any
// byte, sealed under another key (vtpm.ErrBadState) or sealed for another
// VM (vtpm.ErrWrongVM).
func (in *Instance) importState(blob []byte) (*vtpm.TPM, error) {
	if len(blob) > MaxStateBlobSize {
		return nil, vtpm.ErrBadState
	}
	t, err := vtpm.Open(blob, in.cfg.MigrationKey, vtpm.OpenConfig{VMID: in.cfg.VMID})
	if err != nil {
		if errors.Is(err, vtpm.ErrWrongVM) {
			in.log.Warn("server: refused a migration blob sealed for another VM")
		} else {
			in.log.Warn("server: refused a migration blob", "err", err)
		}
		return nil, err
	}
	return t, nil
}
