"""The egress policy: parsing allow entries, matching, special addresses, credentials, config forms."""

from __future__ import annotations

import contextlib
import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alphora.sandbox import ConfigurationError, EgressPolicy
from alphora.sandbox.egress import AllowRule, is_special_address
from alphora.sandbox.egress.tls import client_hello_message, client_hello_sni


@pytest.mark.parametrize(
    ("entry", "host", "wildcard", "network", "port"),
    [
        ("pkgs.example.org", "pkgs.example.org", False, None, None),
        ("PKGS.Example.org.", "pkgs.example.org", False, None, None),
        ("*.example.com:443", ".example.com", True, None, 443),
        ("bücher.example", "xn--bcher-kva.example", False, None, None),
        ("10.1.2.0/24", None, False, "10.1.2.0/24", None),
        ("10.1.2.0/24:443", None, False, "10.1.2.0/24", 443),
        ("127.0.0.1:8080", None, False, "127.0.0.1/32", 8080),
        ("[::1]:8080", None, False, "::1/128", 8080),
        ("::1", None, False, "::1/128", None),
        ("[fd00::/8]:443", None, False, "fd00::/8", 443),
    ],
)
def test_allow_entries_parse(
    entry: str, host: str | None, wildcard: bool, network: str | None, port: int | None
) -> None:
    rule = AllowRule.parse(entry)
    assert (rule.host, rule.wildcard, rule.port) == (host, wildcard, port)
    assert rule.network == (ipaddress.ip_network(network) if network else None)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("https://pkgs.example.org", "without a scheme"),
        ("pkgs.example.org/simple", "not an IP network nor a host name"),
        ("*", "would allow every host"),
        ("a.*.example.com", "whole leftmost label"),
        ("example.com:0", "port '0' must be a number from 1 to 65535"),
        ("example.com:https", "port 'https'"),
        ("10.1.2.3/24", "has host bits set; did you mean 10.1.2.0/24"),
        ("300.1.2.3", "not an IP address or network"),
        ("[::1", "missing ']'"),
        ("-bad-.example", "invalid label"),
        ("", "empty entry"),
    ],
)
def test_bad_allow_entries_name_the_entry_and_the_problem(entry: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        EgressPolicy(allow=["ok.example", entry])
    assert message in str(info.value)
    assert info.value.field == "egress.allow[1]"
    assert repr(entry) in str(info.value)


def test_allow_must_be_a_list() -> None:
    with pytest.raises(ConfigurationError, match=r"got a single string \(write \['a.example'\]\)"):
        EgressPolicy(allow="a.example")


def test_matching_names_wildcards_and_ports() -> None:
    policy = EgressPolicy(allow=["pkgs.example.org", "*.example.com:443", "10.1.2.0/24", "127.0.0.1:8080"])
    assert policy.match_name("pkgs.example.org", 80) is not None
    assert policy.match_name("PKGS.example.org.", 8443) is not None  # any port, any case, trailing dot
    assert policy.match_name("evil-pkgs.example.org", 443) is None
    assert policy.match_name("pkgs.example.org.evil.test", 443) is None
    assert policy.match_name("api.example.com", 443) is not None
    assert policy.match_name("a.b.example.com", 443) is not None
    assert policy.match_name("example.com", 443) is None  # the wildcard is below the name, not the name
    assert policy.match_name("api.example.com", 80) is None
    assert policy.match_name("badexample.com", 443) is None
    assert policy.match_address("10.1.2.200", 22) is not None
    assert policy.match_address("10.1.3.1", 22) is None
    assert policy.match_address("127.0.0.1", 8080) is not None
    assert policy.match_address("127.0.0.1", 8081) is None
    assert policy.match_address("::ffff:10.1.2.7", 443) is not None  # IPv4-mapped form of a covered address
    # a name entry never admits an address target, an address entry never a name
    assert policy.match_address("10.1.2.3", 443).text == "10.1.2.0/24"  # type: ignore[union-attr]
    assert policy.match_name("10.1.2.3", 443) is None


@pytest.mark.parametrize(
    ("address", "special"),
    [
        ("169.254.169.254", True),
        ("10.0.0.5", True),
        ("172.16.3.4", True),
        ("192.168.1.1", True),
        ("127.0.0.1", True),
        ("100.64.0.1", True),
        ("0.0.0.0", True),
        ("224.0.0.1", True),
        ("::1", True),
        ("fe80::1", True),
        ("fd00::1", True),
        ("::ffff:169.254.169.254", True),
        ("::ffff:127.0.0.1", True),
        ("2002:7f00:1::", True),  # 6to4 wrapping 127.0.0.1
        ("8.8.8.8", False),
        ("2001:4860:4860::8888", False),
    ],
)
def test_special_addresses(address: str, special: bool) -> None:
    assert is_special_address(ipaddress.ip_address(address)) is special


def test_credentials_are_validated_redacted_and_keyed_by_host_or_host_port() -> None:
    policy = EgressPolicy(
        allow=["api.example.com", "other.example.com:8443"],
        credentials={
            "api.example.com": {"Authorization": "Bearer s3cret-token"},
            "api.example.com:8443": {"X-Api-Key": "k2"},
            "other.example.com:8443": {"X-Api-Key": "k3"},
        },
    )
    assert "s3cret-token" not in repr(policy)
    assert "'Authorization': '***'" in repr(policy)
    assert policy.credentials_for("API.example.com", 443) == {"Authorization": "Bearer s3cret-token"}
    assert policy.credentials_for("api.example.com", 8443) == {"X-Api-Key": "k2"}  # host:port wins
    assert policy.credentials_for("other.example.com", 8443) == {"X-Api-Key": "k3"}
    assert policy.credentials_for("other.example.com", 443) is None
    assert policy.needs_tls_termination


@pytest.mark.parametrize(
    ("credentials", "message"),
    [
        ({"nowhere.example": {"A": "b"}}, "no egress.allow entry admits 'nowhere.example'"),
        ({"api.example.com": {"Bad Header": "x"}}, "invalid header name 'Bad Header'"),
        ({"api.example.com": {"Host": "x"}}, "the proxy owns the 'Host' header"),
        ({"api.example.com": {"A": "line\r\nInjected: 1"}}, "without CR, LF or NUL"),
        ({"api.example.com": {}}, "non-empty mapping"),
        ({"*.example.com": {"A": "b"}}, "no wildcards"),
        ({"api.example.com": "Bearer x"}, "non-empty mapping of header name to value"),
    ],
)
def test_bad_credentials_say_why_without_the_secret(credentials: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        EgressPolicy(allow=["api.example.com"], credentials=credentials)
    assert message in str(info.value)
    assert "Injected" not in str(info.value)
    assert "Bearer x" not in str(info.value)


def test_from_value_accepts_config_forms() -> None:
    assert EgressPolicy.from_value(None) is None
    policy = EgressPolicy(allow=["a.example"])
    assert EgressPolicy.from_value(policy) is policy
    assert EgressPolicy.from_value(["a.example", "10.0.0.0/8"]) == EgressPolicy(allow=["a.example", "10.0.0.0/8"])
    assert EgressPolicy.from_value("a.example, *.b.example:443  c.example") == EgressPolicy(
        allow=["a.example", "*.b.example:443", "c.example"]
    )
    got = EgressPolicy.from_value({"allow": ["a.example"], "credentials": {"a.example": {"X-Key": "v"}}})
    assert got is not None
    assert got.credentials_for("a.example", 443) == {"X-Key": "v"}
    with pytest.raises(ConfigurationError, match=r"unknown key.*allowed.*expected 'allow' and 'credentials'"):
        EgressPolicy.from_value({"allowed": ["a.example"]})
    with pytest.raises(ConfigurationError, match="got int"):
        EgressPolicy.from_value(3)


def test_policies_compare_and_hash() -> None:
    a = EgressPolicy(allow=["a.example"], credentials={"a.example": {"X": "1"}})
    assert a == EgressPolicy(allow=("a.example",), credentials={"a.example": {"X": "1"}})
    assert a != EgressPolicy(allow=["a.example"], credentials={"a.example": {"X": "2"}})
    assert hash(a) == hash(EgressPolicy(allow=["a.example"]))


def test_to_value_round_trips_and_can_redact() -> None:
    policy = EgressPolicy(allow=["a.example", "10.0.0.0/8:443"], credentials={"a.example": {"X-Key": "s3cret"}})
    plain = policy.to_value()
    assert plain == {"allow": ["a.example", "10.0.0.0/8:443"], "credentials": {"a.example": {"X-Key": "s3cret"}}}
    assert EgressPolicy.from_value(plain) == policy
    assert policy.to_value(redact=True)["credentials"] == {"a.example": {"X-Key": "***"}}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([*"ab*.:[]/019f-_ %@", "::", "ffff", "é"]), max_size=14).map("".join))
def test_any_allow_entry_is_accepted_or_refused_with_a_configuration_error(entry: str) -> None:
    problem: ConfigurationError | None = None
    try:
        policy = EgressPolicy(allow=[entry])
    except ConfigurationError as exc:
        problem = exc
    if problem is not None:
        assert problem.field == "egress.allow[0]"
    else:
        assert len(policy.rules) == 1


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=120))
def test_the_client_hello_parser_refuses_garbage_with_value_error_only(body: bytes) -> None:
    with contextlib.suppress(ValueError):
        found = client_hello_message(b"\x16\x03\x01" + len(body).to_bytes(2, "big") + body)
        if found is not None:
            client_hello_sni(found[0])
