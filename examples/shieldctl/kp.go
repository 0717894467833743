package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/shieldvm/shieldvm/keyprotector"
)

const kpSummary = "key protectors: make, show, grant, revoke, unwrap"

func init() {
	register("kp", kpSummary, "new", verb{
		usage: "--owner KEYFILE [--guardian DESCRIPTOR]... [--min-verdict affirming|warning] [--policy ID]... [--max-offline N] OUT",
		help:  "make a key protector with a fresh transport key for the owner and the guardians",
		run:   kpNew,
	})
	register("kp", kpSummary, "show", verb{
		usage: "[--json] FILE",
		help:  "show a key protector after checking its signatures (the MAC needs a guardian: see unwrap)",
		run:   kpShow,
	})
	register("kp", kpSummary, "grant", verb{
		usage: "--owner KEYFILE --guardian DESCRIPTOR IN OUT",
		help:  "let one more guardian unwrap the transport key (owner only)",
		run:   kpGrant,
	})
	register("kp", kpSummary, "revoke", verb{
		usage: "--owner KEYFILE (--guardian DESCRIPTOR | --key-id HEX) IN OUT",
		help:  "remove a guardian (owner only); re-key afterwards to retire the key it may have seen",
		run:   kpRevoke,
	})
	register("kp", kpSummary, "unwrap", verb{
		usage: "--guardian KEYFILE [--derive LABEL] FILE",
		help:  "unwrap the transport key as a guardian and check the MAC; with --derive, print the hex subkey for LABEL (vtpm-state, migration, shielding-data, or a full label). The transport key itself is never printed",
		run:   kpUnwrap,
	})
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }

func readKP(name string) (*keyprotector.KeyProtector, error) {
	data, err := readFile(name)
	if err != nil {
		return nil, err
	}
	kp, err := keyprotector.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return kp, nil
}

func kpNew(ctx context.Context, e *env, args []string) error {
	fs := newFlags("kp new")
	owner := fs.String("owner", "", "")
	var guardians, policies multiFlag
	fs.Var(&guardians, "guardian", "")
	fs.Var(&policies, "policy", "")
	minVerdict := fs.String("min-verdict", "affirming", "")
	maxOffline := fs.Uint64("max-offline", 0, "")
	pos, err := parseArgs(fs, args, 1)
	if err != nil {
		return err
	}
	if *owner == "" {
		return usageErrorf("--owner is required")
	}
	rules := keyprotector.Rules{PolicyIDs: policies, MaxOfflineUnwraps: *maxOffline}
	switch *minVerdict {
	case "affirming":
		rules.MinVerdict = keyprotector.VerdictAffirming
	case "warning":
		rules.MinVerdict = keyprotector.VerdictWarning
	default:
		return usageErrorf("--min-verdict must be affirming or warning")
	}
	g, err := readGuardian(*owner)
	if err != nil {
		return err
	}
	var ds []*keyprotector.Descriptor
	for _, name := range guardians {
		d, err := readDescriptor(name)
		if err != nil {
			return err
		}
		ds = append(ds, d)
	}
	kp, err := keyprotector.New(ctx, g, ds, &keyprotector.Config{Rules: rules})
	if err != nil {
		return err
	}
	if err := os.WriteFile(pos[0], kp.Marshal(), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "key protector %s: %d guardians, generation %d\n", kp.ID(), len(kp.Guardians()), kp.Generation())
	return nil
}

type kpJSON struct {
	ID                   string           `json:"id"`
	Generation           uint64           `json:"generation"`
	AuthorizationVersion uint64           `json:"authorization_version"`
	PostQuantum          bool             `json:"post_quantum"`
	SignedBy             string           `json:"signed_by"`
	Owner                descriptorJSON   `json:"owner"`
	Guardians            []descriptorJSON `json:"guardians"`
	MinVerdict           string           `json:"min_verdict"`
	PolicyIDs            []string         `json:"policy_ids"`
	MaxOfflineUnwraps    uint64           `json:"max_offline_unwraps"`
}

