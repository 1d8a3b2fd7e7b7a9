//go:build tools

// Package tools records the helm command the dev cluster builds.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
