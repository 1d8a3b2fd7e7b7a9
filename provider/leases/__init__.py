"""The lease lifecycle: won leases, manifest intake, deploys, the manifest watchdog and teardown."""
