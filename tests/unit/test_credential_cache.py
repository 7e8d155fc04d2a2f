"""The credential cache of runbook.api.cache, on real files: what it keeps, what it
refuses, and the lock that makes one refresh token good for one exchange."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from runbook.api.cache import CachedRefresh, CredentialCache, sha256_hex
from runbook.errors import JournalError
from tests.support.paths import ROOT

TOKEN_URL = "https://auth.example.com/oauth/token"
CLIENT = "runbook-cron"
SECRET = "rt-0123456789-SECRET"
ORIGIN = sha256_hex("the environment's refresh token")
ROOT_ONLY = pytest.mark.skipif(os.getuid() != 0, reason="chown to another user needs root")


def entry(token: str = SECRET, issued_at: float = 1796000000.5) -> CachedRefresh:
    return CachedRefresh(token, issued_at, ORIGIN)


def cache_in(tmp_path: Path) -> CredentialCache:
    return CredentialCache(tmp_path / "state", TOKEN_URL, CLIENT)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def shown(error: BaseException) -> str:
    """Every message and argument of ``error`` and of the exceptions chained to it."""
    parts: list[str] = []
    current: BaseException | None = error
    while current is not None:
        parts += [str(current), repr(current.args), repr(vars(current))]
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


def test_a_round_trip_keeps_the_three_fields_and_nothing_else(tmp_path: Path) -> None:
    cache = cache_in(tmp_path)
    digest = sha256_hex(f"{TOKEN_URL}\n{CLIENT}")
    assert cache.path == tmp_path / "state" / "credentials" / f"{digest}.json"
    assert cache.lock_path == cache.path.with_name(f"{digest}.json.lock")
    assert mode(cache.path.parent) == 0o700
    assert cache.read() is None
    with cache.lock():
        cache.write(entry())
    assert mode(cache.path) == 0o600  # as written, before a read could tighten it
    assert cache.read() == entry()
    assert mode(cache.lock_path) == 0o600
    assert json.loads(cache.path.read_text()) == {
        "version": 1,
        "refresh_token": SECRET,
        "issued_at": 1796000000.5,
        "env_sha256": ORIGIN,
    }
    cache.write(entry("rt-next", 1796000100.0))
    assert cache.read() == entry("rt-next", 1796000100.0)
    assert sorted(p.name for p in cache.path.parent.iterdir()) == sorted(
        [cache.path.name, cache.lock_path.name]
    )
    other = CredentialCache(tmp_path / "state", TOKEN_URL, "another-client")
    assert other.path != cache.path and other.read() is None


def test_a_cache_others_may_read_is_made_private(tmp_path: Path) -> None:
    cache = cache_in(tmp_path)
    cache.write(entry())
    cache.path.chmod(0o644)
    cache.path.parent.chmod(0o755)
    assert cache.read() == entry()
    assert mode(cache.path) == 0o600
    assert mode(cache.path.parent) == 0o700


def test_the_repr_hides_the_refresh_token() -> None:
    text = repr(entry())
    assert SECRET not in text and SECRET not in str(entry())
    assert (
        text == f"CachedRefresh(refresh_token='***', issued_at=1796000000.5, env_sha256={ORIGIN!r})"
    )


GOOD = {"version": 1, "refresh_token": SECRET, "issued_at": 1.5, "env_sha256": ORIGIN}
CORRUPT = {
    "garbage": f"\x00\xff not json {SECRET}".encode("latin-1"),
    "truncated": json.dumps(GOOD).encode()[:-3],
    "array": json.dumps([SECRET, 1.5, ORIGIN]).encode(),
    "missing field": json.dumps({k: v for k, v in GOOD.items() if k != "env_sha256"}).encode(),
    "extra field": json.dumps({**GOOD, "access_token": SECRET}).encode(),
    "token not a string": json.dumps({**GOOD, "refresh_token": [SECRET]}).encode(),
    "empty token": json.dumps({**GOOD, "refresh_token": ""}).encode(),
    "issued_at a string": json.dumps({**GOOD, "issued_at": SECRET}).encode(),
    "issued_at a bool": json.dumps({**GOOD, "issued_at": True}).encode(),
    "issued_at NaN": json.dumps({**GOOD, "issued_at": float("nan")}).encode(),
    "issued_at past floats": json.dumps({**GOOD, "issued_at": 10**400}).encode(),
    "digest not hex": json.dumps({**GOOD, "env_sha256": SECRET}).encode(),
    "other version": json.dumps({**GOOD, "version": 2}).encode(),
    "deep": b"[" * 20000 + SECRET.encode() + b"]" * 20000,
    "too large": json.dumps({**GOOD, "refresh_token": SECRET * 4000}).encode(),
}


@pytest.mark.parametrize("content", CORRUPT.values(), ids=CORRUPT.keys())
def test_a_damaged_cache_is_refused_without_showing_it(tmp_path: Path, content: bytes) -> None:
    cache = cache_in(tmp_path)
    cache.write(entry())
    cache.path.write_bytes(content)
    with pytest.raises(JournalError) as caught:
        cache.read()
    assert caught.value.exit_code == 5
    message = str(caught.value)
    assert message.startswith(f"the credential cache {cache.path} is damaged; move it aside")
    assert "starts again from the environment's refresh token" in message
    assert "new credentials are needed" in message
    assert SECRET not in shown(caught.value)
    assert "rt-0123" not in shown(caught.value)
    assert cache.path.read_bytes() == content  # left for whoever looks into it


def test_the_read_is_capped_at_64_kib(tmp_path: Path) -> None:
    cache = cache_in(tmp_path)
    fits = json.dumps({**GOOD, "refresh_token": "r" * (64 * 1024 - 200)}).encode()
    assert len(fits) <= 64 * 1024
    cache.path.write_bytes(fits)
    cache.path.chmod(0o600)
    assert cache.read() is not None
    cache.path.write_bytes(fits + b" " * (64 * 1024 - len(fits) + 1))  # valid JSON, too long
    with pytest.raises(JournalError, match="is damaged"):
        cache.read()


@ROOT_ONLY
def test_another_users_cache_lock_or_directory_is_refused(tmp_path: Path) -> None:
    cache = cache_in(tmp_path)
    cache.write(entry())
    with cache.lock():
        pass
    os.chown(cache.path, 12345, 12345)
    with pytest.raises(JournalError) as caught:
        cache.read()
    assert caught.value.exit_code == 5
    assert str(caught.value) == (
        f"the credential cache {cache.path} belongs to another user (uid 12345); runbook "
        "keeps refresh tokens only where you alone own it: choose another with --state-dir "
        "or RUNBOOK_STATE_DIR"
    )
    with pytest.raises(JournalError, match=r"credential cache .* belongs to another user"):
        cache.write(entry("rt-next"))
    os.chown(cache.path, 0, 0)
    assert cache.read() == entry()
    os.chown(cache.lock_path, 12345, 12345)
    with pytest.raises(JournalError, match=r"lock file .* belongs to another user"), cache.lock():
        pytest.fail("the lock was taken")
    os.chown(cache.lock_path, 0, 0)
    os.chown(cache.path.parent, 12345, 12345)
    with pytest.raises(JournalError, match=r"credentials directory .* belongs to another user"):
        cache_in(tmp_path)
    with pytest.raises(JournalError, match=r"credentials directory .* belongs to another user"):
        cache.read()
    state = tmp_path / "foreign"
    state.mkdir()
    os.chown(state, 12345, 12345)
    with pytest.raises(JournalError, match=r"the state dir .* belongs to another user"):
        CredentialCache(state, TOKEN_URL, CLIENT)


def test_files_or_directories_others_may_write_are_refused(tmp_path: Path) -> None:
    cache = cache_in(tmp_path)
    cache.write(entry())
    with cache.lock():
        pass
    cache.path.chmod(0o620)
    with pytest.raises(JournalError) as caught:
        cache.read()
    assert caught.value.exit_code == 5
    assert str(caught.value) == (
        f"the credential cache {cache.path} can be written by other users (mode 0620); make "
        f"it yours alone (chmod go-w {cache.path}) or choose another with --state-dir"
    )
    cache.path.chmod(0o600)
    cache.lock_path.chmod(0o602)
    with (
        pytest.raises(JournalError, match=r"lock file .* can be written by other users"),
        cache.lock(),
    ):
        pytest.fail("the lock was taken")
    cache.lock_path.chmod(0o600)
    cache.path.parent.chmod(0o770)
    with pytest.raises(JournalError, match=r"credentials directory .* \(mode 0770\)"):
        cache_in(tmp_path)
    with pytest.raises(JournalError, match=r"credentials directory .* \(mode 0770\)"):
        cache.write(entry("rt-next"))
    cache.path.parent.chmod(0o700)
    assert cache.read() == entry()
    (tmp_path / "state").chmod(0o777)
    with pytest.raises(JournalError, match=r"the state dir .* \(mode 0777\)"):
        cache_in(tmp_path)


def test_planted_links_are_refused_and_their_targets_untouched(tmp_path: Path) -> None:
    cache = cache_in(tmp_path)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    victim.chmod(0o600)
    cache.path.symlink_to(victim)
    with pytest.raises(JournalError, match=r"the credential cache .* is a link") as caught:
        cache.read()
    assert caught.value.exit_code == 5
    with pytest.raises(JournalError, match=r"the credential cache .* is not a regular file"):
        cache.write(entry())
    assert cache.path.is_symlink()
    cache.lock_path.symlink_to(tmp_path / "nowhere")  # a dangling one: O_CREAT would follow it
    with pytest.raises(JournalError, match=r"lock file .* is a link"), cache.lock():
        pytest.fail("the lock was taken")
    assert not (tmp_path / "nowhere").exists()
    cache.lock_path.unlink()
    cache.lock_path.symlink_to(victim)
    with pytest.raises(JournalError, match=r"lock file .* is a link"), cache.lock():
        pytest.fail("the lock was taken")
    assert victim.read_text() == "precious"
    assert mode(victim) == 0o600

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    state = tmp_path / "linked"
    state.mkdir(mode=0o700)
    (state / "credentials").symlink_to(elsewhere)
    with pytest.raises(JournalError, match=r"credentials directory .* is not a directory"):
        CredentialCache(state, TOKEN_URL, CLIENT)
    (state / "credentials").unlink()
    (state / "credentials").symlink_to(tmp_path / "gone")  # a dangling one
    with pytest.raises(JournalError, match=r"credentials directory .* is not a directory"):
        CredentialCache(state, TOKEN_URL, CLIENT)
    assert list(elsewhere.iterdir()) == []
    assert not (tmp_path / "gone").exists()
    assert victim.read_text() == "precious"


def test_the_lock_file_is_never_replaced(tmp_path: Path) -> None:
    cache = cache_in(tmp_path)
    with cache.lock():
        cache.write(entry())
    before = os.stat(cache.lock_path).st_ino
    # held open, the first cache file keeps its inode: a file renamed over it cannot be
    # given the same number again (a freed inode may be reused at once)
    with open(cache.path, "rb") as first:
        cache_inode = os.fstat(first.fileno()).st_ino
        for number in range(3):
            with cache.lock():
                assert cache.read() is not None
                cache.write(entry(f"rt-{number}"))
        assert os.stat(cache.lock_path).st_ino == before
        assert os.stat(cache.path).st_ino != cache_inode  # the cache is renamed over
    assert cache.read() == entry("rt-2")


def _try_lock(path: Path) -> bool:
    """Whether a fresh open of ``path`` gets the flock right now."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


