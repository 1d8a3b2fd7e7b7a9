//go:build tools

// Pins Prometheus and promtool: the tests start a real Prometheus that scrapes the provider, and check
// the chart's alert rules with `promtool test rules`.
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
