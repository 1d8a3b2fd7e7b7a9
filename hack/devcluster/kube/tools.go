//go:build tools

// Package tools records the Kubernetes commands the dev cluster builds: the control plane, and for the
// real worker node the kubelet and kube-proxy. fakegpu (our test double of a GPU device plugin) is built
// from this module too, against the same pinned k8s.io/kubelet API.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
