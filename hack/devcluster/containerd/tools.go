//go:build tools

// Package tools records the commands the dev cluster builds from github.com/containerd/containerd/v2.
package tools

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
)
