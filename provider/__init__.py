"""gpu-provider: the provider daemon that sells Kubernetes GPU capacity on a decentralized marketplace."""