CHILD = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[4])
from runbook.api.cache import CredentialCache
cache = CredentialCache(Path(sys.argv[1]), sys.argv[2], sys.argv[3])
with cache.lock():
    print("locked", flush=True)
    sys.stdin.readline()
print("released", flush=True)
"""


def test_the_lock_excludes_another_process(tmp_path: Path) -> None:
    cache = cache_in(tmp_path)
    with cache.lock():
        pass
    assert _try_lock(cache.lock_path)  # released after the block
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path / "state"), TOKEN_URL, CLIENT, str(ROOT)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    got = threading.Event()
    errors: list[BaseException] = []

    def take() -> None:
        try:
            with cache.lock():
                got.set()
        except BaseException as exc:
            errors.append(exc)

    waiter = threading.Thread(target=take)
    try:
        assert child.stdout.readline() == "locked\n"
        waiter.start()
        assert not _try_lock(cache.lock_path)
        assert not got.is_set()
        assert waiter.is_alive()
        child.stdin.write("go\n")
        child.stdin.flush()
        assert got.wait(timeout=60)
        assert child.stdout.readline() == "released\n"
    finally:
        child.stdin.close()
        assert child.wait(timeout=60) == 0
        child.stdout.close()
        waiter.join(timeout=60)
    assert errors == []
    assert _try_lock(cache.lock_path)


@pytest.mark.parametrize("failing", ["replace", "fsync", "write"])
def test_a_failed_write_keeps_the_previous_cache_and_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    cache = cache_in(tmp_path)
    cache.write(entry())
    before = cache.path.read_bytes()

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, failing, full)
    with pytest.raises(JournalError) as caught:
        cache.write(entry("rt-lost"))
    monkeypatch.undo()
    assert caught.value.exit_code == 5
    assert str(caught.value).startswith(
        f"the credential cache {cache.path} cannot be written: No space left on device; the "
        "new refresh token the authorization server just issued could not be kept"
    )
    assert "rt-lost" not in shown(caught.value)
    assert cache.path.read_bytes() == before
    assert [p.name for p in cache.path.parent.iterdir()] == [cache.path.name]
    assert cache.read() == entry()
