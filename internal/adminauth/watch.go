package adminauth

import (
	"os"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// checkEvery is how often a watched tokens file is looked at.
const checkEvery = time.Second

// FileSet is a tokens file read again when it changes (its inode, size or
// time), so that tokens can be added and revoked without a restart: in a
// pod whose ledger lives in an emptyDir, a restart is not free. A changed
// file that does not load keeps the tokens in force, and says so in the
// log.
type FileSet struct {
	path string
	now  func() time.Time
	log  zerolog.Logger

	mu      sync.Mutex
	cur     *Set
	seen    os.FileInfo
	checked time.Time
	failing bool
}

// Watch returns the tokens file at path, read now; later changes are
// picked up within a second. now nil is time.Now.
func Watch(path string, now func() time.Time, log zerolog.Logger) (*FileSet, error) {
	if now == nil {
		now = time.Now
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	set, err := LoadFile(path)
	if err != nil {
		return nil, err
	}
	return &FileSet{path: path, now: now, log: log, cur: set, seen: fi, checked: now()}, nil
}

// Authenticate checks an Authorization header value against the tokens
// in force.
func (f *FileSet) Authenticate(authorization string) (Holder, error) {
	return f.current().Authenticate(authorization)
}

// Len is how many tokens are in force.
func (f *FileSet) Len() int { return f.current().Len() }

func (f *FileSet) current() *Set {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.now()
	if now.Sub(f.checked) < checkEvery {
		return f.cur
	}
	f.checked = now
	fi, err := os.Stat(f.path)
	if err == nil && os.SameFile(fi, f.seen) && fi.Size() == f.seen.Size() && fi.ModTime().Equal(f.seen.ModTime()) {
		return f.cur
	}
	var set *Set
	if err == nil {
		set, err = LoadFile(f.path)
	}
	if err != nil {
		if !f.failing {
			f.log.Error().Err(err).Str("path", f.path).Msg("admin tokens file changed but does not load; the tokens in force stay")
		}
		f.failing = true
		return f.cur
	}
	f.cur, f.seen, f.failing = set, fi, false
	f.log.Info().Str("path", f.path).Int("tokens", set.Len()).Msg("admin tokens file reloaded")
	return f.cur
}
