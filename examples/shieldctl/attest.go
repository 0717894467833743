package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/shieldvm/shieldvm/attest"
	"github.com/shieldvm/shieldvm/measure"
	"github.com/shieldvm/shieldvm/policy"
)

const attestSummary = "attestation evidence: verify a stored quote, its log and a policy"

func init() {
	register("attest", attestSummary, "verify", verb{
		usage: "[--json] [--policy POLICY.json] [--nonce HEX | --no-nonce] [--allow-sha1] [--quirk NAME]... EVIDENCE",
		help: "verify stored evidence (shieldvm CBOR, or go-attestation JSON): quote signature, qualifying data, " +
			"PCR digest, log replay, and the policy if given; challenge freshness and host identity are the " +
			"guardian service's, not checked here; exit 1 if anything fails or the policy contraindicates the host",
		run: attestVerify,
	})
}

// bootFlags are the flags of every verb that verifies stored evidence.
type bootFlags struct {
	nonce     *string
	noNonce   *bool
	allowSHA1 *bool
	quirks    quirkFlags
}

func addBootFlags(fs *flag.FlagSet) *bootFlags {
	b := &bootFlags{
		nonce:     fs.String("nonce", "", "the qualifying data the quote must carry, in hex (default: derived from the evidence's challenge and release key, or none)"),
		noNonce:   fs.Bool("no-nonce", false, "do not check the quote's qualifying data (a replayed quote verifies: inspection only)"),
		allowSHA1: fs.Bool("allow-sha1", false, "accept SHA-1 quote signatures and SHA-1 PCR banks"),
	}
	fs.Var(&b.quirks, "quirk", "accept a known firmware defect in the log (repeatable)")
	return b
}

