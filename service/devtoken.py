"""Development keys and tokens, for `make run` and `make token`; never for production.

    python -m service.devtoken init DIR                      # RSA key + JWKS in DIR, once
    python -m service.devtoken mint DIR --issuer I --audience A [--scope S] [--permissions P] [--ttl SECONDS] [--bound]
    python -m service.devtoken proof DIR --url URL --token TOKEN [--method GET] [--nonce NONCE]

`init` writes `DIR/private.pem` and `DIR/jwks.json` (public key only) unless they exist; `mint` prints
only the token on stdout, so `$(make -s token)` can be pasted into a curl command. With `--bound` the token
is DPoP-bound (`cnf.jkt`) to the development client's key `DIR/dpop.pem` (EC P-256, made once), and `proof`
prints a DPoP proof (RFC 9449) of that key for one request: `make -s proof URL=... TOKEN=...`.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from service.jose import access_token_hash, thumbprint

ALGORITHM = "RS256"
PROOF_ALGORITHM = "ES256"
DEFAULT_TTL = 3600
SUBJECT = "dev-user"


def init_keys(directory: Path) -> bool:
    """Create the development key pair and JWKS in `directory` unless present; True when created."""
    private_path, jwks_path = directory / "private.pem", directory / "jwks.json"
    if private_path.exists() and jwks_path.exists():
        return False
    directory.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = public_jwk(key)
    jwk.update(kid=thumbprint(jwk), use="sig", alg=ALGORITHM)  # a stable kid derived from the public key itself
    _write_private(private_path, key, os.O_TRUNC)
    jwks_path.write_text(json.dumps({"keys": [jwk]}, indent=2) + "\n")
    return True


def public_jwk(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> dict:
    """The public JWK of an RSA or EC private key (no kid)."""
    if isinstance(key, rsa.RSAPrivateKey):
        return jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)


def encode(
    key,
    algorithm: str,
    *,
    issuer: str,
    audience: str,
    subject: str = SUBJECT,
    kid: str | None = None,
    scope: str = "",
    permissions: str = "",
    ttl: int = DEFAULT_TTL,
    now: float | None = None,
    jkt: str | None = None,
) -> str:
    """A token signed with `key` (a loaded private key, or an HMAC secret) as `algorithm`, valid for `ttl` seconds
    from `now` (default: the clock). `scope` becomes the `scope` claim, `permissions` (space-separated) Auth0's
    RBAC `permissions` array; `jkt` binds it to a DPoP key (`cnf.jkt`, that key's RFC 7638 thumbprint)."""
    now = int(time.time() if now is None else now)
    claims = {"iss": issuer, "aud": audience, "sub": subject, "iat": now, "exp": now + ttl}
    if scope:
        claims["scope"] = scope
    if permissions.split():
        claims["permissions"] = permissions.split()
    if jkt:
        claims["cnf"] = {"jkt": jkt}
    return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid} if kid else None)


def mint(
    directory: Path,
    *,
    issuer: str,
    audience: str,
    scope: str = "",
    permissions: str = "",
    ttl: int = DEFAULT_TTL,
    now: float | None = None,
    bound: bool = False,
) -> str:
    """`encode` with the development key in `directory`; `bound`: DPoP-bound to the development client's key."""
    kid = json.loads((directory / "jwks.json").read_text())["keys"][0]["kid"]
    key = serialization.load_pem_private_key((directory / "private.pem").read_bytes(), password=None)
    jkt = thumbprint(public_jwk(_dpop_key(directory))) if bound else None
    claims = dict(issuer=issuer, audience=audience, scope=scope, permissions=permissions, ttl=ttl, now=now)
    return encode(key, ALGORITHM, kid=kid, jkt=jkt, **claims)


def sign_proof(
    key: ec.EllipticCurvePrivateKey,
    *,
    url: str,
    token: str,
    method: str = "GET",
    nonce: str = "",
    now: float | None = None,
) -> str:
    """A DPoP proof of `key` (P-256) for `method` `url` with `token` (RFC 9449 section 4.2), carrying the server's
    `nonce` when one is given (section 8), issued at `now` (default: the clock) with a fresh random `jti`."""
    claims = {
        "jti": secrets.token_urlsafe(16),
        "htm": method,
        "htu": url,
        "iat": int(time.time() if now is None else now),
        "ath": access_token_hash(token),
    }
    if nonce:
        claims["nonce"] = nonce
    headers = {"typ": "dpop+jwt", "jwk": public_jwk(key)}
    return jwt.encode(claims, key, algorithm=PROOF_ALGORITHM, headers=headers)


def proof(
    directory: Path, *, url: str, token: str, method: str = "GET", nonce: str = "", now: float | None = None
) -> str:
    """`sign_proof` with the development client's key in `directory`, made on first use."""
    return sign_proof(_dpop_key(directory), url=url, token=token, method=method, nonce=nonce, now=now)


def _dpop_key(directory: Path) -> ec.EllipticCurvePrivateKey:
    """The development client's DPoP key, `DIR/dpop.pem`, made on first use."""
    path = directory / "dpop.pem"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        _write_private(path, ec.generate_private_key(ec.SECP256R1()), os.O_EXCL)
    return serialization.load_pem_private_key(path.read_bytes(), password=None)


def _write_private(path: Path, key, mode: int) -> None:
    """`key` as unencrypted PKCS #8 PEM at `path`, readable by its owner only; `mode`: os.O_TRUNC or os.O_EXCL."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | mode, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.devtoken", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    init = commands.add_parser("init", help="create the development key and JWKS once")
    init.add_argument("directory", type=Path)
    mint_cmd = commands.add_parser("mint", help="print a token signed with the development key")
    mint_cmd.add_argument("directory", type=Path)
    mint_cmd.add_argument("--issuer", required=True)
    mint_cmd.add_argument("--audience", required=True)
    mint_cmd.add_argument("--scope", default="")
    mint_cmd.add_argument("--permissions", default="", help="space-separated: Auth0's RBAC `permissions` claim")
    mint_cmd.add_argument("--ttl", type=int, default=DEFAULT_TTL, help="seconds the token is valid")
    mint_cmd.add_argument("--bound", action="store_true", help="bind the token to the development DPoP key")
    proof_cmd = commands.add_parser("proof", help="print a DPoP proof of the development DPoP key")
    proof_cmd.add_argument("directory", type=Path)
    proof_cmd.add_argument("--url", required=True, help="the URL the request goes to, e.g. http://localhost:8000/...")
    proof_cmd.add_argument("--token", required=True, help="the DPoP-bound access token the request carries")
    proof_cmd.add_argument("--method", default="GET")
    proof_cmd.add_argument("--nonce", default="", help="the server's DPoP-Nonce, when it asks for one")
    args = parser.parse_args(argv)
    if args.command == "init":
        if init_keys(args.directory):
            print(f"created a development key in {args.directory}/", file=sys.stderr)
        return 0
    if args.command == "proof":
        print(proof(args.directory, url=args.url, token=args.token, method=args.method, nonce=args.nonce))
        return 0
    claims = ("issuer", "audience", "scope", "permissions", "ttl", "bound")
    print(mint(args.directory, **{name: getattr(args, name) for name in claims}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
