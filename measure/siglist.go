package measure

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sync"
)

// SignatureList is an EFI_SIGNATURE_LIST (UEFI 2.10, section 32.4.1): the
// signatures of one type, each with its owner. Byte fields alias the event
// data.
type SignatureList struct {
	Type       GUID // EFI_CERT_X509_GUID, EFI_CERT_SHA256_GUID, ...
	Header     []byte
	Signatures []SignatureData
}

// SignatureData is one EFI_SIGNATURE_DATA: the owner's GUID and the
// signature itself (a DER certificate, or a hash).
type SignatureData struct {
	Owner GUID
	Data  []byte
}

// MaxSignatures bounds the number of signatures [ParseSignatureLists]
// accepts, so that a size field cannot make it allocate without limit.
const MaxSignatures = 1 << 16

// ParseSignatureLists decodes the EFI_SIGNATURE_LISTs of a signature
// database variable (PK, KEK, db, dbx, dbt, dbr, MokList, ...). An empty
// input is an empty database. The result aliases b.
func ParseSignatureLists(b []byte) ([]SignatureList, error) {
	var out []SignatureList
	total := 0
	for off := 0; off < len(b); {
		rest := b[off:]
		if len(rest) < 28 {
			return nil, fmt.Errorf("measure: signature list at %d: %d bytes, the header needs 28", off, len(rest))
		}
		listSize := binary.LittleEndian.Uint32(rest[16:])
		hdrSize := binary.LittleEndian.Uint32(rest[20:])
		sigSize := binary.LittleEndian.Uint32(rest[24:])
		if listSize < 28 || uint64(listSize) > uint64(len(rest)) {
			return nil, fmt.Errorf("measure: signature list at %d: size %d, %d bytes remain", off, listSize, len(rest))
		}
		body := uint64(listSize) - 28
		if uint64(hdrSize) > body {
			return nil, fmt.Errorf("measure: signature list at %d: header size %d exceeds the list", off, hdrSize)
		}
		body -= uint64(hdrSize)
		if sigSize < 16 || body%uint64(sigSize) != 0 {
			return nil, fmt.Errorf("measure: signature list at %d: %d bytes of signatures of size %d", off, body, sigSize)
		}
		n := int(body / uint64(sigSize))
		total += n
		if total > MaxSignatures {
			return nil, fmt.Errorf("measure: signature lists hold more than %d signatures", MaxSignatures)
		}
		l := SignatureList{Header: rest[28 : 28+hdrSize], Signatures: make([]SignatureData, n)}
		copy(l.Type[:], rest)
		if size, ok := fixedSignatureSize[l.Type]; ok && int(sigSize) != 16+size {
			return nil, fmt.Errorf("measure: signature list at %d: %s signatures of %d bytes, want %d", off, certTypeNames[l.Type], sigSize-16, size)
		}
		p := 28 + int(hdrSize)
		for i := range n {
			s := rest[p : p+int(sigSize) : p+int(sigSize)]
			copy(l.Signatures[i].Owner[:], s)
			l.Signatures[i].Data = s[16:]
			p += int(sigSize)
		}
		out = append(out, l)
		off += int(listSize)
	}
	return out, nil
}

var fixedSignatureSize = map[GUID]int{
	CertSHA256GUID:     32,
	CertSHA1GUID:       20,
	CertSHA224GUID:     28,
	CertSHA384GUID:     48,
	CertSHA512GUID:     64,
	CertRSA2048GUID:    256,
	CertX509SHA256GUID: 32 + 16,
	CertX509SHA384GUID: 48 + 16,
	CertX509SHA512GUID: 64 + 16,
}

// Certificate is an X.509 certificate of a signature database or an
// authority event, kept as DER. It is parsed only when [Certificate.Parse]
// is called, and the outcome, error included, is kept: firmware databases
// hold certificates that Go's crypto/x509 refuses (a negative serial
// number, for one), and their DER and digest are facts all the same.
//
// A Certificate is safe for concurrent use.
type Certificate struct {
	Owner GUID
	DER   []byte // aliases the log

	once sync.Once
	cert *x509.Certificate
	err  error
}

// Parse parses the certificate once and returns the outcome of that parse.
func (c *Certificate) Parse() (*x509.Certificate, error) {
	c.once.Do(func() {
		c.cert, c.err = x509.ParseCertificate(c.DER)
		if c.err != nil {
			c.err = fmt.Errorf("measure: certificate: %w", c.err)
		}
	})
	return c.cert, c.err
}

// SHA256 returns the SHA-256 digest of the DER, the certificate's usual
// fingerprint.
func (c *Certificate) SHA256() [32]byte { return sha256.Sum256(c.DER) }

// MarshalJSON encodes the owner, the fingerprint and, after a parse, the
// subject, issuer, serial number and validity, or the parse error.
func (c *Certificate) MarshalJSON() ([]byte, error) {
	type out struct {
		Owner      GUID   `json:"owner"`
		SHA256     Hex    `json:"sha256"`
		Subject    string `json:"subject,omitempty"`
		Issuer     string `json:"issuer,omitempty"`
		Serial     string `json:"serial,omitempty"`
		NotAfter   string `json:"not_after,omitempty"`
		ParseError string `json:"parse_error,omitempty"`
	}
	fp := c.SHA256()
	o := out{Owner: c.Owner, SHA256: fp[:]}
	if x, err := c.Parse(); err != nil {
		o.ParseError = err.Error()
	} else {
		o.Subject = x.Subject.String()
		o.Issuer = x.Issuer.String()
		o.Serial = x.SerialNumber.Text(16)
		o.NotAfter = x.NotAfter.UTC().Format("2006-01-02T15:04:05Z")
	}
	return json.Marshal(o)
}

// SignatureHash is a hash entry of a signature database: an image digest
// (EFI_CERT_SHA256_GUID and kin) or a certificate TBS digest.
type SignatureHash struct {
	Type  string `json:"type"` // "sha256", "x509-sha256", ...
	Owner GUID   `json:"owner"`
	Hash  Hex    `json:"hash"`
}
