from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from coinslot import tokens as tokens_module
from coinslot.errors import ConfigurationError, Unauthorized, UnlockTokenExpired, UnlockTokenInvalid
from coinslot.keyring import KeyRing
from coinslot.tokens import UnlockTokens, WalletRef, WalletTokens

ISSUER = "https://pay.example.com"
SECRET = b"s" * 32
NOW = 1_700_000_000


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def make_tokens(keyring: KeyRing | None = None, **kwargs: Any) -> UnlockTokens:
    options: dict[str, Any] = {"issuer": ISSUER, "pseudonym_secret": SECRET, "livemode": False, **kwargs}
    return UnlockTokens(keyring or KeyRing.generate(), **options)


def issue(tokens: UnlockTokens, **kwargs: Any) -> str:
    claims: dict[str, Any] = {
        "site": "site_a",
        "item": "article-42",
        "purchase_id": "pur_1",
        "wallet_id": "wal_secret123",
        "now_s": NOW,
        **kwargs,
    }
    token, _ = tokens.issue(**claims)
    return token


def rejected(tokens: UnlockTokens, token: str, **kwargs: Any) -> str:
    """The message of an UnlockTokenInvalid that is not the expired subclass."""
    with pytest.raises(UnlockTokenInvalid) as info:
        tokens.verify(token, **{"site": "site_a", "now_s": NOW + 1, **kwargs})
    assert type(info.value) is UnlockTokenInvalid
    return info.value.detail


def forge(header: dict[str, Any], claims: dict[str, Any], sign: Any) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64(sign(signing_input.encode()))}"


# verified by a publisher: PyJWT and the JWKS, no coinslot code ---------------------------


def test_pyjwt_and_the_jwks_alone_verify_a_token() -> None:
    tokens = make_tokens()
    now = int(time.time())  # plain PyJWT checks exp and iat against the wall clock
    token, exp = tokens.issue(site="site_a", item="article-42", purchase_id="pur_1", wallet_id="wal_1", now_s=now)
    jwks = json.loads(json.dumps(tokens.keyring.jwks()))  # as a publisher fetches it

    key = jwt.PyJWK(jwks["keys"][0])
    claims = jwt.decode(token, key, algorithms=["EdDSA"], audience="site_a", issuer=ISSUER)
    assert claims == {
        "iss": ISSUER,
        "aud": "site_a",
        "sub": "article-42",
        "jti": "pur_1",
        "iat": now,
        "exp": exp,
        "livemode": False,
        "wlt": tokens.pseudonym("site_a", "wal_1"),
    }
    assert exp == now + 600

    kid = jwt.get_unverified_header(token)["kid"]
    key_set = jwt.PyJWKSet.from_dict(jwks)
    assert jwt.decode(token, key_set[kid], algorithms=["EdDSA"], audience="site_a", issuer=ISSUER) == claims


def test_non_ascii_ids_survive_the_round_trip() -> None:
    tokens = make_tokens()
    for item in ("Straße/ü-7", 'quote"and\\slash'):
        assert tokens.verify(issue(tokens, item=item), site="site_a", item=item, now_s=NOW)["sub"] == item


def test_jwks_publishes_only_public_ed25519_keys() -> None:
    ring = KeyRing.generate()
    (jwk,) = ring.jwks()["keys"]
    assert jwk.keys() == {"kty", "crv", "x", "kid", "alg", "use"}
    assert (jwk["kty"], jwk["crv"], jwk["alg"], jwk["use"], jwk["kid"]) == ("OKP", "Ed25519", "EdDSA", "sig", ring.kid)
    assert len(unb64(jwk["x"])) == 32


def test_verify_returns_the_claims() -> None:
    tokens = make_tokens(livemode=True)
    token = issue(tokens)
    claims = tokens.verify(token, site="site_a", item="article-42", now_s=NOW + 599)
    assert (claims["sub"], claims["jti"], claims["livemode"], claims["exp"]) == ("article-42", "pur_1", True, NOW + 600)
    assert tokens.verify(token, site="site_a", now_s=NOW)["aud"] == "site_a"


# rejected --------------------------------------------------------------------------------


def test_tampered_payload_is_rejected() -> None:
    tokens = make_tokens()
    header, payload, signature = issue(tokens).split(".")
    claims = json.loads(unb64(payload))
    claims["sub"] = "premium-article"
    tampered = f"{header}.{b64(json.dumps(claims).encode())}.{signature}"
    assert "signature does not verify" in rejected(tokens, tampered)


def test_tampered_signature_is_rejected() -> None:
    tokens = make_tokens()
    header, payload, signature = issue(tokens).split(".")
    raw = bytearray(unb64(signature))
    raw[10] ^= 1
    assert "signature does not verify" in rejected(tokens, f"{header}.{payload}.{b64(bytes(raw))}")


