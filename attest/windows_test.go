package attest

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/shieldvm/shieldvm/measure"
)

// goAttestationJSON is go-attestation's serialized PlatformParameters.
type goAttestationJSON struct {
	AK    struct{ Public []byte }
	Quote struct {
		Nonce     []byte
		Alg       int
		Quote     []byte
		Signature []byte
	}
	Log struct {
		PCRs []struct {
			Index     uint32
			Digest    []byte
			DigestAlg int
		}
		Raw []byte
	}
}

func loadWindows(t testing.TB) *goAttestationJSON {
	t.Helper()
	b, err := os.ReadFile("testdata/windows_gcp_shielded_vm.json")
	if err != nil {
		t.Fatal(err)
	}
	var w goAttestationJSON
	if err := json.Unmarshal(b, &w); err != nil {
		t.Fatal(err)
	}
	return &w
}

func TestWindowsQuoteVerifies(t *testing.T) {
	w := loadWindows(t)
	ak, err := ParseAKPublic(w.AK.Public)
	if err != nil {
		t.Fatal(err)
	}
	pcrs := measure.QuotedValues{measure.SHA1: {}}
	for _, p := range w.Log.PCRs {
		pcrs[measure.SHA1][p.Index] = p.Digest
	}
	vq, err := VerifyQuote(ak, Quote{Attest: w.Quote.Quote, Signature: w.Quote.Signature}, pcrs, QuoteOptions{InsecureAllowSHA1: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", vq.Selection)
}
