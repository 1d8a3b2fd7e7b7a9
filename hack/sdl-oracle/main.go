// Command sdl-oracle runs Akash's reference SDL parser (pkg.akt.dev/go/sdl) over each file named on
// the command line and prints one JSON object per file: the verdict, the error text, the manifest,
// the group specs and the version hash. tests/sdl/test_differential.py compares it with ours.
package main

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"time"

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

// benchmark prints, per file, the nanoseconds each of `rounds` full runs took (read, parse,
// validate, derive manifest, groups and version), for bench/sdl_parse.py.
func benchmark(rounds int, paths []string) {
	enc := json.NewEncoder(os.Stdout)
	for _, path := range paths {
		times := make([]int64, 0, rounds)
		for i := 0; i < rounds; i++ {
			start := time.Now()
			run(path)
			times = append(times, time.Since(start).Nanoseconds())
		}
		if err := enc.Encode(map[string]any{"file": path, "ns": times}); err != nil {
			os.Exit(2)
		}
	}
}

func main() {
	if len(os.Args) > 2 && os.Args[1] == "-bench" {
		rounds, err := strconv.Atoi(os.Args[2])
		if err != nil || rounds < 1 {
			fmt.Fprintln(os.Stderr, "usage: sdl-oracle [-bench ROUNDS] FILE...")
			os.Exit(2)
		}
		benchmark(rounds, os.Args[3:])
		return
	}
	enc := json.NewEncoder(os.Stdout)
	for _, path := range os.Args[1:] {
		if err := enc.Encode(run(path)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
}
