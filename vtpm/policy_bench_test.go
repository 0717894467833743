package vtpm

import (
	"bytes"
	"encoding/binary"
	"runtime"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// policyUnsealer runs the tpm2-tools flow of an unseal through a PolicyPCR
// session on one TPM, with pre-marshalled commands:
// StartAuthSession(policy), PolicyPCR(SHA-256 PCRs 7 and 16), Unseal with
// the session (not continued, so the TPM flushes it).
type policyUnsealer struct {
	tp     transport.TPM
	start  []byte
	pcr    []byte
	unseal []byte
	secret []byte
}

func newPolicyUnsealer(b *testing.B, tp transport.TPM) *policyUnsealer {
	policy := pcrPolicy(b, tp)
	f := sealWithPolicy(b, tp, policy, nil, false)
	u := &policyUnsealer{tp: tp, secret: f.secret}
	u.start = rawCommand(ccStartAuthSession, []uint32{rhNull, rhNull}, 0, nil,
		b2b(bytes.Repeat([]byte{7}, 16)), b2b(nil), []byte{sePolicy}, u16b(algNull), u16b(algSHA256))
	u.pcr = rawCommand(ccPolicyPCR, []uint32{0}, 0, nil, b2b(nil), pcrSel(algSHA256, 7, 16))
	auth := bytesOf(u32b(0), b2b(bytes.Repeat([]byte{9}, 16)), []byte{0}, b2b(nil))
	u.unseal = bytesOf(u16b(stSessions), u32b(0), u32b(ccUnseal), u32b(uint32(f.obj.Handle)), u32b(uint32(len(auth))), auth)
	binary.BigEndian.PutUint32(u.unseal[2:], uint32(len(u.unseal)))
	return u
}

// run unseals once and returns the wall and thread CPU time it took.
func (u *policyUnsealer) run(b *testing.B) (time.Duration, time.Duration) {
	c0 := policyThreadCPU()
	t0 := time.Now()
	rsp, _ := u.tp.Send(u.start)
	if rcOf(rsp) != rcSuccess {
		b.Fatalf("StartAuthSession: rc %#x", rcOf(rsp))
	}
	copy(u.pcr[10:14], rsp[10:14])
	copy(u.unseal[18:22], rsp[10:14])
	if rsp, _ = u.tp.Send(u.pcr); rcOf(rsp) != rcSuccess {
		b.Fatalf("PolicyPCR: rc %#x", rcOf(rsp))
	}
	rsp, _ = u.tp.Send(u.unseal)
	d := time.Since(t0)
	c := policyThreadCPU() - c0
	// The response: header, parameterSize, TPM2B secret, sessions.
	if rcOf(rsp) != rcSuccess || len(rsp) < 16+len(u.secret) || !bytes.Equal(rsp[16:16+len(u.secret)], u.secret) {
		b.Fatalf("Unseal: rc %#x", rcOf(rsp))
	}
	return d, c
}

// unsealTimes accumulates the times of the two TPMs and reports them.
type unsealTimes struct {
	n            int
	wallV, wallR time.Duration
	cpuV, cpuR   time.Duration
}

func (x *unsealTimes) add(wv, cv, wr, cr time.Duration) {
	x.n++
	x.wallV += wv
	x.cpuV += cv
	x.wallR += wr
	x.cpuR += cr
}

// report reports unseals per second of thread CPU time (the comparison
// that a loaded machine does not skew) and of wall time.
func (x *unsealTimes) report(b *testing.B) {
	per := func(d time.Duration) float64 { return float64(x.n) / d.Seconds() }
	b.ReportMetric(per(x.cpuV), "vtpm-unseals/cpu-s")
	b.ReportMetric(per(x.cpuR), "reference-unseals/cpu-s")
	b.ReportMetric(per(x.cpuV)/per(x.cpuR), "vtpm/reference-cpu")
	b.ReportMetric(per(x.wallV), "vtpm-unseals/s")
	b.ReportMetric(per(x.wallR), "reference-unseals/s")
	b.ReportMetric(per(x.wallV)/per(x.wallR), "vtpm/reference-wall")
}

// BenchmarkPolicyPCRUnseal unseals a secret through a PolicyPCR session
// (three commands: StartAuthSession, PolicyPCR, Unseal) alternately on the
// vTPM and on the reference TPM in the same process, and reports the
// unseals per second of each and their ratio (issue 8 target: vtpm at
// least as fast as the reference, about 11,500 per s). Rates are per
// second of the benchmark thread's CPU time, and of wall time:
//
//	go test -run '^$' -bench PolicyPCRUnseal -benchtime 20000x ./vtpm/
func BenchmarkPolicyPCRUnseal(b *testing.B) {
	ours := newPolicyUnsealer(b, newTestTPM(b))
	ref := newPolicyUnsealer(b, simTPM{getSim(b)})
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var x unsealTimes
	for b.Loop() {
		wv, cv := ours.run(b)
		wr, cr := ref.run(b)
		x.add(wv, cv, wr, cr)
	}
	x.report(b)
}

// runContinued unseals once through a session that stays loaded: PolicyPCR
// then Unseal with continueSession, after which the TPM resets the
// session's policy.
func (u *policyUnsealer) runContinued(b *testing.B) (time.Duration, time.Duration) {
	c0 := policyThreadCPU()
	t0 := time.Now()
	rsp, _ := u.tp.Send(u.pcr)
	if rcOf(rsp) != rcSuccess {
		b.Fatalf("PolicyPCR: rc %#x", rcOf(rsp))
	}
	rsp, _ = u.tp.Send(u.unseal)
	d := time.Since(t0)
	c := policyThreadCPU() - c0
	if rcOf(rsp) != rcSuccess || len(rsp) < 16+len(u.secret) || !bytes.Equal(rsp[16:16+len(u.secret)], u.secret) {
		b.Fatalf("Unseal: rc %#x", rcOf(rsp))
	}
	return d, c
}

// BenchmarkPolicyPCRUnsealContinued is BenchmarkPolicyPCRUnseal with one
// session kept across unseals (two commands per unseal: PolicyPCR, Unseal
// with continueSession).
func BenchmarkPolicyPCRUnsealContinued(b *testing.B) {
	ours := newPolicyUnsealer(b, newTestTPM(b))
	ref := newPolicyUnsealer(b, simTPM{getSim(b)})
	for _, u := range []*policyUnsealer{ours, ref} {
		rsp, _ := u.tp.Send(u.start)
		if rcOf(rsp) != rcSuccess {
			b.Fatalf("StartAuthSession: rc %#x", rcOf(rsp))
		}
		copy(u.pcr[10:14], rsp[10:14])
		copy(u.unseal[18:22], rsp[10:14])
		u.unseal[len(u.unseal)-3] = saContinueSession
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var x unsealTimes
	for b.Loop() {
		wv, cv := ours.runContinued(b)
		wr, cr := ref.runContinued(b)
		x.add(wv, cv, wr, cr)
	}
	x.report(b)
}

// goTPMUnseal unseals once the way a go-tpm client does: tpm2.PolicySession
// (StartAuthSession), tpm2.PolicyPCR, tpm2.Unseal with the session (the
// client computes and checks the HMACs), then the session's closer
// (FlushContext: go-tpm continues its sessions).
func goTPMUnseal(b *testing.B, tp transport.TPM, f sealFixture) (time.Duration, time.Duration) {
	c0 := policyThreadCPU()
	t0 := time.Now()
	s, closer, err := tpm2.PolicySession(tp, tpm2.TPMAlgSHA256, 16)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := (tpm2.PolicyPCR{PolicySession: s.Handle(), Pcrs: pcrSel16}).Execute(tp); err != nil {
		b.Fatal(err)
	}
	got, err := f.unseal(tp, s)
	cerr := closer()
	d := time.Since(t0)
	c := policyThreadCPU() - c0
	if err != nil || !bytes.Equal(got, f.secret) || cerr != nil {
		b.Fatalf("Unseal = %q, %v (flush: %v)", got, err, cerr)
	}
	return d, c
}

// BenchmarkPolicyPCRUnsealGoTPM is BenchmarkPolicyPCRUnseal through
// go-tpm's client API, whose marshalling and HMACs cost the same on both
// sides.
func BenchmarkPolicyPCRUnsealGoTPM(b *testing.B) {
	v := newTestTPM(b)
	ref := simTPM{getSim(b)}
	fv := sealWithPolicy(b, v, pcrPolicy(b, v), nil, false)
	fr := sealWithPolicy(b, ref, pcrPolicy(b, ref), nil, false)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var x unsealTimes
	for b.Loop() {
		wv, cv := goTPMUnseal(b, v, fv)
		wr, cr := goTPMUnseal(b, ref, fr)
		x.add(wv, cv, wr, cr)
	}
	x.report(b)
}