def test_other_site_item_or_issuer_is_rejected() -> None:
    tokens = make_tokens()
    token = issue(tokens)
    assert "audience is not site 'site_b'" in rejected(tokens, token, site="site_b")
    assert rejected(tokens, token, item="article-43") == "token is for item 'article-42', not 'article-43'"
    other_issuer = make_tokens(tokens.keyring, issuer="https://other.example.com")
    assert "issuer" in rejected(other_issuer, token)


def test_token_of_the_other_mode_is_rejected() -> None:
    ring = KeyRing.generate()
    token = issue(make_tokens(ring, livemode=False))
    assert "livemode" in rejected(make_tokens(ring, livemode=True), token)


def test_expired_token_is_rejected_against_the_injected_clock() -> None:
    tokens = make_tokens(ttl_s=60)
    token = issue(tokens)
    tokens.verify(token, site="site_a", now_s=NOW + 59)
    with pytest.raises(UnlockTokenExpired) as info:
        tokens.verify(token, site="site_a", now_s=NOW + 60)
    assert info.value.detail == f"token expired at {NOW + 60}, now {NOW + 60}"


def test_token_from_the_future_is_rejected() -> None:
    tokens = make_tokens()
    assert "after now" in rejected(tokens, issue(tokens, now_s=NOW + 3600), now_s=NOW)


def test_alg_none_is_rejected() -> None:
    tokens = make_tokens()
    claims = json.loads(unb64(issue(tokens).split(".")[1]))
    unsigned = forge({"alg": "none", "typ": "JWT", "kid": tokens.keyring.kid}, claims, lambda _: b"")
    assert rejected(tokens, unsigned) == "token alg is not EdDSA"
    assert rejected(tokens, unsigned.rstrip(".") + ".") == "token alg is not EdDSA"


def test_hs256_signed_with_the_public_key_is_rejected() -> None:
    tokens = make_tokens()
    claims = json.loads(unb64(issue(tokens).split(".")[1]))
    jwk = tokens.keyring.jwks()["keys"][0]
    public_key = tokens.keyring.public_key(tokens.keyring.kid)
    assert public_key is not None
    public_pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "typ": "JWT", "kid": jwk["kid"]}
    for secret in (unb64(jwk["x"]), public_pem, jwk["x"].encode(), json.dumps(jwk).encode()):
        forged = forge(header, claims, lambda data, s=secret: hmac.digest(s, data, hashlib.sha256))
        assert rejected(tokens, forged) == "token alg is not EdDSA"


def test_unknown_kid_is_rejected() -> None:
    tokens = make_tokens()
    stranger = make_tokens()  # another deployment's key, valid signature
    assert "is not among the published keys" in rejected(tokens, issue(stranger))
    claims = json.loads(unb64(issue(tokens).split(".")[1]))
    key = tokens.keyring.signer[1]
    forged = forge({"alg": "EdDSA", "kid": "nope"}, claims, key.sign)
    assert rejected(tokens, forged) == "token kid 'nope' is not among the published keys"
    forged = forge({"alg": "EdDSA"}, claims, key.sign)
    assert rejected(tokens, forged) == "token header kid None is not a string"
    for kid in (None, ["x"], 1):
        assert "is not a string" in rejected(tokens, forge({"alg": "EdDSA", "kid": kid}, claims, key.sign))


def test_garbage_is_rejected() -> None:
    tokens = make_tokens()
    for garbage in ("", "garbage", "a.b.c", "....", "e30.e30.", issue(tokens) + "x" * 3, "ÿ.ÿ.ÿ"):
        rejected(tokens, garbage)


def test_well_signed_token_with_missing_or_odd_claims_is_rejected() -> None:
    tokens = make_tokens()
    claims = json.loads(unb64(issue(tokens).split(".")[1]))
    kid, key = tokens.keyring.signer
    header = {"alg": "EdDSA", "kid": kid}
    without_wlt = {k: v for k, v in claims.items() if k != "wlt"}
    assert rejected(tokens, forge(header, without_wlt, key.sign)) == "token lacks the 'wlt' claim"
    assert "integers" in rejected(tokens, forge(header, {**claims, "exp": float(NOW + 600)}, key.sign))
    assert "audience" in rejected(tokens, forge(header, {**claims, "aud": ["site_a", "site_b"]}, key.sign))


# claims ----------------------------------------------------------------------------------


def test_exp_never_exceeds_access_until() -> None:
    tokens = make_tokens(ttl_s=600)
    base: dict[str, Any] = {"site": "site_a", "item": "i", "purchase_id": "p", "wallet_id": "w", "now_s": NOW}
    assert tokens.issue(**base, access_until_s=NOW + 30)[1] == NOW + 30
    assert tokens.issue(**base, access_until_s=NOW + 6000)[1] == NOW + 600
    assert tokens.issue(**base)[1] == NOW + 600
    token, exp = tokens.issue(**base, access_until_s=NOW + 30)
    assert tokens.verify(token, site="site_a", now_s=NOW)["exp"] == exp
    with pytest.raises(ValueError, match="access ended"):
        tokens.issue(**base, access_until_s=NOW)


