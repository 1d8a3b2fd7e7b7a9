"""The deployer: a pure builder (lease + manifest group -> Kubernetes objects) and the loop that
applies them with server-side apply, tears them down, and reads their state back."""
