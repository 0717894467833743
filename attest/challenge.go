package attest

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"
)

// ChallengeSize is the length of a challenge: version (1) ‖ issue time in
// Unix seconds (8) ‖ random (16) ‖ HMAC-SHA-256 (32).
const ChallengeSize = 1 + 8 + 16 + 32

const challengeVersion = 1

// Challenge errors.
var (
	// ErrChallengeInvalid: the challenge was not made with this key (a
	// forged or corrupted challenge, or one from another service).
	ErrChallengeInvalid = errors.New("attest: challenge is not one of ours")
	// ErrChallengeExpired: the challenge is older than its lifetime, or
	// claims to come from the future.
	ErrChallengeExpired = errors.New("attest: challenge expired")
	// ErrChallengeReplayed: the challenge was already used (reported by a
	// [ReplayGuard]).
	ErrChallengeReplayed = errors.New("attest: challenge already used")
)

// ChallengeConfig tunes a [Challenger]. The zero value is usable.
type ChallengeConfig struct {
	// Lifetime is how long a challenge is accepted after it was issued.
	// If zero, 5 minutes.
	Lifetime time.Duration
	// ClockSkew is how far in the future an issue time may lie, for
	// replicas whose clocks disagree. If zero, 30 seconds.
	ClockSkew time.Duration
	// Now returns the current time. If nil, time.Now.
	Now func() time.Time
}

// A Challenger issues and checks stateless challenges: each carries its
// issue time and a MAC under the service's key, so any replica that holds
// the key can check a challenge another replica issued, with no shared
// state. A challenge is single-use only if a [ReplayGuard] is given to the
// [Verifier]; without one, evidence bound to a challenge can be replayed
// within the lifetime, but only to obtain a token bound to the same host
// release key.
//
// A Challenger is safe for concurrent use.
type Challenger struct {
	challengeKey  [32]byte
	activationKey [32]byte
	cfg           ChallengeConfig
}

// NewChallenger returns a Challenger that MACs challenges with a key
// derived from secret, which must hold at least 32 bytes of entropy.
// Replicas that share secret accept each other's challenges.
func NewChallenger(secret []byte, cfg ChallengeConfig) (*Challenger, error) {
	if len(secret) < 32 {
		return nil, fmt.Errorf("attest: challenge secret has %d bytes, want at least 32", len(secret))
	}
	if cfg.Lifetime < 0 || cfg.ClockSkew < 0 {
		return nil, errors.New("attest: negative challenge lifetime or clock skew")
	}
	if cfg.Lifetime == 0 {
		cfg.Lifetime = 5 * time.Minute
	}
	if cfg.ClockSkew == 0 {
		cfg.ClockSkew = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &Challenger{cfg: cfg}
	derive := func(dst *[32]byte, label string) {
		m := hmac.New(sha256.New, secret)
		m.Write([]byte(label))
		m.Sum(dst[:0])
	}
	derive(&c.challengeKey, "shieldvm attest challenge key v1")
	derive(&c.activationKey, "shieldvm attest activation key v1")
	return c, nil
}

// New returns a fresh challenge.
func (c *Challenger) New() ([]byte, error) {
	ch := make([]byte, ChallengeSize)
	ch[0] = challengeVersion
	binary.BigEndian.PutUint64(ch[1:9], uint64(c.cfg.Now().Unix()))
	if _, err := rand.Read(ch[9:25]); err != nil {
		return nil, fmt.Errorf("attest: %v", err)
	}
	c.mac(ch[:25], ch[25:25])
	return ch, nil
}

func (c *Challenger) mac(msg, dst []byte) []byte {
	m := hmac.New(sha256.New, c.challengeKey[:])
	m.Write(msg)
	return m.Sum(dst)
}

// Check verifies that ch is a challenge this service issued and that it has
// not expired. It returns when the challenge expires.
func (c *Challenger) Check(ch []byte) (expires time.Time, err error) {
	if len(ch) != ChallengeSize || ch[0] != challengeVersion {
		return time.Time{}, ErrChallengeInvalid
	}
	var sum [32]byte
	if !hmac.Equal(c.mac(ch[:25], sum[:0]), ch[25:]) {
		return time.Time{}, ErrChallengeInvalid
	}
	secs := binary.BigEndian.Uint64(ch[1:9])
	if secs > 1<<62 {
		return time.Time{}, ErrChallengeInvalid
	}
	issued := time.Unix(int64(secs), 0)
	now := c.cfg.Now()
	expires = issued.Add(c.cfg.Lifetime)
	if now.After(expires) {
		return expires, fmt.Errorf("%w: issued %s, lifetime %v", ErrChallengeExpired, issued.UTC().Format(time.RFC3339), c.cfg.Lifetime)
	}
	if issued.After(now.Add(c.cfg.ClockSkew)) {
		return expires, fmt.Errorf("%w: issued in the future (%s)", ErrChallengeExpired, issued.UTC().Format(time.RFC3339))
	}
	return expires, nil
}

// activationSecret derives the credential of a credential activation from
// the challenge and the names of the EK and AK, so that the verifier needs
// no state between sending the credential and checking its use.
func (c *Challenger) activationSecret(challenge, ekName, akName []byte) [32]byte {
	m := hmac.New(sha256.New, c.activationKey[:])
	for _, b := range [][]byte{challenge, ekName, akName} {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(b)))
		m.Write(n[:])
		m.Write(b)
	}
	var out [32]byte
	m.Sum(out[:0])
	return out
}

// QualifyingData returns the extra data a host asks its TPM to sign:
// SHA-256(challenge ‖ releaseKey). A challenge has a fixed size, so the
// concatenation is unambiguous. Binding the release key means a token
// issued on the quote is useful only to the holder of that key.
func QualifyingData(challenge, releaseKey []byte) []byte {
	h := sha256.New()
	h.Write(challenge)
	h.Write(releaseKey)
	return h.Sum(nil)
}

// A ReplayGuard makes challenges single-use across the verifiers that
// share it. Use records a challenge until it expires and returns an error
// wrapping [ErrChallengeReplayed] if it was already recorded.
type ReplayGuard interface {
	Use(ctx context.Context, challenge []byte, expires time.Time) error
}

// MemoryReplayGuard is a [ReplayGuard] for one process. Its zero value is
// ready to use; it is safe for concurrent use. Now is the clock used to
// forget expired challenges (if nil, time.Now).
type MemoryReplayGuard struct {
	Now func() time.Time

	mu    sync.Mutex
	seen  map[[32]byte]time.Time
	prune int // prune expired entries when seen grows past this
}

var _ ReplayGuard = (*MemoryReplayGuard)(nil)

// Use implements [ReplayGuard].
func (g *MemoryReplayGuard) Use(_ context.Context, challenge []byte, expires time.Time) error {
	now := time.Now
	if g.Now != nil {
		now = g.Now
	}
	key := sha256.Sum256(challenge)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.seen == nil {
		g.seen = map[[32]byte]time.Time{}
	}
	t := now()
	if len(g.seen) >= max(g.prune, 1024) {
		for k, exp := range g.seen {
			if t.After(exp) {
				delete(g.seen, k)
			}
		}
		// Amortize: the next sweep comes when the live set has doubled.
		g.prune = 2 * len(g.seen)
	}
	if exp, ok := g.seen[key]; ok && !t.After(exp) {
		return ErrChallengeReplayed
	}
	g.seen[key] = expires
	return nil
}