def test_pseudonym_is_per_site_stable_and_hides_the_wallet() -> None:
    tokens = make_tokens()
    wallet = "wal_secret123"
    a, b = tokens.pseudonym("site_a", wallet), tokens.pseudonym("site_b", wallet)
    assert a != b
    assert a == tokens.pseudonym("site_a", wallet) == make_tokens().pseudonym("site_a", wallet)
    assert a != tokens.pseudonym("site_a", "wal_other")
    assert len(a) == 22
    assert make_tokens(pseudonym_secret=b"t" * 32).pseudonym("site_a", wallet) != a
    token = issue(tokens, wallet_id=wallet)
    assert tokens.verify(token, site="site_a", now_s=NOW)["wlt"] == a
    assert "secret123" not in unb64(token.split(".")[1]).decode()


def test_pseudonyms_stay_the_same_when_the_remembered_ones_are_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens_module, "PSEUDONYMS_KEPT", 3)
    tokens, fresh = make_tokens(), make_tokens()
    pairs = [(f"site_{n % 2}", f"wal_{n}") for n in range(10)]

    first = [tokens.pseudonym(*pair) for pair in pairs]
    again = [tokens.pseudonym(*pair) for pair in reversed(pairs)][::-1]

    assert first == again == [fresh.pseudonym(*pair) for pair in pairs]
    assert len(set(first)) == 10


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="31 bytes"):
        make_tokens(pseudonym_secret=b"x" * 31)
    with pytest.raises(ConfigurationError, match="ttl"):
        make_tokens(ttl_s=0)
    with pytest.raises(ConfigurationError, match="issuer"):
        make_tokens(issuer="")


# keys ------------------------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_load_creates_one_private_key_and_reuses_it(tmp_path: Path) -> None:
    ring = KeyRing.load(tmp_path)
    keys_dir = tmp_path / "keys"
    (pem,) = keys_dir.glob("unlock-*.pem")
    assert pem.name == f"unlock-{ring.kid}.pem"
    assert mode(pem) == 0o600
    assert mode(keys_dir) == 0o700

    again = KeyRing.load(tmp_path)
    assert again.kid == ring.kid
    assert again.jwks() == ring.jwks()
    token = issue(make_tokens(ring))
    make_tokens(again).verify(token, site="site_a", now_s=NOW)


def test_rotate_signs_with_the_new_key_and_keeps_the_old_published(tmp_path: Path) -> None:
    ring = KeyRing.load(tmp_path)
    tokens = make_tokens(ring)
    old_kid, old_token = ring.kid, issue(tokens)

    new_kid = ring.rotate(tmp_path)
    assert new_kid != old_kid and ring.kid == new_kid
    new_token = issue(tokens)
    assert jwt.get_unverified_header(new_token)["kid"] == new_kid
    assert [k["kid"] for k in ring.jwks()["keys"]] == [old_kid, new_kid]
    for token in (old_token, new_token):
        tokens.verify(token, site="site_a", now_s=NOW + 1)

    reloaded = make_tokens(KeyRing.load(tmp_path))
    assert reloaded.keyring.kid == new_kid
    assert jwt.get_unverified_header(issue(reloaded))["kid"] == new_kid
    reloaded.verify(old_token, site="site_a", now_s=NOW + 1)
    assert mode(tmp_path / "keys" / f"unlock-{new_kid}.pem") == 0o600


def test_rotate_twice_quickly_keeps_kids_ordered(tmp_path: Path) -> None:
    ring = KeyRing.load(tmp_path)
    kids = [ring.kid] + [ring.rotate(tmp_path) for _ in range(5)]
    assert kids == sorted(kids) and len(set(kids)) == 6
    assert KeyRing.load(tmp_path).kid == kids[-1]


def test_prune_removes_only_keys_retired_long_enough(tmp_path: Path) -> None:
    ring = KeyRing.load(tmp_path)
    first = ring.kid
    second = ring.rotate(tmp_path)
    assert ring.prune(tmp_path, 600) == []
    assert ring.prune(tmp_path, 600, now_s=time.time() + 601) == [first]
    assert [k["kid"] for k in ring.jwks()["keys"]] == [second]
    assert [p.name for p in (tmp_path / "keys").glob("unlock-*.pem")] == [f"unlock-{second}.pem"]
    assert ring.prune(tmp_path, 600, now_s=time.time() + 10_000) == []  # the signer stays


def write_pem(path: Path, key: Any) -> Path:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path


