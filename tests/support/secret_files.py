"""Secret files changed the ways operators and Kubernetes change them, for the tests of files the
gateway reads again while it runs (client secret, certificate, CA bundle, admin token)."""

from __future__ import annotations

import os
from pathlib import Path


def rewrite_in_place(path: Path, text: str) -> None:
    """Same file, same inode: truncated and written, as an editor or `echo >` does."""
    with path.open("r+", encoding="utf-8") as handle:
        handle.truncate(0)
        handle.write(text)


def rewrite_unseen(path: Path, text: str) -> None:
    """Rewritten in place with the same size and modification time, so that `stat` shows no
    change (as a same-size rewrite within a coarse file system timestamp does): only a reader
    that opens the file finds the new content."""
    before = os.stat(path)
    assert len(text.encode()) == before.st_size, "the same size, or stat tells"
    rewrite_in_place(path, text)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    seen = (after.st_dev, after.st_ino, after.st_size, after.st_mtime_ns)
    assert seen == (before.st_dev, before.st_ino, before.st_size, before.st_mtime_ns)


class KubeletVolume:
    """A Secret volume laid out as the kubelet lays it out: `name -> ..data/name`,
    `..data -> ..<timestamp>/`; an update writes a new directory and swaps `..data` atomically."""

    def __init__(self, root: Path, name: str, text: str) -> None:
        self.root, self.name, self.generation = root, name, 0
        self._write(text)
        (root / name).symlink_to(Path("..data") / name)

    def _write(self, text: str) -> None:
        self.generation += 1
        folder = self.root / f"..2026_{self.generation:02d}"
        folder.mkdir()
        (folder / self.name).write_text(text)
        link = self.root / "..data_tmp"
        link.symlink_to(folder.name)
        os.replace(link, self.root / "..data")  # rename(2): the swap is atomic

    def update(self, text: str) -> None:
        old = self.root / f"..2026_{self.generation:02d}"
        self._write(text)
        (old / self.name).unlink()
        old.rmdir()

    @property
    def path(self) -> Path:
        return self.root / self.name
