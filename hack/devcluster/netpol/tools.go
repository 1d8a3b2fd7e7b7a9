//go:build tools

// Package tools records the NetworkPolicy controller the real node runs: kube-router with only its
// firewall (network-policy) controller on.
package tools

import (
	_ "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"
)
