package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/shieldvm/shieldvm/policy"
)

const policySummary = "attestation policies: learn a baseline from known-good hosts, evaluate evidence"

func init() {
	register("policy", policySummary, "learn", verb{
		usage: "[--id ID] [--nonce HEX | --no-nonce] [--allow-sha1] [--quirk NAME]... EVIDENCE...",
		help:  "learn a baseline policy from the stored evidence of known-good hosts; prints the policy (JSON) on stdout and what it pinned or generalised on stderr",
		run:   policyLearn,
	})
	register("policy", policySummary, "eval", verb{
		usage: "[--json] [--nonce HEX | --no-nonce] [--allow-sha1] [--quirk NAME]... POLICY EVIDENCE",
		help:  "verify stored evidence (quote and log) and evaluate the policy on it, rule by rule; exit 1 if the verdict is contraindicated",
		run:   policyEval,
	})
}

func policyLearn(_ context.Context, env *env, args []string) error {
	fs := newFlags("policy learn")
	id := fs.String("id", "baseline", "the policy's id")
	bf := addBootFlags(fs)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return usageErrorf("%v", err)
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) == 0 {
		return usageErrorf("want at least one evidence file")
	}
	var hosts []*policy.Input
	for _, name := range pos {
		_, _, boot, err := verifyStored(name, bf)
		if err != nil {
			return err
		}
		hosts = append(hosts, &policy.Input{PCRs: boot.Quote.PCRs, Log: boot.Log})
	}
	b, err := policy.Learn(hosts, policy.LearnOptions{ID: *id})
	if err != nil {
		return err
	}
	out, err := b.Policy.Marshal()
	if err != nil {
		return err
	}
	if _, err := env.stdout.Write(out); err != nil {
		return err
	}
	for _, n := range b.Notes {
		what := "not pinned"
		if n.Pinned {
			what = "pinned"
		}
		fmt.Fprintf(env.stderr, "%-10s %s: %s\n", what, n.Rule, n.Why)
	}
	return nil
}

func policyEval(_ context.Context, env *env, args []string) error {
	fs := newFlags("policy eval")
	asJSON := fs.Bool("json", false, "print the verdict as JSON")
	bf := addBootFlags(fs)
	pos, err := parseArgs(fs, args, 2)
	if err != nil {
		return err
	}
	pol, err := readPolicy(pos[0])
	if err != nil {
		return err
	}
	_, _, boot, err := verifyStored(pos[1], bf)
	if err != nil {
		return err
	}
	facts, _ := boot.Log.Facts()
	v := pol.Evaluate(&policy.Input{PCRs: boot.Quote.PCRs, Log: boot.Log, Facts: facts})
	if *asJSON {
		enc := json.NewEncoder(env.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(v); err != nil {
			return err
		}
	} else {
		printVerdict(env.stdout, v)
	}
	if v.Status == policy.Contraindicated {
		return errCheckFailed
	}
	return nil
}
