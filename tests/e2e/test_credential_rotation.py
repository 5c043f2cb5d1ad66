"""Client credentials rotated while the gateway runs (docs/operations.md, "Rotating the client
credential"): a secret file rewritten in place, or swapped the way the kubelet updates a mounted
Secret (a new directory behind the `..data` link), and a certificate file replaced, are used by
the next sign-in and refresh, against the development IdP with the old credential revoked there.
No restart, no patching: the gateway notices the file by `stat`, or when the provider answers
`invalid_client`, reads it once more and retries once."""

from __future__ import annotations

import os
import secrets
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from support.browser import API
from support.certificates import certificate_pem, private_key_pem, rsa_key
from support.fixtures import Launch, Running, signed_in
from support.metrics import sample, scrape
from support.ports import free_port

from devidp.config import Client

EXPIRY = "msal_gateway_client_credential_expiry_timestamp_seconds"


def rewrite_in_place(path: Path, text: str) -> None:
    """Same file, same inode: truncated and written, as an editor or `echo >` does."""
    with path.open("r+", encoding="utf-8") as handle:
        handle.truncate(0)
        handle.write(text)


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


async def refresh(running: Running) -> None:
    response = await running.browser.session.post(running.url + "/.auth/refresh", headers=API)
    assert response.status == 200, await response.text()


@pytest.mark.parametrize("layout", ["in place", "kubelet"])
async def test_a_rotated_client_secret_file_is_used_without_a_restart(
    launch: Launch, idp: Any, tmp_path: Path, layout: str
) -> None:
    old, new = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    client_id = str(uuid.uuid4())
    idp.register_client(Client(client_id=client_id, client_secret=old))
    if layout == "kubelet":
        volume = KubeletVolume(tmp_path, "client-secret", old)
        secret_file, update = volume.path, volume.update
    else:
        secret_file = tmp_path / "client-secret"
        secret_file.write_text(old + "\n")
        update = lambda text: rewrite_in_place(secret_file, text + "\n")  # noqa: E731
    running = await launch(
        client_id=client_id,
        client_secret=None,
        client_secret_file=secret_file,
        scopes="api://upstream/read",
    )
    await signed_in(running)
    await refresh(running)  # the file was just looked at: the next look is a second away at most

    # As an operator rotates: add the new secret at the provider, update the Secret, and revoke
    # the old one at once (the worst order: the gateway may not have seen the file yet).
    idp.set_client_secrets(client_id, [old, new])
    update(new)
    idp.set_client_secrets(client_id, [new])
    idp.clear_log()

    await refresh(running)  # the session's refresh uses the new secret
    running.browser.jar.clear()
    await signed_in(running, "/again")  # and so does the next sign-in
    assert (await running.browser.get("/whoami", headers=API)).status == 200

    used = [r.form.get("client_secret") for r in idp.token_requests() if r.status == 200]
    assert used and set(used) == {new}
    refused = [r for r in idp.token_requests() if r.status != 200]
    assert all(r.form.get("client_secret") == old for r in refused)  # at most the retried ones


async def test_a_replaced_certificate_file_is_used_without_a_restart(
    launch: Launch, idp: Any, tmp_path: Path
) -> None:
    old_key, new_key = rsa_key(), rsa_key()
    old_cert, new_cert = certificate_pem(old_key, days=1), certificate_pem(new_key, days=90)
    client_id = str(uuid.uuid4())
    idp.register_client(Client(client_id=client_id, certificates_pem=(old_cert,)))
    volume = KubeletVolume(tmp_path, "tls.pem", private_key_pem(old_key) + old_cert)
    port = free_port()
    running = await launch(
        client_id=client_id,
        client_secret=None,
        client_certificate_file=volume.path,
        scopes="api://upstream/read",
        metrics_listen=f"127.0.0.1:{port}",
    )
    await signed_in(running)
    assert await expiry(port) == not_after(old_cert)
    idp.register_client(Client(client_id=client_id, certificates_pem=(new_cert,)))  # old revoked
    volume.update(private_key_pem(new_key) + new_cert)
    await refresh(running)
    running.browser.jar.clear()
    await signed_in(running, "/again")
    assert await expiry(port) == not_after(new_cert)  # the gauge follows the rotation


async def expiry(port: int) -> float:
    return sample(await scrape(port), f'{EXPIRY}{{kind="certificate"}}')


def not_after(pem: str) -> float:
    return x509.load_pem_x509_certificate(pem.encode()).not_valid_after_utc.timestamp()
