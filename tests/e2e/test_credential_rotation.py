"""Client credentials rotated while the gateway runs (docs/operations.md, "Rotating the client
credential"): a secret file rewritten in place, or swapped the way the kubelet updates a mounted
Secret (a new directory behind the `..data` link), and a certificate file replaced, are used by
the next sign-in and refresh, against the development IdP with the old credential revoked there.
No restart, no patching: the gateway notices the file by `stat`, or when the provider answers
`invalid_client`, reads it once more and retries once (shown by the provider's request log, with a
rewrite `stat` cannot see, for sign-in, refresh and on-behalf-of). A CA bundle rewritten for a
provider whose certificate a new CA re-issued is trusted from then on."""

from __future__ import annotations

import asyncio
import logging
import secrets
import ssl
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from support.browser import API, Browser
from support.certificates import certificate_pem, private_key_pem, rsa_key
from support.fixtures import Launch, Running, signed_in
from support.gateway import PUBLIC_URL, in_process, settings_for
from support.idp import run_in_thread
from support.metrics import sample, scrape
from support.ports import free_port
from support.secret_files import KubeletVolume, rewrite_in_place, rewrite_unseen

from devidp import DevIdpConfig
from devidp.config import Client
from gateway.oidc.credential_files import MIN_CHECK_SECONDS

EXPIRY = "msal_gateway_client_credential_expiry_timestamp_seconds"


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


RETRIED = "the provider refused the client credential; retrying with the one just read"


async def secret_in_file(
    launch: Launch, idp: Any, tmp_path: Path, old: str, **settings: Any
) -> tuple[Running, str, Path]:
    """A gateway whose client secret `old` is in a file; the app registration's id and the file."""
    client_id = str(uuid.uuid4())
    idp.register_client(Client(client_id=client_id, client_secret=old))
    secret_file = tmp_path / "client-secret"
    secret_file.write_text(old + "\n")
    running = await launch(
        client_id=client_id, client_secret=None, client_secret_file=secret_file, **settings
    )
    return running, client_id, secret_file


def attempts(idp: Any) -> list[tuple[str | None, int | None]]:
    """The secret each token request presented, and the answer's status."""
    return [(r.form.get("client_secret"), r.status) for r in idp.token_requests()]


@pytest.mark.parametrize("call", ["refresh", "sign-in"])
async def test_invalid_client_reads_the_secret_file_again_and_retries_once(
    launch: Launch, idp: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture, call: str
) -> None:
    # The same length, and the rewrite keeps the size and the modification time: `stat` cannot
    # tell, so only the read that `invalid_client` triggers can find the new secret, whenever
    # the once-a-second check last ran. The retry path is the only way this call succeeds.
    old, new = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    running, client_id, secret_file = await secret_in_file(
        launch, idp, tmp_path, old, scopes="api://upstream/read"
    )
    await signed_in(running)
    idp.set_client_secrets(client_id, [new])  # rotated at the provider, the old one revoked
    rewrite_unseen(secret_file, new + "\n")
    idp.clear_log()
    caplog.clear()
    caplog.set_level(logging.INFO, logger="gateway.oidc")

    if call == "refresh":
        await refresh(running)
    else:
        running.browser.jar.clear()
        await signed_in(running, "/again")

    assert attempts(idp) == [(old, 401), (new, 200)]  # refused once, retried once, with the new
    assert caplog.text.count(RETRIED) == 1
    assert "the client credential changed on disk; using the new one" in caplog.text
    idp.clear_log()
    await refresh(running)  # and the new secret stays in use
    assert attempts(idp) == [(new, 200)]


