// Package statefile replaces a file in one step: the new content is written beside it under
// a hidden temporary name, then renamed over it, so that a process dying at any moment
// leaves the old content or the new one, never part of either, and nothing that lists the
// directory (a container runtime reading CNI configurations) sees a half-written file. It
// does not fsync: it guards against crashes of the process, not of the machine.
package statefile

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Write replaces path with data, the file's mode perm, making its directory with dirPerm
// when it is missing.
func Write(path string, data []byte, perm, dirPerm fs.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, dirPerm); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename there is nothing left to remove
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Private replaces path with data readable by its owner only (0600, the directory 0700):
// kept state and keys.
func Private(path string, data []byte) error { return Write(path, data, 0o600, 0o700) }

// PrivateJSON is Private with v's JSON.
func PrivateJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return Private(path, b)
}

// ReadJSON reads path's JSON into v; found is false (and err nil) when there is no file.
// A file that is not JSON is an error naming it.
func ReadJSON(path string, v any) (found bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return true, fmt.Errorf("%s: %w", path, err)
	}
	return true, nil
}
