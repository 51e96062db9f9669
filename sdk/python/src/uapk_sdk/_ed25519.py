"""Ed25519 signing (RFC 8032) in pure Python, for the app's request signatures.

The standard library has no Ed25519, and the SDK depends on nothing else,
so this is the RFC's reference algorithm with extended coordinates. It is
checked against the RFC's test vectors (tests/test_ed25519.py) and, in the
Go end-to-end test, by the proxy's crypto/ed25519.

Trade-off: Python integers are not constant-time, so the time a signature
takes depends a little on the key and message. An attacker who can time
many signatures very precisely from close by could learn about the key. An
agent that signs its calls to a sidecar on the same host is not that
setting; where it is, sign in a process that uses a constant-time library
(the key file is an ordinary PKCS#8 PEM that OpenSSL and Go read).
"""

import base64
import hashlib
from typing import Tuple

_P = 2 ** 255 - 19
_L = 2 ** 252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, _P - 2, _P) % _P

_Point = Tuple[int, int, int, int]


def _recover_x(y: int, sign: int) -> int:
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P) % _P
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P != 0:
        x = x * pow(2, (_P - 1) // 4, _P) % _P
    if x & 1 != sign:
        x = _P - x
    return x


_GY = 4 * pow(5, _P - 2, _P) % _P
_GX = _recover_x(_GY, 0)
_G: _Point = (_GX, _GY, 1, _GX * _GY % _P)
_ZERO: _Point = (0, 1, 1, 0)


def _add(a: _Point, b: _Point) -> _Point:
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    aa = (y1 - x1) * (y2 - x2) % _P
    bb = (y1 + x1) * (y2 + x2) % _P
    cc = 2 * t1 * t2 * _D % _P
    dd = 2 * z1 * z2 % _P
    e, f, g, h = bb - aa, dd - cc, dd + cc, bb + aa
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _mul(s: int, pt: _Point) -> _Point:
    q = _ZERO
    while s > 0:
        if s & 1:
            q = _add(q, pt)
        pt = _add(pt, pt)
        s >>= 1
    return q


def _encode(pt: _Point) -> bytes:
    x, y, z, _ = pt
    zi = pow(z, _P - 2, _P)
    x, y = x * zi % _P, y * zi % _P
    return int.to_bytes(y | ((x & 1) << 255), 32, "little")


def _sha512_int(*parts: bytes) -> int:
    return int.from_bytes(hashlib.sha512(b"".join(parts)).digest(), "little")


def _expand(seed: bytes) -> Tuple[int, bytes]:
    h = hashlib.sha512(seed).digest()
    a = int.from_bytes(h[:32], "little")
    a &= (1 << 254) - 8
    a |= 1 << 254
    return a, h[32:]


class SigningKey:
    """An Ed25519 private key (its 32-byte seed)."""

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        self._a, self._prefix = _expand(seed)
        self.public_key = _encode(_mul(self._a, _G))

    def sign(self, msg: bytes) -> bytes:
        r = _sha512_int(self._prefix, msg) % _L
        rs = _encode(_mul(r, _G))
        k = _sha512_int(rs, self.public_key, msg) % _L
        s = (r + k * self._a) % _L
        return rs + int.to_bytes(s, 32, "little")


# PKCS#8 v1 of an Ed25519 key, as Go's x509.MarshalPKCS8PrivateKey and
# `openssl genpkey -algorithm ed25519` write it: the DER prefix, then the seed.
_PKCS8_PREFIX = bytes.fromhex("302e020100300506032b657004220420")


def load_pem_private_key(text: str) -> SigningKey:
    """Reads a PEM "PRIVATE KEY" block (PKCS#8) of an Ed25519 key."""
    begin, end = "-----BEGIN PRIVATE KEY-----", "-----END PRIVATE KEY-----"
    i, j = text.find(begin), text.find(end)
    if i < 0 or j < i:
        raise ValueError('want a PEM "PRIVATE KEY" block (PKCS#8) of an Ed25519 key')
    try:
        der = base64.b64decode("".join(text[i + len(begin):j].split()), validate=True)
    except ValueError as e:
        raise ValueError("the PEM block is not base64: %s" % e) from None
    if len(der) != len(_PKCS8_PREFIX) + 32 or not der.startswith(_PKCS8_PREFIX):
        raise ValueError("not an Ed25519 PKCS#8 private key (an RSA or ECDSA key, or another encoding)")
    return SigningKey(der[len(_PKCS8_PREFIX):])
