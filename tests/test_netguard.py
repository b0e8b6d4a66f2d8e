"""The address guard decides on resolved addresses: every kind of private address is refused,
named hosts and networks are let through, and a refusal names the address and why."""

from __future__ import annotations

import asyncio

import pytest

from crawlcluster import settings
from crawlcluster.errors import ConfigurationError
from crawlcluster.netguard import AddressPolicy, AddressRefused, parse_allow_list, refused_kind


@pytest.mark.parametrize("address, kind", [
    ("127.0.0.2", "loopback"),
    ("169.254.169.254", "cloud metadata"),
    ("169.254.1.1", "link-local"),
    ("10.0.0.1", "RFC 1918"),
    ("172.31.255.255", "RFC 1918"),
    ("192.168.1.1", "RFC 1918"),
    ("100.100.100.200", "carrier-grade NAT"),
    ("0.0.0.0", "this network"),
    ("224.0.0.251", "multicast"),
    ("255.255.255.255", "reserved"),
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("fd00:ec2::254", "unique-local"),
    ("fe80::1", "link-local"),
    ("::ffff:127.0.0.1", "loopback address inside an IPv6"),
    ("::ffff:169.254.169.254", "cloud metadata address inside an IPv6"),
    ("64:ff9b::a00:1", "RFC 1918) inside an IPv6"),
    ("2002:c0a8:101::1", "RFC 1918) inside an IPv6"),
])
def test_private_addresses_are_refused_and_named(address, kind):
    assert kind in (refused_kind(address) or "")


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address):
    assert refused_kind(address) is None


def _policy(**env: str) -> AddressPolicy:
    return AddressPolicy.from_settings(settings.Settings.load({f"CRAWLCLUSTER_{k.upper()}": v
                                                               for k, v in env.items()}))


def test_a_mapped_name_is_checked_at_its_mapped_address_before_any_connection():
    policy = _policy(host_map="inside.test=127.0.0.2,outside.test=93.184.215.14")
    with pytest.raises(AddressRefused) as refused:
        asyncio.run(policy.allowed_addresses("inside.test", 80))
    assert "inside.test:80 resolves to 127.0.0.2, a loopback address" in str(refused.value)
    assert asyncio.run(policy.allowed_addresses("outside.test", 80)) == ["93.184.215.14"]
    # the real resolver: localhost is loopback, refused as well
    with pytest.raises(AddressRefused):
        asyncio.run(policy.allowed_addresses("localhost", 6379))


def test_allow_lists_name_hosts_ports_and_networks():
    policy = _policy(host_map="wiki.corp=10.1.2.3,db.corp=10.9.9.9",
                     private_allow="wiki.corp:8080,192.168.0.0/16")
    assert asyncio.run(policy.allowed_addresses("wiki.corp", 8080)) == ["10.1.2.3"]
    with pytest.raises(AddressRefused):  # the same host on another port is not named
        asyncio.run(policy.allowed_addresses("wiki.corp", 6379))
    assert asyncio.run(policy.allowed_addresses("192.168.7.7", 80)) == ["192.168.7.7"]
    # a project's start hosts are trusted as given, port included
    trusted = policy.trusting(["db.corp:5432"])
    assert asyncio.run(trusted.allowed_addresses("db.corp", 5432)) == ["10.9.9.9"]
    with pytest.raises(AddressRefused):
        asyncio.run(trusted.allowed_addresses("db.corp", 22))
    assert asyncio.run(_policy(ssrf_guard="false").allowed_addresses("127.0.0.1", 80)) == ["127.0.0.1"]


@pytest.mark.parametrize("env, value", [("PRIVATE_ALLOW", "http://x/"), ("PRIVATE_ALLOW", "host:port"),
                                        ("HOST_MAP", "a.test"), ("HOST_MAP", "a.test=not-an-ip")])
def test_bad_guard_settings_are_refused_when_the_process_starts(env, value):
    with pytest.raises(ConfigurationError, match=f"CRAWLCLUSTER_{env}"):
        settings.Settings.load({f"CRAWLCLUSTER_{env}": value})


def test_allow_list_entries_are_normalised():
    assert parse_allow_list("Wiki.Corp., 10.1.2.3, [::1]:8080, 10.0.0.0/8") == (
        "wiki.corp", "10.1.2.3/32", "::1:8080", "10.0.0.0/8")
