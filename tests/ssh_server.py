"""A real OpenSSH server for tests: ``/usr/sbin/sshd`` as a child process on 127.0.0.1.

Git over ssh is git's own programs on both ends (``ssh`` runs ``git-upload-pack``/``git-receive-pack``
on the server as the logged-in user), so the server here is the real one with a private
configuration in a temporary folder: a host key made by ``ssh-keygen`` for this server alone,
public keys only (no passwords, no PAM), the keys it accepts in its own ``authorized_keys``, and
only the user running the tests may log in. ``scripts/install-sshd.sh`` installs it (``make test``
calls it). Keys of clients are made by the tests with :func:`client_key`.
"""

from __future__ import annotations

import contextlib
import getpass
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"
KEYGEN = "ssh-keygen"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class KeyPair:
    private: str  # the whole OpenSSH private key file, as pasted into the ssh_key secret
    public: str  # one authorized_keys line


def client_key(folder: Path, name: str = "client") -> KeyPair:
    """A new ed25519 key pair without a passphrase."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    subprocess.run([KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", f"maestro-test-{name}", "-f", str(path)],
                   check=True, capture_output=True)
    return KeyPair(path.read_text(), (folder / f"{name}.pub").read_text().strip())


class SshServer:
    def __init__(self, root: Path) -> None:
        self.root = root  # the server's configuration, keys, pid file and log
        self.root.mkdir(parents=True, exist_ok=True)
        self.user = getpass.getuser()
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "sshd.log"
        self.authorized = root / "authorized_keys"
        self.authorized.touch()
        host = root / "host_ed25519"
        subprocess.run([KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "maestro-test-host", "-f", str(host)],
                       check=True, capture_output=True)
        self.host_key = host
        kind, blob = (root / "host_ed25519.pub").read_text().split()[:2]
        # What `ssh-keyscan -p <port> 127.0.0.1` prints: the line ssh_known_hosts takes.
        self.known_hosts = f"[127.0.0.1]:{self.port} {kind} {blob}"
        self.config = root / "sshd_config"
        self.config.write_text("\n".join([
            f"Port {self.port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {host}",
            f"PidFile {root / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.authorized}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            # The temporary folder is not root's 0755 chain that StrictModes demands.
            "StrictModes no",
            # Root may log in with a key only (the tests may well run as root in a container).
            "PermitRootLogin prohibit-password",
            f"AllowUsers {self.user}",
            "X11Forwarding no",
            "AllowTcpForwarding no",
            "PrintMotd no",
            "LogLevel VERBOSE",
            "",
        ]))

    def authorize(self, key: KeyPair) -> None:
        with self.authorized.open("a") as out:
            out.write(key.public + "\n")

    def url(self, path: Path) -> str:
        """The ssh:// URL of a repository on this machine (an absolute path)."""
        return f"ssh://{self.user}@127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        # sshd refuses to start without its privilege-separation folder (Debian's service makes it).
        with contextlib.suppress(PermissionError):
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        checked = subprocess.run([SSHD, "-t", "-f", str(self.config)], capture_output=True, text=True)
        assert checked.returncode == 0, f"sshd refuses its configuration: {checked.stderr}"
        # -D: stay in the foreground as our child; -E: its log in our folder, for a failing test.
        self.proc = subprocess.Popen([SSHD, "-D", "-f", str(self.config), "-E", str(self.log)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"sshd exited:\n{self.tail()}"
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                if s.recv(64).startswith(b"SSH-2.0-"):  # its banner: it accepts connections
                    return
            time.sleep(0.05)
        raise AssertionError(f"sshd did not listen on {self.port}:\n{self.tail()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def running_sshd(root: Path) -> Iterator[SshServer]:
    server = SshServer(root)
    server.start()
    try:
        yield server
    finally:
        server.stop()

