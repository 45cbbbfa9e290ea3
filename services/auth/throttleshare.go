package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

// Every instance counts failed attempts for the whole deployment: it publishes what
// it counted on wire.SubjectAuthThrottle and counts what the others publish (a
// plain subscription: every instance gets every note). Without it a client whose
// attempts a queue group spreads over n instances had n times the failures before
// being throttled. A success is told only by an instance that counted failures for
// the principal, so an ordinary login publishes nothing. Notes are best effort (core
// NATS): a lost one leaves a failure counted on fewer instances, or a forgotten one
// on more.

// shareThrottle subscribes to the other instances' notes and has the throttle
// publish this instance's.
func (s *Service) shareThrottle() error {
	id := make([]byte, 8)
	if _, err := rand.Read(id); err != nil {
		return fmt.Errorf("auth: instance id: %w", err)
	}
	s.instance = hex.EncodeToString(id)
	key, err := repeatKey(s.cfg.Callout)
	if err != nil {
		return err
	}
	s.repeatKey = key
	sub, err := s.nc.Subscribe(wire.SubjectAuthThrottle, func(m *nats.Msg) {
		var note wire.AuthThrottleNote
		if json.Unmarshal(m.Data, &note) != nil || note.From == s.instance {
			return
		}
		if len(note.Failed) > 0 {
			s.throttle.failed(note.Repeat, note.Failed...)
		}
		if note.Succeeded != "" {
			s.throttle.forget(note.Succeeded)
		}
	})
	if err != nil {
		return fmt.Errorf("auth: throttle subscription: %w", err)
	}
	s.throttleSub = sub
	s.throttle.tell = s.tellOthers
	return nil
}

// repeatKey returns the secret the fingerprints of failed attempts are keyed with.
// Instances must share it to recognise each other's repeats — the repeats that
// matter come from a client trying its credentials on each of its server URLs,
// through the callout — so it is derived from the callout's issuer seed, which every
// instance of a deployment holds. Without a callout (attempts then reach the
// registry's open once each) an instance keys them with a random secret of its own.
func repeatKey(c *CalloutConfig) ([]byte, error) {
	if c != nil && c.Issuer != nil {
		seed, err := c.Issuer.Seed()
		if err == nil {
			sum := sha256.Sum256(append([]byte("roster auth throttle repeat\x00"), seed...))
			return sum[:], nil
		}
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("auth: throttle key: %w", err)
	}
	return key, nil
}

// tellOthers publishes what this instance counted.
func (s *Service) tellOthers(note wire.AuthThrottleNote) {
	note.From = s.instance
	if data, err := json.Marshal(note); err == nil {
		_ = s.nc.Publish(wire.SubjectAuthThrottle, data)
	}
}
