"""A gateway process's ``/metrics``, parsed with prometheus-client's own parser."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.gateway_process import GatewayProcess

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
"""Each sample's value by its name and labels."""


def scrape(gw: GatewayProcess) -> tuple[str, Samples]:
    """The exposition's text and its samples."""
    text = httpx.get(f"{gw.url}/metrics", timeout=10).text
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The sample named ``name`` with exactly ``labels`` (None: not exported)."""
    return samples.get((name, frozenset(labels.items())))
