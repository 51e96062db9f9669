package desk

import (
	"crypto/rand"
	"sync"
	"time"
)

// Sessions keeps the desk's sign-ins and the decision challenges it
// handed them. The default is in this process's memory (one proxy's
// desk); a fleet's hubs share one in PostgreSQL, so that any hub behind a
// load balancer serves any signed-in browser and answers any challenge
// another hub gave.
type Sessions interface {
	// SigninKey is the secret sign-in challenges are MACed with: the same
	// for every desk sharing the store.
	SigninKey() ([]byte, error)
	// Put starts session id.
	Put(id string, s Session) error
	// Get returns session id if it has not expired at now; nil if none.
	Get(id string, now time.Time) (*Session, error)
	// Delete ends session id and its challenges.
	Delete(id string) error
	// UseSignin marks the sign-in challenge ch used until exp; fresh is
	// false when it was used before.
	UseSignin(ch string, exp, now time.Time) (fresh bool, err error)
	// PutChallenge gives session id the decision challenge value, keeping
	// at most MaxChallenges per session (the oldest make room).
	PutChallenge(id, value string, c Challenge, now time.Time) error
	// TakeChallenge removes and returns session id's challenge value if it
	// is for approval and has not expired at now; nil otherwise, and any
	// other challenge stays.
	TakeChallenge(id, value, approval string, now time.Time) (*Challenge, error)
}

// Session is a signed-in principal.
type Session struct {
	Principal string
	CSRF      string
	Expires   time.Time
}

// Challenge is a decision challenge handed to a session: the statement's
// hash (its value) and the fields of that statement.
type Challenge struct {
	Principal, Approval, Decision, SignedAt string
	Expires                                 time.Time
}

// MaxChallenges bounds a session's outstanding decision challenges.
const MaxChallenges = 8

// MemorySessions keeps sessions in this process: the desk of one proxy,
// or of one hub behind a balancer with session affinity.
type MemorySessions struct {
	mu       sync.Mutex
	key      []byte
	sessions map[string]*memSession
	used     map[string]time.Time // sign-in challenges used, until they expire
}

type memSession struct {
	Session
	challenges map[string]Challenge
}

// NewMemorySessions returns an empty store with a fresh sign-in key.
func NewMemorySessions() *MemorySessions {
	k := make([]byte, 32)
	rand.Read(k)
	return &MemorySessions{key: k, sessions: map[string]*memSession{}, used: map[string]time.Time{}}
}

func (m *MemorySessions) SigninKey() ([]byte, error) { return m.key, nil }

func (m *MemorySessions) Put(id string, s Session) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sessions[id] = &memSession{Session: s}
	return nil
}

func (m *MemorySessions) Get(id string, now time.Time) (*Session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.sessions[id]
	if s == nil {
		return nil, nil
	}
	if !now.Before(s.Expires) {
		delete(m.sessions, id)
		return nil, nil
	}
	c := s.Session
	return &c, nil
}

func (m *MemorySessions) Delete(id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.sessions, id)
	return nil
}

func (m *MemorySessions) UseSignin(ch string, exp, now time.Time) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, until := range m.used {
		if !now.Before(until) {
			delete(m.used, k)
		}
	}
	if _, seen := m.used[ch]; seen {
		return false, nil
	}
	m.used[ch] = exp
	return true, nil
}

func (m *MemorySessions) PutChallenge(id, value string, c Challenge, now time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.sessions[id]
	if s == nil {
		return nil // signed out meanwhile: the challenge can never be answered
	}
	if s.challenges == nil {
		s.challenges = map[string]Challenge{}
	}
	for k, x := range s.challenges {
		if !now.Before(x.Expires) {
			delete(s.challenges, k)
		}
	}
	for len(s.challenges) >= MaxChallenges {
		var oldest string
		for k, x := range s.challenges {
			if oldest == "" || x.Expires.Before(s.challenges[oldest].Expires) {
				oldest = k
			}
		}
		delete(s.challenges, oldest)
	}
	s.challenges[value] = c
	return nil
}

func (m *MemorySessions) TakeChallenge(id, value, approval string, now time.Time) (*Challenge, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.sessions[id]
	if s == nil {
		return nil, nil
	}
	c, ok := s.challenges[value]
	if !ok || c.Approval != approval || !now.Before(c.Expires) {
		return nil, nil
	}
	delete(s.challenges, value)
	return &c, nil
}
