"""A private, real dockerd for tests: its own socket, data root and exec root, and a busybox image made locally.

Nothing is pulled from a registry: the image is `docker import`ed from a rootfs built from busybox-static.
Any test package can use it through the session fixture in tests/engines/conftest.py, or start its own
`Dockerd` (stop it in a finally block).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import struct
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import docker
import docker.errors

BUSYBOX = "/bin/busybox"  # from the Debian package busybox-static (scripts/test-prereqs.sh installs it)
TEST_IMAGE = "aicdn-test/busybox:1"
# Applets linked into the rootfs; `sleep` keeps stand-in containers running.
APPLETS = ("sh", "sleep", "cat", "ls", "echo", "env", "nc", "httpd", "wget", "ps", "true")
LONG_RUNNING = ["sleep", "86400"]


class DockerdError(RuntimeError):
    pass


def busybox_rootfs_tar() -> bytes:
    """A tar of a minimal root filesystem: /bin/busybox, applet links, and the directories programs expect."""
    if not os.path.exists(BUSYBOX):
        raise DockerdError(f"{BUSYBOX} is missing: install the Debian package busybox-static")
    if _has_interpreter(BUSYBOX):
        # The image has no libc or loader: only the static build runs in it.
        raise DockerdError(f"{BUSYBOX} is dynamically linked: install the Debian package busybox-static")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for directory in ("bin", "etc", "tmp", "proc", "sys", "dev", "var", "root"):
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
        tar.add(BUSYBOX, arcname="bin/busybox")
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
        passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
        info = tarfile.TarInfo("etc/passwd")
        info.size = len(passwd)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(passwd))
    return buf.getvalue()


def _has_interpreter(path: str) -> bool:
    """True when the ELF file names a program interpreter (PT_INTERP), i.e. it is dynamically linked."""
    with open(path, "rb") as fh:
        header = fh.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2:  # only 64-bit ELF is expected here
            return False
        endian = "<" if header[5] == 1 else ">"
        (phoff,) = struct.unpack_from(endian + "Q", header, 0x20)
        phentsize, phnum = struct.unpack_from(endian + "HH", header, 0x36)
        for i in range(phnum):
            fh.seek(phoff + i * phentsize)
            (p_type,) = struct.unpack(endian + "I", fh.read(4))
            if p_type == 3:  # PT_INTERP
                return True
    return False


class Dockerd:
    """One dockerd process that this object started and alone stops; never touches another daemon."""

    def __init__(self, root: str | None = None) -> None:
        # Short paths: unix socket paths (containerd's live under exec-root) are limited to 107 bytes.
        self.root = Path(root or tempfile.mkdtemp(prefix="aicdn-dockerd-", dir="/tmp"))
        self.socket = self.root / "docker.sock"
        self.base_url = f"unix://{self.socket}"
        self.log_path = self.root / "dockerd.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.client: docker.DockerClient | None = None

    def start(self, timeout: float = 60.0) -> Dockerd:
        binary = shutil.which("dockerd")
        if binary is None:
            raise DockerdError("dockerd is not installed: install the Debian package docker.io")
        args = [
            binary,
            f"--host=unix://{self.socket}",
            f"--data-root={self.root / 'data'}",
            f"--exec-root={self.root / 'exec'}",
            f"--pidfile={self.root / 'dockerd.pid'}",
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-masq=false",
            "--userland-proxy=false",
            "--storage-driver=overlay2",
        ]
        log = open(self.log_path, "wb")  # noqa: SIM115 - the daemon writes to it for its whole life
        # Own session: a Ctrl-C in the terminal reaches pytest, which then stops the daemon cleanly.
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DockerdError(f"dockerd exited with {self.process.returncode}:\n{self.log_tail()}")
            if self.socket.exists():
                try:
                    client = docker.DockerClient(base_url=self.base_url, timeout=30)
                    client.ping()
                    self.client = client
                    return self
                except (docker.errors.DockerException, OSError):
                    pass
            time.sleep(0.1)
        self.stop()
        raise DockerdError(f"dockerd did not answer within {timeout:g}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def import_busybox_image(self, reference: str = TEST_IMAGE) -> str:
        assert self.client is not None
        repository, _, tag = reference.partition(":")
        self.client.api.import_image_from_data(busybox_rootfs_tar(), repository=repository, tag=tag or "latest")
        self.client.images.get(reference)  # raises if the import did not produce it
        return reference

    def remove_all(self) -> None:
        """Remove every container, network and volume of this daemon (it is ours alone)."""
        assert self.client is not None
        for container in self.client.containers.list(all=True):
            container.remove(force=True)
        for network in self.client.networks.list():
            if network.name not in ("none", "host", "bridge"):
                network.remove()
        for volume in self.client.volumes.list():
            volume.remove(force=True)

    def stop(self) -> None:
        if self.client is not None:
            with contextlib.suppress(docker.errors.DockerException, OSError):
                self.remove_all()
            self.client.close()
            self.client = None
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                # The daemon's session holds its own containerd and shims: kill exactly that group.
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.process = None
        for mount in sorted(_mounts_under(self.root), reverse=True):
            subprocess.run(["umount", "-l", mount], check=False, capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


def _mounts_under(root: Path) -> list[str]:
    try:
        with open("/proc/self/mounts") as fh:
            points = [line.split()[1] for line in fh]
    except OSError:
        return []
    prefix = str(root) + "/"
    return [p for p in points if p.startswith(prefix)]
