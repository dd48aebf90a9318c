"""Certificate credentials: checking a ``client_assertion`` JWT against the app's certificate.

MSAL (inside azure-identity's CertificateCredential) signs a short-lived JWT (RS256, or PS256
when it knows the SHA-256 thumbprint) whose audience is the token endpoint and whose issuer
and subject are the client id. PyJWT comes with MSAL, so checking it costs little.
"""

from __future__ import annotations

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .wire import Response, entra_error

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def check_assertion(
    assertion: str, certificate_pem: bytes | None, client_id: str, audience: str
) -> Response | None:
    """None if the assertion is valid; otherwise Entra's error answer."""
    if certificate_pem is None:
        return _bad_signature("The key was not found.")
    key = x509.load_pem_x509_certificate(certificate_pem).public_key()
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        return _bad_signature("The certificate's key type is not supported.")
    try:
        claims = jwt.decode(
            assertion,
            key=key,
            algorithms=["RS256", "PS256"],
            audience=audience,
            options={"require": ["exp", "aud", "iss", "sub"]},
        )
    except jwt.ExpiredSignatureError:
        return entra_error(
            401, "invalid_client", 700024, "Client assertion is not within its valid time range."
        )
    except jwt.InvalidTokenError as exc:
        return _bad_signature(str(exc))
    if claims["iss"] != client_id or claims["sub"] != client_id:
        return entra_error(
            401,
            "invalid_client",
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter.",
        )
    return None


def _bad_signature(reason: str) -> Response:
    return entra_error(
        401,
        "invalid_client",
        700027,
        f"Client assertion failed signature validation. [Reason - {reason}]",
    )
