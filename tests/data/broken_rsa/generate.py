#!/usr/bin/env python3
"""Generates cases.json: RSA public keys whose modulus is broken (prime, even, with a
small factor, a prime square), each with a token forged from public information only,
and a proper key as the control. Used by tests/token_attacks.rs (attack_28).

The forgery: with n prime, phi(n) = n - 1 is public, so d = e^-1 mod phi(n) signs
anything; likewise once a factor of n is known. Run: python3 generate.py > cases.json
"""
import base64
import hashlib
import json
import secrets

ISS = "https://id.example.test"
AUD = "urn:test:api"
NOW = 1_700_000_000
E = 65537
BITS = 2048


def is_probable_prime(n, rounds=40):
    if n < 2:
        return False
    for p in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for _ in range(rounds):
        a = secrets.randbelow(n - 3) + 2
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def prime_in(lo, hi):
    """A random prime p with lo <= p < hi and gcd(p - 1, E) = 1."""
    while True:
        p = (lo + secrets.randbelow(hi - lo)) | 1
        if p < hi and (p - 1) % E != 0 and is_probable_prime(p):
            return p


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def to_bytes(n):
    return n.to_bytes((n.bit_length() + 7) // 8, "big")


def forge(n, phi, kid):
    d = pow(E, -1, phi)
    header = json.dumps({"alg": "RS256", "kid": kid}, separators=(",", ":"))
    claims = json.dumps(
        {"iss": ISS, "aud": AUD, "sub": "mallory", "scope": "orders:admin",
         "iat": NOW, "exp": NOW + 3600},
        separators=(",", ":"))
    signing_input = f"{b64(header.encode())}.{b64(claims.encode())}"
    k = (n.bit_length() + 7) // 8
    digest_info = bytes.fromhex("3031300d060960864801650304020105000420")
    t = digest_info + hashlib.sha256(signing_input.encode()).digest()
    em = b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t
    m = int.from_bytes(em, "big")
    s = pow(m, d, n)
    assert pow(s, E, n) == m, kid
    return f"{signing_input}.{b64(s.to_bytes(k, 'big'))}"


def case(name, n, phi, note):
    assert n.bit_length() == BITS, name
    return {"name": name, "note": note,
            "jwk": {"kty": "RSA", "kid": name, "use": "sig", "alg": "RS256",
                    "n": b64(to_bytes(n)), "e": b64(to_bytes(E))},
            "token": forge(n, phi, name)}


def main():
    lo, hi = 1 << (BITS - 1), 1 << BITS
    cases = []
    # Control: a proper modulus, two 1024-bit primes (its token verifies: the forging
    # code is right, and only the modulus checks refuse the others).
    while True:
        p = prime_in(3 << (BITS // 2 - 2), 1 << (BITS // 2))
        q = prime_in(3 << (BITS // 2 - 2), 1 << (BITS // 2))
        if p != q and (p * q).bit_length() == BITS:
            break
    cases.append(case("control", p * q, (p - 1) * (q - 1), "proper p*q"))
    n = prime_in(lo, hi)
    cases.append(case("prime", n, n - 1, "n is prime: phi(n) = n - 1"))
    q = prime_in(lo // 2, hi // 2)
    cases.append(case("even", 2 * q, q - 1, "n = 2q"))
    q = prime_in(-(-lo // 997), hi // 997)
    cases.append(case("small-factor", 997 * q, 996 * (q - 1), "n = 997q"))
    import math
    p = prime_in(math.isqrt(lo) + 1, 1 << (BITS // 2))
    cases.append(case("prime-square", p * p, p * (p - 1), "n = p^2"))
    print(json.dumps({"now": NOW, "iss": ISS, "aud": AUD, "cases": cases}, indent=1))


if __name__ == "__main__":
    main()
