//go:build tools

// Package tools records the KWOK controller command the dev cluster builds.
package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
