package keyprotector

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"unicode/utf8"
)

// A Template is a template disk the owner trusts, as a volume signature
// catalog entry: the digest of the disk volume and the key that signed the
// catalog for it.
type Template struct {
	// Name is informative.
	Name string
	// DiskDigest is the SHA-256 digest of the template disk volume.
	DiskDigest [32]byte
	// Signer is the SHA-256 digest of the public key (or certificate)
	// that signed the disk's volume signature catalog.
	Signer [32]byte
}

// ShieldingContents is what shielding data protects: provisioning secrets
// (an administrator password, an unattend file, certificates) and the
// template disks the owner trusts.
type ShieldingContents struct {
	Secrets   map[string][]byte
	Templates []Template
}

// CheckTemplate returns nil if a template with this disk digest and signer
// is listed, and an error wrapping [ErrTemplateNotTrusted] otherwise.
// Provisioning must refuse a template for which it fails.
func (c *ShieldingContents) CheckTemplate(diskDigest, signer [32]byte) error {
	found := 0
	for _, t := range c.Templates {
		found |= subtle.ConstantTimeCompare(t.DiskDigest[:], diskDigest[:]) & subtle.ConstantTimeCompare(t.Signer[:], signer[:])
	}
	if found == 1 {
		return nil
	}
	return fmt.Errorf("%w: disk %s", ErrTemplateNotTrusted, hex.EncodeToString(diskDigest[:8]))
}

// Destroy zeroes the secrets.
func (c *ShieldingContents) Destroy() {
	for _, v := range c.Secrets {
		clear(v)
	}
}

// Limits of shielding contents.
const (
	maxSecrets   = 256
	maxSecret    = 1 << 20
	maxTemplates = 1024
)

type templateBody struct {
	Name   string `cbor:"1,keyasint"`
	Digest []byte `cbor:"2,keyasint"`
	Signer []byte `cbor:"3,keyasint"`
}

type contentsBody struct {
	Secrets   map[string][]byte `cbor:"1,keyasint"`
	Templates []templateBody    `cbor:"2,keyasint"`
}

type shieldingBody struct {
	Version      uint64 `cbor:"1,keyasint"`
	KeyProtector []byte `cbor:"2,keyasint"`
	Nonce        []byte `cbor:"3,keyasint"`
	Ciphertext   []byte `cbor:"4,keyasint"`
}

// ShieldingData is a bundle of [ShieldingContents] encrypted to a set of
// guardians: a key protector of its own (same owner and guardians as the
// VM's, its own TK) and the contents sealed with AES-256-GCM under the key
// [TransportKey.Derive] gives for [LabelShieldingData]. It is immutable and
// safe for concurrent use.
type ShieldingData struct {
	raw  []byte
	body shieldingBody
	kp   *KeyProtector
}

func shieldingAAD(kp *KeyProtector) []byte {
	return marshal([]any{"shieldvm/v1/shielding-data", kp.id[:], kp.body.Generation})
}

// NewShieldingData encrypts c to the owner and guardians.
func NewShieldingData(ctx context.Context, owner Guardian, guardians []*Descriptor, c *ShieldingContents, cfg *Config) (*ShieldingData, error) {
	if c == nil {
		return nil, fmt.Errorf("keyprotector: no shielding contents")
	}
	body := contentsBody{Secrets: c.Secrets, Templates: []templateBody{}}
	if body.Secrets == nil {
		body.Secrets = map[string][]byte{}
	}
	for _, t := range c.Templates {
		body.Templates = append(body.Templates, templateBody{Name: t.Name, Digest: t.DiskDigest[:], Signer: t.Signer[:]})
	}
	if err := body.check(); err != nil {
		return nil, err
	}
	kp, err := New(ctx, owner, guardians, cfg)
	if err != nil {
		return nil, err
	}
	tk, err := kp.unwrap(ctx, owner)
	if err != nil {
		return nil, err
	}
	defer tk.Destroy()
	aead := shieldingAEAD(tk)
	sb := shieldingBody{Version: formatVersion, KeyProtector: kp.raw, Nonce: make([]byte, aead.NonceSize())}
	rand.Read(sb.Nonce)
	plain := marshal(body)
	sb.Ciphertext = aead.Seal(nil, sb.Nonce, plain, shieldingAAD(kp))
	clear(plain)
	raw := marshal(sb)
	if len(raw) > MaxShieldingDataSize {
		return nil, fmt.Errorf("keyprotector: shielding data larger than %d bytes", MaxShieldingDataSize)
	}
	return &ShieldingData{raw: raw, body: sb, kp: kp}, nil
}

