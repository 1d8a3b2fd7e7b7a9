"""Akash SDL (versions 2.0 and 2.1): parse, validate, and derive the manifest, group specs and version.

A pure library: no I/O, nothing of ``provider``. ``parse`` is the entry point; ``SdlError`` is the only
exception it raises, carrying every problem with its YAML path, line and column.
"""

from sdl.derive import group_limit_problems
from sdl.errors import Problem, SdlError
from sdl.parse import Deployment, parse
from sdl.spec import GroupSpec, Manifest, ManifestGroup, ManifestService, ResourceUnit, canonical_json

__all__ = [
    "Deployment",
    "GroupSpec",
    "Manifest",
    "ManifestGroup",
    "ManifestService",
    "Problem",
    "ResourceUnit",
    "SdlError",
    "canonical_json",
    "group_limit_problems",
    "parse",
]
