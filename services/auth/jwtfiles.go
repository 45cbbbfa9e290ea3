package auth

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

// JWTFiles is the JWT authenticator of key files (roster serve --jwt-hmac-secret-file,
// --jwt-public-keys). It reads them again when their contents change, checked at most
// once a second on use, so that keys are rotated without a restart: add the new key
// (a secret file holds one secret a line, a public keys file any number of PEM
// blocks), sign new tokens with it, and remove the old one once its tokens have
// expired. Files that no longer load admit no token, as a users file that does not
// load admits nobody: the change that broke them may have removed a key.
type JWTFiles struct {
	cfg        JWTConfig // without keys
	secretPath string
	keysPath   string

	mu      sync.Mutex
	checked time.Time
	sum     [sha256.Size]byte
	cur     *JWT
	err     error
}

// NewJWTFiles loads the key files (either path may be empty, not both) and returns
// their authenticator; cfg gives everything but the keys.
func NewJWTFiles(cfg JWTConfig, secretPath, keysPath string) (*JWTFiles, error) {
	if secretPath == "" && keysPath == "" {
		return nil, errors.New("auth: jwt: no key file")
	}
	f := &JWTFiles{cfg: cfg, secretPath: secretPath, keysPath: keysPath}
	if err := f.reloadLocked(time.Now(), true); err != nil {
		return nil, err
	}
	return f, nil
}

// Name implements Authenticator.
func (f *JWTFiles) Name() string { return "jwt" }

// Authenticate implements Authenticator with the keys the files hold now.
func (f *JWTFiles) Authenticate(ctx context.Context, at *Attempt) (Decision, error) {
	if at.Credentials.Type != wire.CredentialsJWT {
		return Decision{Verdict: Abstain}, nil
	}
	j, err := f.current()
	if err != nil {
		return Decision{}, err
	}
	return j.Authenticate(ctx, at)
}

func (f *JWTFiles) current() (*JWT, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if now := time.Now(); now.Sub(f.checked) >= time.Second {
		_ = f.reloadLocked(now, false)
	}
	return f.cur, f.err
}

func (f *JWTFiles) reloadLocked(now time.Time, force bool) error {
	f.checked = now
	read := func(path, what string) ([]byte, error) {
		if path == "" {
			return nil, nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("auth: jwt %s: %w", what, err)
		}
		return data, nil
	}
	secrets, err := read(f.secretPath, "hmac secret file")
	if err == nil {
		var keys []byte
		if keys, err = read(f.keysPath, "public keys"); err == nil {
			h := sha256.New()
			h.Write(secrets)
			h.Write([]byte{0})
			h.Write(keys)
			var sum [sha256.Size]byte
			h.Sum(sum[:0])
			if !force && sum == f.sum {
				return f.err
			}
			f.sum = sum
			err = f.loadLocked(secrets, keys)
		}
	}
	if err != nil {
		f.cur, f.err = nil, err
		if !force {
			f.sum = [sha256.Size]byte{} // read it again next time
		}
		return err
	}
	return nil
}

func (f *JWTFiles) loadLocked(secrets, keys []byte) error {
	cfg := f.cfg
	cfg.HMACSecrets = nil
	for _, line := range strings.Split(string(secrets), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			cfg.HMACSecrets = append(cfg.HMACSecrets, []byte(line))
		}
	}
	if f.secretPath != "" && len(cfg.HMACSecrets) == 0 {
		return fmt.Errorf("auth: jwt hmac secret file %s holds no secret", f.secretPath)
	}
	if keys != nil {
		var err error
		if cfg.PublicKeys, err = ParsePublicKeys(keys); err != nil {
			return err
		}
	}
	j, err := NewJWT(cfg)
	if err != nil {
		return err
	}
	f.cur, f.err = j, nil
	return nil
}
