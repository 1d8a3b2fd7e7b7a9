"""The provider's container image, built from the real ``Dockerfile`` without a Docker engine.

buildah builds the Dockerfile (``--isolation chroot --storage-driver vfs``: no daemon, no user namespaces,
works as root on a plain VM). No base image can be pulled here, so the base the Dockerfile takes as its
``BASE`` argument is assembled from Debian packages with mmdebstrap (python3, its venv module, CA
certificates) and kept in buildah's local storage under a name that carries the hash of its recipe: it
is built once per recipe. buildah's layer cache keeps the dependency layer while ``requirements.lock``
is unchanged, so a rebuild after a code change only redoes the last layers.

The built image is pushed to the dev cluster's registry, from where the real node's containerd pulls it
like any image.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from provider.devcluster.errors import DevClusterError

SUITE = "bookworm"  # Debian 12: python3 is 3.11
MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
EXCLUDES = ("/usr/share/man/*", "/usr/share/doc/*", "/usr/share/locale/*", "/usr/share/info/*")
HOST_PACKAGES = {"buildah": "/usr/bin/buildah", "mmdebstrap": "/usr/bin/mmdebstrap"}
IMAGE = "localhost/gpu-provider"
BASE_IMAGE = "localhost/gpu-provider-base"
DEFAULT_CACHE = Path.home() / ".cache" / "gpu-provider" / "image"


def _say(message: str) -> None:
    print(f"image: {message}", file=sys.stderr, flush=True)


def ensure_host_packages() -> None:
    """buildah and mmdebstrap from Debian: installed when missing and we are root, else a clear error."""
    missing = [pkg for pkg, path in HOST_PACKAGES.items() if not Path(path).exists()]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise DevClusterError(f"building the image needs these Debian packages: {' '.join(missing)} (install as root)")
    _say(f"installing {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    if subprocess.run(cmd, env=env, capture_output=True, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise DevClusterError(f"apt-get install {' '.join(missing)} failed: {done.stderr[-1000:]}")


def ca_bundle() -> Path | None:
    """The CA bundle pip on this machine trusts (a TLS-intercepting proxy's CA is in it), if any."""
    for var in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        value = os.environ.get(var)
        if value and Path(value).is_file():
            return Path(value)
    return None


class ImageBuilder:
    def __init__(self, repo: Path, cache: Path = DEFAULT_CACHE) -> None:
        self.repo = repo
        self.cache = cache
        self.storage = cache / "storage"
        self.runroot = cache / "run"
        self.used_layers: set[str] = set()  # the images the last build made or reused (its layer cache)

    def _run(self, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        argv = ["buildah", "--storage-driver", "vfs", "--root", str(self.storage), "--runroot", str(self.runroot)]
        return subprocess.run([*argv, *args], capture_output=True, text=True, check=False, timeout=timeout)

    def buildah(self, *args: str, timeout: float = 1800) -> str:
        proc = self._run(*args, timeout=timeout)
        if proc.returncode != 0:
            raise DevClusterError(f"buildah {args[0]} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
        return proc.stdout.strip()

    def exists(self, image: str) -> bool:
        return self._run("inspect", "--type", "image", image, timeout=60).returncode == 0

    # -- the base, from Debian packages ----------------------------------------------------------------
    @staticmethod
    def base_recipe() -> str:
        return json.dumps({"suite": SUITE, "mirror": MIRROR, "packages": BASE_PACKAGES, "excludes": EXCLUDES})

    def base(self) -> str:
        """``localhost/gpu-provider-base:<recipe hash>``, assembled with mmdebstrap when not stored yet."""
        tag = hashlib.sha256(self.base_recipe().encode()).hexdigest()[:16]
        name = f"{BASE_IMAGE}:{tag}"
        if self.exists(name):
            return name
        _say(f"assembling the base image from Debian {SUITE} packages ({', '.join(BASE_PACKAGES)})")
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="gpu-provider-base-") as tmp:
            tar = Path(tmp) / "rootfs.tar"
            argv = [
                "mmdebstrap",
                "--variant=essential",
                "--mode=root",
                "--format=tar",
                f"--include={','.join(BASE_PACKAGES)}",
                *[f"--dpkgopt=path-exclude={p}" for p in EXCLUDES],
                SUITE,
                str(tar),
                MIRROR,
            ]
            proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=1800)
            if proc.returncode != 0:
                raise DevClusterError(f"mmdebstrap failed:\n{proc.stderr[-3000:]}")
            container = self.buildah("from", "scratch")
            try:
                self.buildah("add", container, str(tar), "/")
                self.buildah(
                    "config",
                    "--env",
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "--env",
                    "LANG=C.UTF-8",
                    "--cmd",
                    "/usr/bin/python3",
                    container,
                )
                self.buildah("commit", "-q", container, name)
            finally:
                self.buildah("rm", container)
        _say(f"base image {name} in {time.monotonic() - started:.0f}s")
        return name

    # -- the image ---------------------------------------------------------------------------------------
    def revision(self) -> str:
        proc = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=self.repo, capture_output=True, text=True, check=False
        )
        return proc.stdout.strip() if proc.returncode == 0 else "unknown"

    def build(self, tag: str = "dev") -> str:
        """Build the repository's Dockerfile onto the Debian base; returns ``localhost/gpu-provider:TAG``."""
        ensure_host_packages()
        base = self.base()
        name = f"{IMAGE}:{tag}"
        _say(f"building {name} from {self.repo / 'Dockerfile'}")
        started = time.monotonic()
        args = ["build", "--isolation", "chroot", "--layers", "--pull-never", "-f", str(self.repo / "Dockerfile")]
        args += ["--build-arg", f"BASE={base}", "--build-arg", f"REVISION={self.revision()}", "-t", name]
        bundle = ca_bundle()
        if bundle is not None:
            args += ["--secret", f"id=ca-bundle,src={bundle}"]
        self.cache.mkdir(parents=True, exist_ok=True)
        with open(self.cache / "build.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time in this storage: the clean-up below is safe
            self._run("rm", "--all", timeout=300)  # working containers an interrupted build left behind
            out = self.buildah(*args, str(self.repo))
            self.used_layers = set(re.findall(r"--> (?:Using cache )?([0-9a-f]{11,64})", out))
            self._prune(self.used_layers)
        _say(f"built {name} in {time.monotonic() - started:.0f}s")
        return name

    def dangling(self) -> list[str]:
        return self._run("images", "--filter", "dangling=true", "--format", "{{.ID}}", timeout=300).stdout.split()

    def _prune(self, used: set[str]) -> None:
        """Remove unnamed images this build did not use (older builds' stages and layers). With vfs storage
        every layer is a full copy of the root file system, so without this the cache grows by about
        700 MB a build; the layers this build used stay, so the next build of the same lock reuses them."""
        stale = [i for i in self.dangling() if not any(u.startswith(i) or i.startswith(u) for u in used)]
        if stale:
            self._run("rmi", *stale, timeout=600)

    def inspect(self, image: str) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self.buildah("inspect", "--type", "image", image))
        return found

    def push(self, image: str, registry: str, name: str = "gpu-provider") -> str:
        """Push to ``registry`` (HOST:PORT, plain HTTP); returns the pull reference by digest."""
        tag = image.rsplit(":", 1)[-1]
        with tempfile.TemporaryDirectory(prefix="gpu-provider-push-") as tmp:
            digest_file = Path(tmp) / "digest"
            self.buildah(
                "push",
                "--tls-verify=false",
                "--digestfile",
                str(digest_file),
                image,
                f"docker://{registry}/{name}:{tag}",
            )
            digest = digest_file.read_text().strip()
        return f"{registry}/{name}@{digest}"