async def test_a_still_refused_credential_is_retried_once_only(
    launch: Launch, idp: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old, revoked = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    running, client_id, secret_file = await secret_in_file(
        launch, idp, tmp_path, old, scopes="api://upstream/read"
    )
    await signed_in(running)
    idp.set_client_secrets(client_id, [secrets.token_urlsafe(24)])
    rewrite_unseen(secret_file, revoked + "\n")  # a new secret in the file, but not the right one
    idp.clear_log()
    response = await running.browser.session.post(running.url + "/.auth/refresh", headers=API)
    assert response.status == 502
    assert "invalid_client" in await response.text()
    assert attempts(idp) == [(old, 401), (revoked, 401)]  # one retry, never a loop
    assert "GATEWAY_CLIENT_SECRET_FILE" in caplog.text  # the setting to fix


async def test_on_behalf_of_retries_after_invalid_client_with_the_secret_just_read(
    launch: Launch, idp: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old, new = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    client_id = str(uuid.uuid4())
    own_api = f"api://{client_id}"
    idp.register_client(Client(client_id=client_id, client_secret=old))
    secret_file = tmp_path / "client-secret"
    secret_file.write_text(old + "\n")
    running = await launch(
        client_id=client_id,
        client_secret=None,
        client_secret_file=secret_file,
        scopes="api://upstream/read",
        api={"audiences": own_api, "upstream_token": "on_behalf_of"},
    )
    caller = {**API, "Authorization": "Bearer " + idp.issue_access_token(scope=f"{own_api}/x")}
    assert (await running.browser.get("/before", headers=caller)).status == 200
    idp.set_client_secrets(client_id, [new])
    rewrite_unseen(secret_file, new + "\n")
    idp.clear_log()
    caplog.clear()
    caplog.set_level(logging.INFO, logger="gateway.oidc")

    # Another caller: its token is not in the gateway's on-behalf-of cache yet.
    other = {
        **API,
        "Authorization": "Bearer " + idp.issue_access_token("bob", scope=f"{own_api}/x"),
    }
    response = await running.browser.get("/after", headers=other)
    assert response.status == 200, await response.text()
    assert attempts(idp) == [(old, 401), (new, 200)]
    assert all(r.form.get("requested_token_use") == "on_behalf_of" for r in idp.token_requests())
    assert caplog.text.count(RETRIED) == 1


async def test_a_ca_bundle_rewritten_for_a_new_provider_ca_is_trusted_without_a_restart(
    upstream: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The provider's TLS certificate is re-issued by a new CA while the gateway runs (a dev IdP
    of this test's own: the shared one must keep its CA). Until GATEWAY_CA_BUNDLE holds the new
    CA the provider is not trusted; once the kubelet swaps it in, sign-in and refresh work; and a
    CA taken out of the bundle stops being trusted on the connections already open too."""
    (tmp_path / "idp").mkdir()
    (tmp_path / "bundle").mkdir()
    runner, idp = run_in_thread(DevIdpConfig(port=0, state_dir=tmp_path / "idp"))
    try:
        trusted_first = idp.ca_path.read_text()
        bundle = KubeletVolume(tmp_path / "bundle", "ca.pem", trusted_first)
        settings = settings_for(idp, upstream.url, ca_bundle=bundle.path, scopes="api://up/read")
        trusted = ssl.create_default_context(cafile=str(idp.ca_path))  # the test's own browser
        async with in_process(settings) as (url, app):
            running = Running(url, app, settings, Browser(url, PUBLIC_URL, trusted))
            try:
                await signed_in(running)
                new_ca = runner.call(idp.reissue_tls_certificate(new_ca=True))
                trusted.load_verify_locations(cafile=str(new_ca))
                caplog.set_level(logging.INFO, logger="gateway.oidc")

                # The bundle still holds only the old CA: the provider is refused, fail closed.
                response = await running.browser.session.post(url + "/.auth/refresh", headers=API)
                assert response.status == 502, await response.text()

                bundle.update(new_ca.read_text())
                await asyncio.sleep(MIN_CHECK_SECONDS + 0.2)  # the once-a-second check is due
                await refresh(running)
                assert "GATEWAY_CA_BUNDLE changed" in caplog.text
                running.browser.jar.clear()
                await signed_in(running, "/again")

                # A CA taken out of the bundle is distrusted at once, even on the connections
                # to the provider that the gateway keeps open: they are dropped when it changes.
                old_ca = bundle.generation
                bundle.update(trusted_first)
                assert bundle.generation == old_ca + 1
                await asyncio.sleep(MIN_CHECK_SECONDS + 0.2)
                response = await running.browser.session.post(url + "/.auth/refresh", headers=API)
                assert response.status == 502, await response.text()
            finally:
                await running.browser.close()
    finally:
        runner.stop()
