package gossip

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
)

// Keyring operations.
const (
	KeyInstall = "install"
	KeyUse     = "use"
	KeyRemove  = "remove"
)

// ErrNoKeyring is returned for keyring operations on a pool without
// encryption.
var ErrNoKeyring = errors.New("keyring operations need gossip encryption: set encrypt")

// msgKeyring marks a keyring operation among gossip user messages.
const msgKeyring byte = 1

// keyringOp is one keyring change, gossiped to every member.
type keyringOp struct {
	Op  string
	Key []byte
	// ID makes every operation distinct in the broadcast queue.
	ID int64
}

type keyringBroadcast struct{ msg []byte }

func (b *keyringBroadcast) Invalidates(memberlist.Broadcast) bool { return false }
func (b *keyringBroadcast) Message() []byte                       { return b.msg }
func (b *keyringBroadcast) Finished()                             {}

// keyFingerprint is a short, non-secret name of a key for gossip tags.
func keyFingerprint(k []byte) string {
	sum := sha256.Sum256(k)
	return hex.EncodeToString(sum[:4])
}

// KeyringStatus is the keyring as the pool sees it: for each installed key
// (base64), how many alive members have it and use it as primary.
type KeyringStatus struct {
	Keys        map[string]int
	PrimaryKeys map[string]int
	NumNodes    int
}

// KeyringOp installs, makes primary, or removes a key on this member and
// gossips the change to every other member. "use" installs the key first
// where it is missing, so the order in which members hear of the two does
// not matter.
func (p *Pool) KeyringOp(op, keyB64 string) error {
	if p.kr == nil {
		return ErrNoKeyring
	}
	key, err := base64.StdEncoding.DecodeString(keyB64)
	if err != nil {
		return fmt.Errorf("invalid key: %w", err)
	}
	switch len(key) {
	case 16, 24, 32:
	default:
		return fmt.Errorf("invalid key: must be 16, 24 or 32 bytes, got %d", len(key))
	}
	if err := p.applyKeyOp(op, key); err != nil {
		return err
	}
	msg, err := json.Marshal(keyringOp{Op: op, Key: key, ID: time.Now().UnixNano()})
	if err != nil {
		return fmt.Errorf("encode keyring op: %w", err)
	}
	p.bq.QueueBroadcast(&keyringBroadcast{msg: append([]byte{msgKeyring}, msg...)})
	return nil
}

func (p *Pool) applyKeyOp(op string, key []byte) error {
	// Keyring changes from the API and from gossip must not interleave.
	p.keyMu.Lock()
	defer p.keyMu.Unlock()
	var err error
	switch op {
	case KeyInstall:
		err = p.kr.AddKey(key)
	case KeyUse:
		if err = p.kr.AddKey(key); err == nil {
			err = p.kr.UseKey(key)
		}
	case KeyRemove:
		err = p.kr.RemoveKey(key)
	default:
		return fmt.Errorf("unknown keyring operation %q", op)
	}
	if err != nil {
		return fmt.Errorf("keyring %s: %w", op, err)
	}
	p.publishKeyTags()
	return nil
}

// publishKeyTags gossips fingerprints of this member's keys, so that any
// member can count who has which key.
func (p *Pool) publishKeyTags() {
	var fps []string
	for _, k := range p.kr.GetKeys() {
		fps = append(fps, keyFingerprint(k))
	}
	p.mu.Lock()
	p.tags["keys"] = strings.Join(fps, ",")
	p.tags["primary_key"] = keyFingerprint(p.kr.GetPrimaryKey())
	p.mu.Unlock()
	select {
	case p.metaCh <- struct{}{}:
	default:
	}
}

// handleUserMsg applies a gossiped message.
func (p *Pool) handleUserMsg(b []byte) {
	if len(b) == 0 || b[0] != msgKeyring || p.kr == nil {
		return
	}
	var op keyringOp
	if err := json.Unmarshal(b[1:], &op); err != nil {
		p.logger.Warn("bad keyring message", "error", err)
		return
	}
	if err := p.applyKeyOp(op.Op, op.Key); err != nil {
		p.logger.Warn("keyring change from the pool failed here", "op", op.Op, "error", err)
	}
}

// KeyringList reports the keys of this member's keyring with how many alive
// members (this one included) hold each and use it as primary.
func (p *Pool) KeyringList() (*KeyringStatus, error) {
	if p.kr == nil {
		return nil, ErrNoKeyring
	}
	st := &KeyringStatus{Keys: map[string]int{}, PrimaryKeys: map[string]int{}}
	byFP := map[string]string{}
	for _, k := range p.kr.GetKeys() {
		b := base64.StdEncoding.EncodeToString(k)
		byFP[keyFingerprint(k)] = b
		st.Keys[b] = 0
	}
	members := p.Members()
	self := p.LocalMember()
	seenSelf := false
	for _, m := range members {
		if m.Name == self.Name {
			seenSelf = true
			m = self
		}
		if m.Status != StatusAlive {
			continue
		}
		st.NumNodes++
		for _, fp := range strings.Split(m.Tags["keys"], ",") {
			if b, ok := byFP[fp]; ok {
				st.Keys[b]++
			}
		}
		if b, ok := byFP[m.Tags["primary_key"]]; ok {
			st.PrimaryKeys[b]++
		}
	}
	if !seenSelf {
		st.NumNodes++
		for _, k := range p.kr.GetKeys() {
			st.Keys[base64.StdEncoding.EncodeToString(k)]++
		}
		st.PrimaryKeys[base64.StdEncoding.EncodeToString(p.kr.GetPrimaryKey())]++
	}
	return st, nil
}