func kpShow(_ context.Context, e *env, args []string) error {
	fs := newFlags("kp show")
	asJSON := fs.Bool("json", false, "")
	pos, err := parseArgs(fs, args, 1)
	if err != nil {
		return err
	}
	kp, err := readKP(pos[0])
	if err != nil {
		return err
	}
	r := kp.Rules()
	j := kpJSON{
		ID: kp.ID().String(), Generation: kp.Generation(), AuthorizationVersion: kp.AuthorizationVersion(),
		PostQuantum: kp.PostQuantum(), SignedBy: kp.Signer().String(), Owner: describe(kp.Owner()),
		MinVerdict: r.MinVerdict.String(), PolicyIDs: r.PolicyIDs, MaxOfflineUnwraps: r.MaxOfflineUnwraps,
		Guardians: []descriptorJSON{},
	}
	for _, d := range kp.Guardians()[1:] {
		j.Guardians = append(j.Guardians, describe(d))
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(j)
	}
	fmt.Fprintf(e.stdout, "key protector %s\ngeneration:    %d\nauthorization: %d\npost-quantum:  %v\nsigned by:     %s\n",
		j.ID, j.Generation, j.AuthorizationVersion, j.PostQuantum, j.SignedBy)
	fmt.Fprintf(e.stdout, "owner:         %s %s (%s)\n", j.Owner.KeyID, strconv.Quote(j.Owner.Name), j.Owner.Suite)
	for _, g := range j.Guardians {
		fmt.Fprintf(e.stdout, "guardian:      %s %s (%s)\n", g.KeyID, strconv.Quote(g.Name), g.Suite)
	}
	policies := "any"
	if len(j.PolicyIDs) > 0 {
		policies = strings.Join(j.PolicyIDs, ", ")
	}
	fmt.Fprintf(e.stdout, "rules:         minimum verdict %s; policies %s; offline unwraps %d\n", j.MinVerdict, policies, j.MaxOfflineUnwraps)
	return nil
}

func kpGrant(ctx context.Context, e *env, args []string) error {
	fs := newFlags("kp grant")
	owner := fs.String("owner", "", "")
	guardian := fs.String("guardian", "", "")
	pos, err := parseArgs(fs, args, 2)
	if err != nil {
		return err
	}
	if *owner == "" || *guardian == "" {
		return usageErrorf("--owner and --guardian are required")
	}
	g, err := readGuardian(*owner)
	if err != nil {
		return err
	}
	d, err := readDescriptor(*guardian)
	if err != nil {
		return err
	}
	kp, err := readKP(pos[0])
	if err != nil {
		return err
	}
	if kp, err = kp.Grant(ctx, g, d, nil); err != nil {
		return err
	}
	if err := os.WriteFile(pos[1], kp.Marshal(), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "granted %s to %q: authorization %d\n", d.KeyID(), d.Name(), kp.AuthorizationVersion())
	return nil
}

func kpRevoke(ctx context.Context, e *env, args []string) error {
	fs := newFlags("kp revoke")
	owner := fs.String("owner", "", "")
	guardian := fs.String("guardian", "", "")
	keyID := fs.String("key-id", "", "")
	pos, err := parseArgs(fs, args, 2)
	if err != nil {
		return err
	}
	if *owner == "" || (*guardian == "") == (*keyID == "") {
		return usageErrorf("--owner and exactly one of --guardian and --key-id are required")
	}
	var id keyprotector.KeyID
	if *keyID != "" {
		b, err := hex.DecodeString(*keyID)
		if err != nil || len(b) != len(id) {
			return usageErrorf("--key-id must be %d hex bytes", len(id))
		}
		copy(id[:], b)
	} else {
		d, err := readDescriptor(*guardian)
		if err != nil {
			return err
		}
		id = d.KeyID()
	}
	g, err := readGuardian(*owner)
	if err != nil {
		return err
	}
	kp, err := readKP(pos[0])
	if err != nil {
		return err
	}
	if kp, err = kp.Revoke(ctx, g, id, nil); err != nil {
		return err
	}
	if err := os.WriteFile(pos[1], kp.Marshal(), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "revoked %s: authorization %d\n", id, kp.AuthorizationVersion())
	return nil
}

var shortLabels = map[string]string{
	"vtpm-state":     keyprotector.LabelVTPMState,
	"migration":      keyprotector.LabelMigration,
	"shielding-data": keyprotector.LabelShieldingData,
}

func kpUnwrap(ctx context.Context, e *env, args []string) error {
	fs := newFlags("kp unwrap")
	guardian := fs.String("guardian", "", "")
	derive := fs.String("derive", "", "")
	pos, err := parseArgs(fs, args, 1)
	if err != nil {
		return err
	}
	if *guardian == "" {
		return usageErrorf("--guardian is required")
	}
	g, err := readGuardian(*guardian)
	if err != nil {
		return err
	}
	kp, err := readKP(pos[0])
	if err != nil {
		return err
	}
	tk, err := kp.Unwrap(ctx, g, nil)
	if err != nil {
		return err
	}
	defer tk.Destroy()
	if *derive == "" {
		fmt.Fprintf(e.stdout, "unwrapped key protector %s generation %d as %q; MAC verified\n", kp.ID(), tk.Generation(), g.Descriptor().Name())
		return nil
	}
	label := *derive
	if l, ok := shortLabels[label]; ok {
		label = l
	}
	k := tk.Derive(label)
	fmt.Fprintln(e.stdout, hex.EncodeToString(k[:]))
	clear(k[:])
	return nil
}
