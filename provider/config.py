"""Settings from the environment. The only module that reads os.environ."""

from __future__ import annotations

import os


def node_name_from_env() -> str:
    """The node an agent runs on: the DaemonSet sets NODE_NAME from spec.nodeName."""
    return os.environ.get("NODE_NAME", "")
