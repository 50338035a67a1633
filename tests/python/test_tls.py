"""TLS interop tests: NVIDIA's `tritonclient` (gRPC and HTTP) over TLS and mutual TLS against Ferry.

Clients are set up exactly as Triton's documentation and examples do it: `tritonclient.grpc` with
`ssl=True, root_certificates=..., private_key=..., certificate_chain=...` (Triton's
qa/L0_grpc/grpc_client_test.py and its `--ssl` client examples), `tritonclient.http` with `ssl=True` and
`ssl_options` holding `ca_certs`, `certfile` and `keyfile` (geventhttpclient's names).

Run by tests/tests/tls.rs, which makes the certificates (no key is committed) and starts two servers:
one with TLS on gRPC and REST, one with mutual TLS on both.

Environment (all required: without them the run FAILS, it is never skipped):
    FERRY_TLS_GRPC_URL, FERRY_TLS_HTTP_URL    host:port of the TLS server's gRPC and REST ports
    FERRY_MTLS_GRPC_URL, FERRY_MTLS_HTTP_URL  host:port of the mutual TLS server's gRPC and REST ports
    FERRY_TLS_DIR   a folder holding ca.crt, client.crt, client.key (signed by ca.crt) and other-ca.crt,
                    other-client.crt, other-client.key (signed by another CA)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

TIMEOUT_S = 20.0


def _env(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        pytest.exit(f"FAILED: {name} is not set; tests/tests/tls.rs sets it (see this file's docstring).", 2)
    return value


@pytest.fixture(scope="module")
def certs() -> Path:
    return Path(_env("FERRY_TLS_DIR"))


def _pem(certs: Path, name: str) -> str:
    path = certs / name
    assert path.is_file(), f"{path} is missing"
    return str(path)


def _simple_grpc(client: grpcclient.InferenceServerClient) -> None:
    """One inference of Triton's `simple` model: sum and difference of two INT32 [1, 16] tensors."""
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.ones((1, 16), dtype=np.int32)
    inputs = [grpcclient.InferInput("INPUT0", [1, 16], "INT32"), grpcclient.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    result = client.infer("simple", inputs, client_timeout=TIMEOUT_S)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


def _simple_http(client: httpclient.InferenceServerClient) -> None:
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.full((1, 16), 2, dtype=np.int32)
    inputs = [httpclient.InferInput("INPUT0", [1, 16], "INT32"), httpclient.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(a, binary_data=True)
    inputs[1].set_data_from_numpy(b, binary_data=False)
    result = client.infer("simple", inputs)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


def _grpc(url: str, **ssl) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(url, ssl=True, **ssl)


def _http(url: str, **ssl_options) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(
        url, ssl=True, ssl_options=ssl_options, connection_timeout=TIMEOUT_S, network_timeout=TIMEOUT_S
    )


def _grpc_refused(client: grpcclient.InferenceServerClient) -> str:
    with pytest.raises(InferenceServerException) as refused:
        client.is_server_live(client_timeout=TIMEOUT_S)
    # gRPC reports a failed handshake as an unavailable channel.
    assert refused.value.status() == "StatusCode.UNAVAILABLE", refused.value
    return str(refused.value)


def _http_refused(client: httpclient.InferenceServerClient) -> str:
    # geventhttpclient raises the ssl module's errors (or a reset) as they are.
    with pytest.raises(Exception) as refused:
        client.is_server_live()
    assert not isinstance(refused.value, AssertionError)
    return repr(refused.value)


# --------------------------------------------------------------------------- TLS, server certificate only


def test_grpc_over_tls_trusting_the_servers_ca(certs):
    client = _grpc(_env("FERRY_TLS_GRPC_URL"), root_certificates=_pem(certs, "ca.crt"))
    assert client.is_server_live(client_timeout=TIMEOUT_S)
    assert client.is_server_ready(client_timeout=TIMEOUT_S)
    _simple_grpc(client)
    client.close()


def test_grpc_streaming_over_tls(certs):
    client = _grpc(_env("FERRY_TLS_GRPC_URL"), root_certificates=_pem(certs, "ca.crt"))
    answers = []
    client.start_stream(callback=lambda result, error: answers.append((result, error)))
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    inputs = [grpcclient.InferInput("INPUT0", [1, 16], "INT32"), grpcclient.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(a)
    for _ in range(3):
        client.async_stream_infer("simple", inputs)
    client.stop_stream()
    assert len(answers) == 3 and all(error is None for _, error in answers), answers
    np.testing.assert_array_equal(answers[0][0].as_numpy("OUTPUT0"), a + a)
    client.close()


def test_http_over_tls_trusting_the_servers_ca(certs):
    client = _http(_env("FERRY_TLS_HTTP_URL"), ca_certs=_pem(certs, "ca.crt"))
    assert client.is_server_live()
    assert client.get_server_metadata()["name"] == "ferry"
    _simple_http(client)
    client.close()


def test_a_client_trusting_another_ca_refuses_the_server(certs):
    message = _grpc_refused(_grpc(_env("FERRY_TLS_GRPC_URL"), root_certificates=_pem(certs, "other-ca.crt")))
    assert "certificate" in message.lower() or "handshake" in message.lower() or "ssl" in message.lower(), message
    message = _http_refused(_http(_env("FERRY_TLS_HTTP_URL"), ca_certs=_pem(certs, "other-ca.crt")))
    assert "CERTIFICATE_VERIFY_FAILED" in message, message


def test_plain_text_clients_get_nothing_from_a_tls_port():
    with pytest.raises(InferenceServerException):
        grpcclient.InferenceServerClient(_env("FERRY_TLS_GRPC_URL")).is_server_live(client_timeout=5.0)
    with pytest.raises(Exception) as refused:
        httpclient.InferenceServerClient(
            _env("FERRY_TLS_HTTP_URL"), connection_timeout=5.0, network_timeout=5.0
        ).is_server_live()
    assert not isinstance(refused.value, AssertionError)


# --------------------------------------------------------------------------- mutual TLS


def test_grpc_mutual_tls_with_a_client_certificate_of_the_ca(certs):
    client = _grpc(
        _env("FERRY_MTLS_GRPC_URL"),
        root_certificates=_pem(certs, "ca.crt"),
        private_key=_pem(certs, "client.key"),
        certificate_chain=_pem(certs, "client.crt"),
    )
    assert client.is_server_live(client_timeout=TIMEOUT_S)
    _simple_grpc(client)
    client.close()


def test_http_mutual_tls_with_a_client_certificate_of_the_ca(certs):
    client = _http(
        _env("FERRY_MTLS_HTTP_URL"),
        ca_certs=_pem(certs, "ca.crt"),
        certfile=_pem(certs, "client.crt"),
        keyfile=_pem(certs, "client.key"),
    )
    assert client.is_server_live()
    _simple_http(client)
    client.close()


def test_mutual_tls_refuses_a_client_without_a_certificate(certs):
    _grpc_refused(_grpc(_env("FERRY_MTLS_GRPC_URL"), root_certificates=_pem(certs, "ca.crt")))
    _http_refused(_http(_env("FERRY_MTLS_HTTP_URL"), ca_certs=_pem(certs, "ca.crt")))


def test_mutual_tls_refuses_a_client_certificate_of_another_ca(certs):
    _grpc_refused(
        _grpc(
            _env("FERRY_MTLS_GRPC_URL"),
            root_certificates=_pem(certs, "ca.crt"),
            private_key=_pem(certs, "other-client.key"),
            certificate_chain=_pem(certs, "other-client.crt"),
        )
    )
    _http_refused(
        _http(
            _env("FERRY_MTLS_HTTP_URL"),
            ca_certs=_pem(certs, "ca.crt"),
            certfile=_pem(certs, "other-client.crt"),
            keyfile=_pem(certs, "other-client.key"),
        )
    )
