"""Reading the gateway's Prometheus metrics the way Prometheus does: a scrape of its metrics
listener, and the samples and build-info labels in it."""

from __future__ import annotations

import platform
import re
from importlib import metadata

import aiohttp


async def scrape(port: int) -> str:
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return await response.text()


def sample(text: str, name: str) -> float:
    """The value of one sample line, e.g. 'msal_gateway_signins_total{outcome="success"}'."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exported:\n{text}")


def expected_build_info() -> dict[str, str]:
    """The build-info labels this process's own package metadata predicts."""
    return {
        "version": metadata.version("msal-gateway"),
        "python": platform.python_version(),
        "aiohttp": metadata.version("aiohttp"),
        "msal": metadata.version("msal"),
    }


def build_info(text: str) -> tuple[dict[str, str], float]:
    """The labels and value of the one msal_gateway_build_info series of a scrape."""
    [line] = [line for line in text.splitlines() if line.startswith("msal_gateway_build_info{")]
    labels, _, value = line.rpartition(" ")
    return dict(re.findall(r'(\w+)="([^"]*)"', labels)), float(value)
