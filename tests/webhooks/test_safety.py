"""Which webhook targets are refused before any connection: URLs, addresses, the allow list.

Pure checks, no DNS and no sockets; refusing at connect time is tested with the sender.
"""

from __future__ import annotations

import ipaddress

import pytest

from service.webhooks.safety import AllowList, UnsafeTarget, check_address, check_url

PUBLIC = "93.184.216.34"  # a public address; nothing here connects anywhere


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:6379/",
        "http://[::ffff:127.0.0.1]/",
        "http://2130706433/",
        "http://0x7f.1/",
        "http://0177.0.0.1/",
        "http://127.1/",
        "http://localhost/",
        "http://localhost./",
        "http://api.localhost/",
        "http://redis:6379/",
        "http://169.254.169.254/latest/meta-data",
        "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 form of the metadata address
        "http://[2002:a00:1::1]/",  # 6to4 form of 10.0.0.1
        "http://[::1]/",
        "http://10.1.2.3/",
        "http://172.16.0.1/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://[::]/",
        "http://224.0.0.1/",
        "http://255.255.255.255/",
        "http://[fd00::1]/",
        "http://[fe80::1%25eth0]/",
        "http://1.2.3.999/",
    ],
)
def test_check_url_refuses_non_public_literal_hosts_and_local_names(url: str) -> None:
    with pytest.raises(UnsafeTarget) as refused:
        check_url(url, AllowList())
    error = refused.value
    assert (error.status, error.code, error.field) == (400, "unsafe_webhook_target", "webhook_url")


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "gopher://example.com:70/", "ftp://example.com/", "//a.example/"]
)
def test_check_url_refuses_schemes_other_than_http_and_https(url: str) -> None:
    with pytest.raises(UnsafeTarget, match="scheme"):
        check_url(url, AllowList())


@pytest.mark.parametrize("url", ["http://user:pass@example.com/", "https://token@example.com/"])
def test_check_url_refuses_credentials_in_the_url(url: str) -> None:
    with pytest.raises(UnsafeTarget, match="credentials"):
        check_url(url, AllowList())


@pytest.mark.parametrize("url", ["https://example.com/\x00", "https://example.com/a\nb",
                                 "https://example.com/\x7f"])
def test_check_url_refuses_control_characters(url: str) -> None:
    with pytest.raises(UnsafeTarget, match="control character"):
        check_url(url, AllowList())


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/predq?token=s3cret",
        "http://93.184.216.34:8080/hook",
        "https://[2606:2800:220:1:248:1893:25c8:1946]/",
    ],
)
def test_check_url_accepts_public_names_and_addresses(url: str) -> None:
    check_url(url, AllowList())


def test_allow_list_opens_exactly_its_hosts_networks_and_ports() -> None:
    allow = AllowList.parse(" 127.0.0.1:8765, 10.0.0.0/8,hooks.internal ,[::1]:9000,, ")
    for url in [
        "http://127.0.0.1:8765/",
        "http://10.9.8.7/",
        "https://hooks.internal/",
        "http://HOOKS.internal.:81/",
        "http://[::1]:9000/",
    ]:
        check_url(url, allow)
    for url in ["http://127.0.0.1:8766/", "http://[::1]:9001/", "http://192.168.1.1/"]:
        with pytest.raises(UnsafeTarget):
            check_url(url, allow)
    assert AllowList.parse("").entries == ()


@pytest.mark.parametrize("entry", ["10.0.0.1/8", "host:0", "host:http", "2130706433", "a b"])
def test_allow_list_rejects_malformed_entries(entry: str) -> None:
    with pytest.raises(ValueError, match="webhook allow list"):
        AllowList.parse(entry)


@pytest.mark.parametrize(
    "address",
    [
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.5",
        "64:ff9b::7f00:1",
        "2002:a9fe:a9fe::1",
        "::127.0.0.1",
        "fe80::1",
        "ff02::1",
        "224.0.0.251",
        "100.100.100.200",
        "198.18.0.1",
    ],
)
def test_check_address_refuses_non_public_addresses_in_every_ipv6_form(address: str) -> None:
    with pytest.raises(UnsafeTarget, match="resolves to"):
        check_address(ipaddress.ip_address(address), "hooks.example.com", 443, AllowList())


@pytest.mark.parametrize(
    "address", [PUBLIC, "::ffff:93.184.216.34", "64:ff9b::5db8:d822", "2606:2800:220:1::1"]
)
def test_check_address_accepts_public_addresses(address: str) -> None:
    check_address(ipaddress.ip_address(address), "hooks.example.com", 443, AllowList())
