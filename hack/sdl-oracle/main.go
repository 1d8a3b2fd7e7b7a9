// Command sdl-oracle runs Akash's reference SDL parser (pkg.akt.dev/go/sdl) over each file named on
// the command line and prints one JSON object per file: the verdict, the error text, the manifest,
// the group specs and the version hash. tests/sdl/test_differential.py compares it with ours.
package main

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"

	"pkg.akt.dev/go/sdl"
)

type result struct {
	File     string          `json:"file"`
	Valid    bool            `json:"valid"`
	Error    string          `json:"error,omitempty"`
	Manifest json.RawMessage `json:"manifest,omitempty"`
	Groups   json.RawMessage `json:"groups,omitempty"`
	Version  string          `json:"version,omitempty"`
}

func run(path string) (res result) {
	res.File = path
	defer func() {
		// The reference parser panics on some inputs (an invalid denom, say); that is a rejection.
		if r := recover(); r != nil {
			res = result{File: path, Error: fmt.Sprintf("panic: %v", r)}
		}
	}()
	obj, err := sdl.ReadFile(path)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	m, err := obj.Manifest()
	if err != nil {
		res.Error = err.Error()
		return res
	}
	groups, err := obj.DeploymentGroups()
	if err != nil {
		res.Error = err.Error()
		return res
	}
	version, err := obj.Version()
	if err != nil {
		res.Error = err.Error()
		return res
	}
	if res.Manifest, err = json.Marshal(m); err != nil {
		res.Error = err.Error()
		return res
	}
	if res.Groups, err = json.Marshal(groups); err != nil {
		res.Error = err.Error()
		return res
	}
	res.Valid = true
	res.Version = hex.EncodeToString(version)
	return res
}

func main() {
	enc := json.NewEncoder(os.Stdout)
	for _, path := range os.Args[1:] {
		if err := enc.Encode(run(path)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
}
