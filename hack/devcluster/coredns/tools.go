//go:build tools

// Package tools records the commands the dev cluster builds from github.com/coredns/coredns.
package tools

import (
	_ "github.com/coredns/coredns"
)
