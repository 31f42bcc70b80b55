package gateway

// A stand-in for branch mcore's join file (its mesh.go defines the same names): delete this
// file when merging mcore.

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/printgate/printgate/enroll/statefile"
	"github.com/printgate/printgate/mesh"
)

// MeshDir is the mesh node's directory inside the state directory.
const MeshDir = "mesh"

// FileJoin is STATE/mesh/join.json, written by `printgate init --join`.
const FileJoin = "join.json"

// JoinFile is STATE/mesh/join.json.
type JoinFile struct {
	Name     string         `json:"name"`
	Gateways []mesh.Gateway `json:"gateways"`
}

// WriteJoinFile writes STATE/mesh/join.json crash-safe (mode 0600, STATE/mesh made 0700).
func WriteJoinFile(stateDir string, jf JoinFile) error {
	dir := filepath.Join(stateDir, MeshDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("write join file: %w", err)
	}
	b, err := json.MarshalIndent(jf, "", "\t")
	if err != nil {
		return fmt.Errorf("write join file: %w", err)
	}
	return statefile.Write(filepath.Join(dir, FileJoin), append(b, '\n'), 0o600)
}