// readEvidence reads shieldvm CBOR evidence or go-attestation JSON.
func readEvidence(name string) (*attest.Evidence, error) {
	data, err := readFile(name)
	if err != nil {
		return nil, err
	}
	var e *attest.Evidence
	if t := bytes.TrimLeft(data, " \t\r\n"); len(t) > 0 && t[0] == '{' {
		e, err = attest.ImportGoAttestation(data)
	} else {
		e, err = attest.ParseEvidence(data)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return e, nil
}

// verifyStored runs attest.VerifyBoot on stored evidence.
func verifyStored(name string, b *bootFlags) (*attest.Evidence, *attest.AKPublic, *attest.VerifiedBoot, error) {
	e, err := readEvidence(name)
	if err != nil {
		return nil, nil, nil, err
	}
	ak, err := attest.ParseAKPublic(e.AKPublic)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	opts := attest.BootOptions{Quote: attest.QuoteOptions{InsecureAllowSHA1: *b.allowSHA1, InsecureSkipQualifyingData: *b.noNonce}, Quirks: measure.Quirk(b.quirks)}
	switch {
	case *b.nonce != "":
		if *b.noNonce {
			return nil, nil, nil, usageErrorf("--nonce and --no-nonce exclude each other")
		}
		if opts.Quote.QualifyingData, err = hex.DecodeString(*b.nonce); err != nil {
			return nil, nil, nil, usageErrorf("--nonce: %v", err)
		}
	case len(e.Challenge) > 0:
		opts.Quote.QualifyingData = attest.QualifyingData(e.Challenge, e.ReleaseKey)
	}
	boot, err := attest.VerifyBoot(ak, e.Quote, e.PCRs, e.EventLog, opts)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	return e, ak, boot, nil
}

func readPolicy(name string) (*policy.Policy, error) {
	data, err := readFile(name)
	if err != nil {
		return nil, err
	}
	p, err := policy.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return p, nil
}

// attestJSON is the --json output of attest verify.
type attestJSON struct {
	Quote struct {
		AKName    string            `json:"ak_name"`
		Selection map[string]string `json:"selection"`
		ExtraData string            `json:"extra_data"`
		Hash      string            `json:"signature_hash"`
		Clock     uint64            `json:"clock"`
		Resets    uint32            `json:"reset_count"`
	} `json:"quote"`
	Log struct {
		Events    int      `json:"events"`
		Verified  int      `json:"verified_events"`
		Prefix    int      `json:"quoted_prefix"`
		Registers []uint32 `json:"registers"`
		Quirks    string   `json:"quirks,omitempty"`
	} `json:"log"`
	Verdict *policy.Verdict `json:"verdict,omitempty"`
}

func attestVerify(_ context.Context, env *env, args []string) error {
	fs := newFlags("attest verify")
	asJSON := fs.Bool("json", false, "print JSON")
	polFile := fs.String("policy", "", "evaluate this policy on the verified boot")
	bf := addBootFlags(fs)
	pos, err := parseArgs(fs, args, 1)
	if err != nil {
		return err
	}
	var pol *policy.Policy
	if *polFile != "" {
		if pol, err = readPolicy(*polFile); err != nil {
			return err
		}
	}
	_, ak, boot, err := verifyStored(pos[0], bf)
	if err != nil {
		return err
	}
	var out attestJSON
	out.Quote.AKName = hex.EncodeToString(ak.Name)
	out.Quote.Selection = map[string]string{}
	for _, s := range boot.Quote.Selection {
		out.Quote.Selection[s.Alg.String()] = registerList(s.Registers())
	}
	out.Quote.ExtraData = hex.EncodeToString(boot.Quote.ExtraData)
	out.Quote.Hash = strings.ToLower(strings.ReplaceAll(boot.Quote.SignatureHash.String(), "-", ""))
	out.Quote.Clock, out.Quote.Resets = boot.Quote.Clock, boot.Quote.ResetCount
	rep := boot.Log.Report()
	out.Log.Events, out.Log.Verified, out.Log.Prefix = rep.Events, boot.Log.NumEvents(), rep.Prefix
	for r := range uint32(32) {
		if boot.Log.Verified(r) {
			out.Log.Registers = append(out.Log.Registers, r)
		}
	}
	if rep.Quirks != 0 {
		out.Log.Quirks = rep.Quirks.String()
	}
	if pol != nil {
		facts, _ := boot.Log.Facts()
		out.Verdict = pol.Evaluate(&policy.Input{PCRs: boot.Quote.PCRs, Log: boot.Log, Facts: facts})
	}
	if *asJSON {
		enc := json.NewEncoder(env.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(env.stdout, "quote: verified (AK %s, signature %s", out.Quote.AKName[:12]+"…", out.Quote.Hash)
		for _, s := range boot.Quote.Selection {
			fmt.Fprintf(env.stdout, ", %v PCRs %s", s.Alg, out.Quote.Selection[s.Alg.String()])
		}
		if out.Quote.ExtraData == "" {
			fmt.Fprintf(env.stdout, ", no qualifying data)\n")
		} else {
			fmt.Fprintf(env.stdout, ", qualifying data %s)\n", out.Quote.ExtraData)
		}
		fmt.Fprintf(env.stdout, "log: %d of %d events verified, registers %s", out.Log.Verified, out.Log.Events, registerList(out.Log.Registers))
		if out.Log.Quirks != "" {
			fmt.Fprintf(env.stdout, ", quirks %s", out.Log.Quirks)
		}
		fmt.Fprintln(env.stdout)
		if out.Verdict != nil {
			printVerdict(env.stdout, out.Verdict)
		}
	}
	if out.Verdict != nil && out.Verdict.Status == policy.Contraindicated {
		return errCheckFailed
	}
	return nil
}

// printVerdict prints a verdict rule by rule.
func printVerdict(w io.Writer, v *policy.Verdict) {
	fmt.Fprintf(w, "policy %s: %v\n", v.PolicyID, v.Status)
	for _, r := range v.Rules {
		mark := "pass"
		if !r.Passed {
			mark = strings.ToUpper(r.Status().String())
		}
		fmt.Fprintf(w, "  %-15s %s: %s", mark, r.Rule, r.Reason)
		if len(r.Events) > 0 {
			var evs []string
			for _, e := range r.Events {
				evs = append(evs, fmt.Sprintf("#%d", e.Index))
			}
			fmt.Fprintf(w, " [events %s]", strings.Join(evs, " "))
		}
		fmt.Fprintln(w)
	}
}

// registerList prints registers compactly: "0-7,11-14".
func registerList(regs []uint32) string {
	var parts []string
	for i := 0; i < len(regs); {
		j := i
		for j+1 < len(regs) && regs[j+1] == regs[j]+1 {
			j++
		}
		if j > i {
			parts = append(parts, fmt.Sprintf("%d-%d", regs[i], regs[j]))
		} else {
			parts = append(parts, fmt.Sprint(regs[i]))
		}
		i = j + 1
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ",")
}