func shieldingAEAD(tk *TransportKey) cipher.AEAD {
	k := tk.Derive(LabelShieldingData)
	defer clear(k[:])
	b, err := aes.NewCipher(k[:])
	if err != nil {
		panic("keyprotector: AES: " + err.Error())
	}
	a, err := cipher.NewGCM(b)
	if err != nil {
		panic("keyprotector: GCM: " + err.Error())
	}
	return a
}

func (b *contentsBody) check() error {
	if len(b.Secrets) > maxSecrets {
		return malformed("more than %d secrets", maxSecrets)
	}
	for _, k := range slices.Sorted(maps.Keys(b.Secrets)) {
		if k == "" || len(k) > maxName || !utf8.ValidString(k) {
			return malformed("secret name must be 1 to %d bytes of UTF-8", maxName)
		}
		if len(b.Secrets[k]) > maxSecret {
			return malformed("secret %q is larger than %d bytes", k, maxSecret)
		}
	}
	if len(b.Templates) > maxTemplates {
		return malformed("more than %d templates", maxTemplates)
	}
	for _, t := range b.Templates {
		if len(t.Name) > maxName || !utf8.ValidString(t.Name) || len(t.Digest) != 32 || len(t.Signer) != 32 {
			return malformed("template entry")
		}
	}
	return nil
}

// ParseShieldingData decodes shielding data and verifies its key protector
// (see [Parse]). The contents stay encrypted.
func ParseShieldingData(data []byte) (*ShieldingData, error) {
	if len(data) > MaxShieldingDataSize {
		return nil, malformed("shielding data is %d bytes, more than %d", len(data), MaxShieldingDataSize)
	}
	s := &ShieldingData{raw: bytes.Clone(data)}
	if err := unmarshalCanonical(data, &s.body, "shielding data"); err != nil {
		return nil, err
	}
	if s.body.Version != formatVersion {
		return nil, malformed("shielding data version %d", s.body.Version)
	}
	if len(s.body.Nonce) != 12 || len(s.body.Ciphertext) < 16 {
		return nil, malformed("shielding data nonce or ciphertext")
	}
	kp, err := Parse(s.body.KeyProtector)
	if err != nil {
		return nil, fmt.Errorf("shielding data: %w", err)
	}
	s.kp = kp
	return s, nil
}

// Marshal returns the encoded shielding data.
func (s *ShieldingData) Marshal() []byte { return bytes.Clone(s.raw) }

// KeyProtector returns the key protector of the shielding data's own TK. A
// guardian service releases it to an attested host like a VM's.
func (s *ShieldingData) KeyProtector() *KeyProtector { return s.kp }

// Decrypt decrypts the contents with the shielding data's TK (from
// [Open] of a release, or [KeyProtector.Unwrap]).
func (s *ShieldingData) Decrypt(tk *TransportKey) (*ShieldingContents, error) {
	if tk.id != s.kp.id || tk.gen != s.kp.body.Generation {
		return nil, fmt.Errorf("keyprotector: transport key is not the shielding data's")
	}
	plain, err := shieldingAEAD(tk).Open(nil, s.body.Nonce, s.body.Ciphertext, shieldingAAD(s.kp))
	if err != nil {
		return nil, fmt.Errorf("%w: shielding data does not decrypt", ErrUnwrap)
	}
	defer clear(plain)
	return parseContents(plain)
}

// parseContents decodes decrypted shielding contents.
func parseContents(plain []byte) (*ShieldingContents, error) {
	var body contentsBody
	if err := unmarshalCanonical(plain, &body, "shielding contents"); err != nil {
		return nil, err
	}
	if err := body.check(); err != nil {
		return nil, err
	}
	c := &ShieldingContents{Secrets: body.Secrets}
	for _, t := range body.Templates {
		var e Template
		e.Name = t.Name
		copy(e.DiskDigest[:], t.Digest)
		copy(e.Signer[:], t.Signer)
		c.Templates = append(c.Templates, e)
	}
	return c, nil
}

// Open unwraps the shielding data's TK as guardian g (subject to the same
// rules as [KeyProtector.Unwrap]) and decrypts the contents.
func (s *ShieldingData) Open(ctx context.Context, g Guardian, cfg *UnwrapConfig) (*ShieldingContents, error) {
	tk, err := s.kp.Unwrap(ctx, g, cfg)
	if err != nil {
		return nil, err
	}
	defer tk.Destroy()
	return s.Decrypt(tk)
}
