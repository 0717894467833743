package server

import (
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// TestReusedCommandBufferCannotRewriteAuthPolicy stops a guest from
// rewriting a stored object with its next commands: the transports read
// each command into the same buffer, so a TPM that kept a slice of the
// CreatePrimary command as the object's authPolicy would see it replaced
// by the bytes of whatever the guest sends next, a policy the guest
// chooses.
func TestReusedCommandBufferCannotRewriteAuthPolicy(t *testing.T) {
	for _, transport := range []string{"mssim", "swtpm"} {
		t.Run(transport, func(t *testing.T) {
			var tpm interface{ Send([]byte) ([]byte, error) }
			if transport == "mssim" {
				c := dialMSSIM(t, serveMSSIM(t, New(newTPM(t, ""), nil)))
				c.powerOn(t)
				tpm = c
				if _, err := (tpm2.Startup{StartupType: tpm2.TPMSUClear}).Execute(c); err != nil {
					t.Fatal(err)
				}
			} else {
				s := serveSwtpm(t, New(newTPM(t, ""), nil), false)
				c := dialCtrl(t, s)
				r := rawTPM{c.setDataFD()}
				c.boot(r)
				tpm = r
			}
			ek, err := (tpm2.CreatePrimary{
				PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
				InPublic:      tpm2.New2B(tpm2.RSAEKTemplate),
			}).Execute(tpm)
			if err != nil {
				t.Fatal(err)
			}
			// Commands as long as CreatePrimary, all zeros after the
			// header: a stored authPolicy that aliased the buffer would
			// become the digest of an empty policy.
			junk := append([]byte{0x80, 0x01, 0, 0, 0x01, 0x00, 0, 0, 0x01, 0x7B}, make([]byte, 0x100-10)...)
			for i := 0; i < 3; i++ {
				tpm.Send(junk)
			}
			create := func(policySecret bool) error {
				sess, cleanup, err := tpm2.PolicySession(tpm, tpm2.TPMAlgSHA256, 16)
				if err != nil {
					t.Fatal(err)
				}
				defer cleanup()
				if policySecret {
					if _, err := (tpm2.PolicySecret{
						AuthHandle:    tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
						PolicySession: sess.Handle(),
					}).Execute(tpm); err != nil {
						t.Fatal(err)
					}
				}
				_, err = (tpm2.Create{
					ParentHandle: tpm2.AuthHandle{Handle: ek.ObjectHandle, Name: ek.Name, Auth: sess},
					InPublic: tpm2.New2B(tpm2.TPMTPublic{Type: tpm2.TPMAlgKeyedHash, NameAlg: tpm2.TPMAlgSHA256,
						ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, UserWithAuth: true}}),
				}).Execute(tpm)
				return err
			}
			if err := create(false); err == nil {
				t.Fatal("an empty policy session authorized the EK after the guest's later commands")
			}
			if err := create(true); err != nil {
				t.Fatalf("the EK's own policy (PolicySecret) no longer authorizes it: %v", err)
			}
		})
	}
}
