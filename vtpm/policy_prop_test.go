package vtpm

import (
	"bytes"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"pgregory.net/rapid"
)

// TestPolicyDigestProperty generates random chains of policy commands and
// checks that the digest our trial session computes equals the one go-tpm's
// PolicyCalculator computes offline, an implementation independent of
// ours.
func TestPolicyDigestProperty(t *testing.T) {
	v := newTestTPM(t)
	ccs := []tpm2.TPMCC{tpm2.TPMCCUnseal, tpm2.TPMCCSign, tpm2.TPMCCNVRead, tpm2.TPMCCCertify, tpm2.TPMCCDuplicate, tpm2.TPMCCPCRExtend}
	rapid.Check(t, func(rt *rapid.T) {
		s := startPolicy(rt, v, true)
		defer flush(v, s.handle)
		var want []tpm2.PolicyCommand
		n := rapid.IntRange(1, 8).Draw(rt, "n")
		for i := 0; i < n; i++ {
			var cmd tpm2.PolicyCommand
			var err error
			switch rapid.IntRange(0, 8).Draw(rt, "command") {
			case 0:
				pcrs := rapid.SliceOfNDistinct(rapid.IntRange(0, 23), 1, 8, rapid.ID[int]).Draw(rt, "pcrs")
				sel := make([]uint, len(pcrs))
				for j, p := range pcrs {
					sel[j] = uint(p)
				}
				c := tpm2.PolicyPCR{PolicySession: s.handle, Pcrs: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{
					{Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(sel...)}}},
					PcrDigest: tpm2.TPM2BDigest{Buffer: rapid.SliceOfN(rapid.Byte(), 32, 32).Draw(rt, "pcrDigest")}}
				_, err = c.Execute(v)
				cmd = c
			case 1:
				c := tpm2.PolicyCommandCode{PolicySession: s.handle, Code: ccs[rapid.IntRange(0, len(ccs)-1).Draw(rt, "cc")]}
				// A second, different command code is refused.
				if _, err = c.Execute(v); err != nil {
					continue
				}
				cmd = c
			case 2:
				c := tpm2.PolicyAuthValue{PolicySession: s.handle}
				_, err = c.Execute(v)
				cmd = c
			case 3:
				// PolicyPassword extends like PolicyAuthValue.
				if rc := policyRaw(v, ccPolicyPassword, []uint32{uint32(s.handle)}); rc != rcSuccess {
					rt.Fatalf("PolicyPassword: rc %#x", rc)
				}
				cmd = tpm2.PolicyAuthValue{}
			case 4:
				c := tpm2.PolicyCPHash{PolicySession: s.handle, CPHashA: tpm2.TPM2BDigest{Buffer: rapid.SliceOfN(rapid.Byte(), 32, 32).Draw(rt, "cpHash")}}
				if _, err = c.Execute(v); err != nil {
					continue // a second, different cpHash
				}
				cmd = c
			case 5:
				h := []tpm2.TPMHandle{tpm2.TPMRHOwner, tpm2.TPMRHEndorsement, tpm2.TPMRHPlatform}[rapid.IntRange(0, 2).Draw(rt, "hierarchy")]
				c := tpm2.PolicySecret{AuthHandle: tpm2.AuthHandle{Handle: h, Name: tpm2.HandleName(h), Auth: tpm2.PasswordAuth(nil)},
					PolicySession: s.handle, PolicyRef: tpm2.TPM2BNonce{Buffer: rapid.SliceOfN(rapid.Byte(), 0, 32).Draw(rt, "ref")}}
				_, err = c.Execute(v)
				cmd = c
			case 6:
				k := rapid.IntRange(2, 8).Draw(rt, "branches")
				var list tpm2.TPMLDigest
				for j := 0; j < k; j++ {
					list.Digests = append(list.Digests, tpm2.TPM2BDigest{Buffer: rapid.SliceOfN(rapid.Byte(), 32, 32).Draw(rt, "branch")})
				}
				c := tpm2.PolicyOr{PolicySession: s.handle, PHashList: list}
				_, err = c.Execute(v)
				cmd = c
			case 7:
				name := append([]byte{0, 0x0b}, rapid.SliceOfN(rapid.Byte(), 32, 32).Draw(rt, "keyName")...)
				c := tpm2.PolicyAuthorize{PolicySession: s.handle, PolicyRef: tpm2.TPM2BDigest{Buffer: rapid.SliceOfN(rapid.Byte(), 0, 32).Draw(rt, "ref")},
					KeySign: tpm2.TPM2BName{Buffer: name}, CheckTicket: tpm2.TPMTTKVerified{Tag: tpm2.TPMSTVerified, Hierarchy: tpm2.TPMRHNull}}
				_, err = c.Execute(v)
				// PolicyAuthorize starts the digest again.
				want = nil
				cmd = c
			case 8:
				c := tpm2.PolicyNVWritten{PolicySession: s.handle, WrittenSet: tpm2.TPMIYesNo(rapid.Bool().Draw(rt, "written"))}
				if _, err = c.Execute(v); err != nil {
					continue // the opposite of an earlier PolicyNvWritten
				}
				cmd = c
			}
			if err != nil {
				rt.Fatalf("%T: %v", cmd, err)
			}
			if _, ok := cmd.(tpm2.PolicyOr); ok {
				want = nil
			}
			want = append(want, cmd)
		}
		got := policyDigest(rt, v, s)
		pc, err := tpm2.NewPolicyCalculator(tpm2.TPMAlgSHA256)
		if err != nil {
			rt.Fatal(err)
		}
		for _, c := range want {
			if err := c.Update(pc); err != nil {
				rt.Fatalf("%T.Update: %v", c, err)
			}
		}
		if w := pc.Hash().Digest; !bytes.Equal(got, w) {
			rt.Fatalf("trial digest %x, go-tpm computes %x", got, w)
		}
	})
}
