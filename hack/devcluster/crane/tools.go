//go:build tools

// Package tools records the commands the dev cluster builds from github.com/google/go-containerregistry.
package tools

import (
	_ "github.com/google/go-containerregistry/cmd/crane"
)
