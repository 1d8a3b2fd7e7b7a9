"""The Akash devnet tests: the session's devnet and its state are the `devnet` and `chain` fixtures of
tests/conftest.py (the cluster session's end-to-end test uses them too)."""
