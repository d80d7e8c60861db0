package auth

import (
	"container/list"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"sync"

	"tidings/storage"
)

// verifyCache remembers argon2 results, never passwords or hashes. Its key
// is HMAC-SHA256(process key, account id | credential generation |
// password): without the process key (random, in memory only) an entry
// says nothing about any password, and a password change bumps the
// generation so every older entry for the account is unreachable.
type verifyCache struct {
	key []byte // process-random HMAC key

	mu  sync.Mutex
	max int
	ll  *list.List // front = most recently used
	m   map[[sha256.Size]byte]*list.Element
}

type cacheEntry struct {
	k     [sha256.Size]byte
	valid bool
}

func newVerifyCache(key []byte, max int) *verifyCache {
	return &verifyCache{key: key, max: max, ll: list.New(), m: make(map[[sha256.Size]byte]*list.Element)}
}

// cacheKey derives the key for an account's password attempt. Unknown
// users (id 0, which no account has) are keyed by their folded login name
// too, so a repeated attempt costs the same whether or not the user exists.
func (c *verifyCache) cacheKey(id storage.AccountID, gen int64, user, pw string) [sha256.Size]byte {
	mac := hmac.New(sha256.New, c.key)
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(id))
	binary.BigEndian.PutUint64(b[8:], uint64(gen))
	mac.Write(b[:])
	if id == 0 {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(user)))
		mac.Write(n[:])
		mac.Write([]byte(user))
	}
	mac.Write([]byte(pw))
	var k [sha256.Size]byte
	mac.Sum(k[:0])
	return k
}

func (c *verifyCache) get(k [sha256.Size]byte) (valid, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok {
		return false, false
	}
	c.ll.MoveToFront(e)
	return e.Value.(*cacheEntry).valid, true
}

func (c *verifyCache) put(k [sha256.Size]byte, valid bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[k]; ok {
		e.Value.(*cacheEntry).valid = valid
		c.ll.MoveToFront(e)
		return
	}
	c.m[k] = c.ll.PushFront(&cacheEntry{k: k, valid: valid})
	for c.ll.Len() > c.max {
		old := c.ll.Back()
		c.ll.Remove(old)
		delete(c.m, old.Value.(*cacheEntry).k)
	}
}

func (c *verifyCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}
