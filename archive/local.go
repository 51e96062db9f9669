package archive

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// localStore is the archive without S3: the same keys as files under a root
// directory (DATA/archive). Files are written once, atomically (temp file,
// fsync, hard link into place, fsync of the directory) and left read-only
// (0444). A hard link, unlike rename, never replaces an existing file, so two
// writers cannot overwrite each other either. This is not WORM: whoever owns
// the directory can still delete. It is the embedded default, so that a demo
// shows the layout and verify --archive works without a bucket.
type localStore struct {
	root string
}

func newLocalStore(root string) (*localStore, error) {
	if root == "" {
		return nil, errors.New("archive: local directory not set")
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("archive: %w", err)
	}
	return &localStore{root: abs}, nil
}

func (s *localStore) path(key string) (string, error) {
	for _, seg := range strings.Split(key, "/") {
		if seg == "" || seg == "." || seg == ".." || strings.HasPrefix(seg, ".") {
			return "", fmt.Errorf("archive: key %q is not a clean relative path", key)
		}
	}
	return filepath.Join(s.root, filepath.FromSlash(key)), nil
}

func (s *localStore) check(context.Context) (StoreInfo, error) {
	if err := mkdirAllSync(s.root); err != nil {
		return StoreInfo{}, fmt.Errorf("archive dir: %w", err)
	}
	return StoreInfo{Kind: "local"}, nil
}

func (s *localStore) putIfAbsent(ctx context.Context, key string, data []byte, _ objectLock) (objectInfo, error) {
	p, err := s.path(key)
	if err != nil {
		return objectInfo{}, err
	}
	if _, err := os.Lstat(p); err == nil {
		return objectInfo{}, errObjectExists
	}
	dir := filepath.Dir(p)
	if err := mkdirAllSync(dir); err != nil {
		return objectInfo{}, err
	}
	f, err := os.CreateTemp(dir, ".tmp-")
	if err != nil {
		return objectInfo{}, err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // the link (or rename) has taken it by then
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(0o444)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return objectInfo{}, fmt.Errorf("write %s: %w", key, err)
	}
	if err := ctx.Err(); err != nil {
		return objectInfo{}, err
	}
	if err := os.Link(tmp, p); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return objectInfo{}, errObjectExists
		}
		if !linkUnsupported(err) {
			return objectInfo{}, fmt.Errorf("write %s: %w", key, err)
		}
		// No hard links here (some network and FUSE file systems):
		// rename after the existence check above; one archiver per
		// ledger means nobody races us.
		if err := os.Rename(tmp, p); err != nil {
			return objectInfo{}, fmt.Errorf("write %s: %w", key, err)
		}
	}
	if err := syncDir(dir); err != nil {
		return objectInfo{}, err
	}
	sum := sha256.Sum256(data)
	return objectInfo{ChecksumSHA256: base64.StdEncoding.EncodeToString(sum[:])}, nil
}

func linkUnsupported(err error) bool {
	return errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.ENOTSUP) ||
		errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.EXDEV) || errors.Is(err, syscall.ENOSYS)
}

func (s *localStore) get(_ context.Context, key string) ([]byte, objectInfo, error) {
	p, err := s.path(key)
	if err != nil {
		return nil, objectInfo{}, err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, objectInfo{}, errObjectNotFound
	}
	if err != nil {
		return nil, objectInfo{}, err
	}
	sum := sha256.Sum256(b)
	return b, objectInfo{ChecksumSHA256: base64.StdEncoding.EncodeToString(sum[:])}, nil
}

func (s *localStore) list(_ context.Context, prefix string) ([]string, error) {
	dir := filepath.Join(s.root, filepath.FromSlash(strings.TrimSuffix(prefix, "/")))
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var keys []string
	base := strings.TrimSuffix(prefix, "/") + "/"
	for _, e := range ents {
		// Dot files are temp files of an interrupted write.
		if e.Type().IsRegular() && !strings.HasPrefix(e.Name(), ".") {
			keys = append(keys, base+e.Name())
		}
	}
	slices.Sort(keys)
	return keys, nil
}

// mkdirAllSync creates dir and any missing parents, fsyncing each parent
// whose entries changed, so a new segment's directory survives a crash too.
func mkdirAllSync(dir string) error {
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s is not a directory", dir)
		}
		return nil
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := mkdirAllSync(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return syncDir(parent)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}