def test_key_files_are_used_oldest_first(tmp_path: Path) -> None:
    old = write_pem(tmp_path / "old.pem", Ed25519PrivateKey.generate())
    new = write_pem(tmp_path / "new.pem", Ed25519PrivateKey.generate())
    ring = KeyRing.load(tmp_path / "data", [old, new])
    assert not (tmp_path / "data" / "keys").exists()
    assert len(ring.jwks()["keys"]) == 2
    assert ring.jwks()["keys"][1]["kid"] == ring.kid

    # Every host configured with the same files signs with the same kid.
    other_host = KeyRing.load(tmp_path / "elsewhere", [old, new])
    assert other_host.kid == ring.kid
    token = issue(make_tokens(ring))
    make_tokens(other_host).verify(token, site="site_a", now_s=NOW)
    old_token = issue(make_tokens(KeyRing.load(tmp_path, [old])))
    make_tokens(ring).verify(old_token, site="site_a", now_s=NOW)

    with pytest.raises(ConfigurationError, match="configured files"):
        ring.rotate(tmp_path)


def test_bad_key_files_are_named(tmp_path: Path) -> None:
    ec = write_pem(tmp_path / "ec.pem", generate_private_key(SECP256R1()))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    public = tmp_path / "public.pem"
    public.write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"password"),
        )
    )
    good = write_pem(tmp_path / "good.pem", Ed25519PrivateKey.generate())
    for bad in (ec, garbage, public, encrypted, tmp_path / "missing.pem"):
        with pytest.raises(ConfigurationError) as info:
            KeyRing.load(tmp_path, [good, bad])
        assert str(bad) in info.value.detail
    with pytest.raises(ConfigurationError, match="not an Ed25519 private key"):
        KeyRing.load(tmp_path, [ec])


def test_bad_file_in_the_keys_directory_is_named(tmp_path: Path) -> None:
    KeyRing.load(tmp_path)
    bad = tmp_path / "keys" / "unlock-20990101T000000.000000Z.pem"
    bad.write_text("not a key")
    with pytest.raises(ConfigurationError) as info:
        KeyRing.load(tmp_path)
    assert str(bad) in info.value.detail
    bad.unlink()
    stray = write_pem(tmp_path / "keys" / "unlock-mine.pem", Ed25519PrivateKey.generate())
    with pytest.raises(ConfigurationError) as info:
        KeyRing.load(tmp_path)
    assert str(stray) in info.value.detail


# Hypothesis: whatever arrives as an unlock token, verify says "invalid" and nothing else ---------


ARBITRARY_TOKENS = st.one_of(
    st.text(max_size=400),
    # Three base64url segments, the shape a parser goes furthest with.
    st.lists(st.binary(max_size=120).map(b64), min_size=3, max_size=3).map(".".join),
    # A real header and claims with one segment or character changed.
    st.tuples(st.integers(0, 2), st.binary(max_size=60)).map(lambda t: (t[0], b64(t[1]))),
)


FUZZ_TOKENS = make_tokens()


@given(token=ARBITRARY_TOKENS)
@settings(max_examples=300, deadline=None)
def test_any_text_as_an_unlock_token_is_refused_as_invalid(token: Any) -> None:
    tokens = FUZZ_TOKENS
    if isinstance(token, tuple):  # splice a random segment into a genuine token
        parts = issue(tokens).split(".")
        parts[token[0]] = token[1]
        token = ".".join(parts)
    with pytest.raises(UnlockTokenInvalid):
        tokens.verify(token, site="site_a", now_s=NOW + 1)


# Hypothesis: whatever arrives as a wallet token, verify refuses it or reads the same wallet -------


@given(token=st.one_of(st.text(max_size=300), st.binary(max_size=200).map(lambda b: b.hex())))
@settings(max_examples=300, deadline=None)
def test_any_text_as_a_wallet_token_is_refused_as_unauthorized(token: str) -> None:
    with pytest.raises(Unauthorized):
        FUZZ_WALLET_TOKENS.verify(token)


@given(position=st.integers(0, 200), replacement=st.characters(codec="ascii"))
@settings(max_examples=300, deadline=None)
def test_a_wallet_token_changed_anywhere_is_refused_or_reads_the_same(position: int, replacement: str) -> None:
    genuine = FUZZ_WALLET_TOKENS.sign(WalletRef("w_fuzz", 1))
    at = position % len(genuine)
    changed = genuine[:at] + replacement + genuine[at + 1 :]
    assume(changed != genuine)
    try:
        ref = FUZZ_WALLET_TOKENS.verify(changed)
    except Unauthorized:
        return
    # Only another spelling of the same token passes (base64 decoding takes "+" for "-", "/" for "_",
    # and ignores the unused bits of a last character): never another wallet or generation.
    assert ref == WalletRef("w_fuzz", 1)


FUZZ_WALLET_TOKENS = WalletTokens([b"s" * 32])
