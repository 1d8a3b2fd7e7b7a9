"""The dev cluster's OCI registry on loopback, and images assembled without Docker.

The registry is go-containerregistry's (``crane registry serve``, blobs on disk in the state directory,
manifests in memory for the cluster's lifetime). An image is a directory packed into one layer
(deterministic: sorted, owned by root, mtime 0), pushed with ``crane append`` onto an empty base and given
its entrypoint with ``crane mutate``. Pods pull it by its 127.0.0.1:PORT/NAME reference, the way they pull
from any registry in production (containerd is told the registry speaks plain HTTP).
"""

from __future__ import annotations

import io
import os
import re
import socket
import subprocess
import tarfile
import tempfile
from pathlib import Path

from provider.devcluster.errors import DevClusterError

NAME = re.compile(
    r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$"
)
BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static
BUSYBOX_APPLETS = (
    "sh", "cat", "echo", "env", "sleep", "ls", "head", "tail", "dd", "nc", "httpd", "nslookup", "hostname",
    "true", "false", "printf", "mkdir", "rm", "grep", "seq", "wc", "id", "kill", "ps", "date",
)  # fmt: skip


def answers(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


def layer_from_dir(rootfs: Path) -> bytes:
    """One uncompressed tar layer of ``rootfs``: sorted, root-owned, mtime 0, so equal trees give equal layers."""
    if not rootfs.is_dir():
        raise DevClusterError(f"{rootfs} is not a directory")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(rootfs):
            dirnames.sort()
            for name in sorted(dirnames) + sorted(filenames):
                path = Path(dirpath) / name
                info = tar.gettarinfo(str(path), arcname=str(path.relative_to(rootfs)))
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mtime = 0
                if info.isfile():
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
    return buf.getvalue()


def busybox_rootfs(target: Path) -> Path:
    """A root filesystem of busybox-static with the applets the tests and demo use, plus /etc basics."""
    if not BUSYBOX.is_file():
        raise DevClusterError(f"{BUSYBOX} is missing: install Debian's busybox-static (apt-get install busybox-static)")
    (target / "bin").mkdir(parents=True, exist_ok=True)
    (target / "etc").mkdir(exist_ok=True)
    (target / "tmp").mkdir(exist_ok=True)
    (target / "www").mkdir(exist_ok=True)
    data = BUSYBOX.read_bytes()
    (target / "bin" / "busybox").write_bytes(data)
    (target / "bin" / "busybox").chmod(0o755)
    for applet in BUSYBOX_APPLETS:
        link = target / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    (target / "etc" / "passwd").write_text("root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    (target / "etc" / "group").write_text("root:x:0:\nnobody:x:65534:\n")
    (target / "www" / "index.html").write_text("hello from the dev cluster\n")
    return target


class Registry:
    def __init__(self, crane: Path, port: int) -> None:
        self.crane = crane
        self.port = port
        self.host = f"127.0.0.1:{port}"

    def argv(self, storage: Path) -> list[str]:
        return [str(self.crane), "registry", "serve", f"--address={self.host}", f"--disk={storage}"]

    def _crane(self, *args: str) -> str:
        proc = subprocess.run(
            [str(self.crane), *args, "--insecure"], capture_output=True, text=True, check=False, timeout=300
        )
        if proc.returncode != 0:
            raise DevClusterError(f"crane {args[0]} failed: {proc.stderr.strip()[-2000:]}")
        return proc.stdout.strip()

    def push_layer(self, name: str, layer: bytes, entrypoint: list[str], cmd: list[str] | None = None) -> str:
        """Push a one-layer image ``name`` (``repo[:tag]``); returns its pull reference, by digest."""
        if not NAME.match(name):
            raise DevClusterError(f"image name {name!r}: use lowercase repo[/path][:tag], e.g. tools/echo:1")
        ref = f"{self.host}/{name if ':' in name.rsplit('/', 1)[-1] else name + ':latest'}"
        with tempfile.TemporaryDirectory(prefix="gpu-provider-image-") as tmp:
            tar = Path(tmp) / "layer.tar"
            tar.write_bytes(layer)
            self._crane("append", "--oci-empty-base", "-f", str(tar), "-t", ref)
        args = ["mutate", ref, "--set-platform=linux/amd64", "-t", ref]
        args += [f"--entrypoint={','.join(entrypoint)}"] if entrypoint else []
        args += [f"--cmd={','.join(cmd)}"] if cmd else []
        self._crane(*args)
        digest = self._crane("digest", ref)
        return f"{ref.rsplit(':', 1)[0]}@{digest}" if digest.startswith("sha256:") else ref

    def build(self, name: str, rootfs: Path, entrypoint: list[str], cmd: list[str] | None = None) -> str:
        return self.push_layer(name, layer_from_dir(rootfs), entrypoint, cmd)

    def push_busybox(self, name: str = "busybox:dev") -> str:
        with tempfile.TemporaryDirectory(prefix="gpu-provider-busybox-") as tmp:
            return self.build(name, busybox_rootfs(Path(tmp)), ["/bin/sh"])

    def push_binary(self, name: str, binary: Path, args: list[str] | None = None) -> str:
        """An image of one static binary at /BINARY_NAME (e.g. the pause process)."""
        with tempfile.TemporaryDirectory(prefix="gpu-provider-image-") as tmp:
            root = Path(tmp)
            target = root / binary.name
            target.write_bytes(binary.read_bytes())
            target.chmod(0o755)
            return self.build(name, root, [f"/{binary.name}", *(args or [])])
