"""FeatureClient against something that is not a working feature server at its url (a
proxy's error page, another HTTP service, a body cut short) and with arguments it cannot
use: featurecore errors naming the url or the argument, never a KeyError or an Arrow,
JSON or socket error. The real server's answers are tested in test_server.py."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from featurecore.client import FeatureClient
from featurecore.errors import FeatureStoreError, ValidationError
from featurecore.serving import FeatureRequest

REQUEST = FeatureRequest("ranker:v1", {"item": ["i1"]}, 1_782_864_000_000_000)

#: What the stand-in server answers to every request: (status, headers, body).
ANSWERS = {
    "an html page": (200, {"Content-Type": "text/html"}, b"<html>hello</html>"),
    "a json object of another service": (200, {"Content-Type": "application/json"}, b'{"x": 1}'),
    "a body cut short": (200, {"X-Featurecore-Feature-Set": "ranker:v1", "X-Featurecore-Shape": "2,3"}, b"\0" * 7),
    "a json error that is not an object": (400, {"Content-Type": "application/json"}, b"[1, 2]"),
}


@pytest.fixture
def answering():
    """A stand-in HTTP server; ``answering(kind)`` returns its url answering ANSWERS[kind]."""
    answer: dict[str, tuple] = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.respond()

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.respond()

        def respond(self):
            status, headers, body = answer["now"]
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def url_answering(kind: str) -> str:
        answer["now"] = ANSWERS[kind]
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield url_answering
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.parametrize("kind", list(ANSWERS))
@pytest.mark.parametrize("fmt", ["binary", "arrow", "json"])
def test_an_answer_that_is_not_the_feature_servers_is_a_featurecore_error_naming_the_url(answering, kind, fmt):
    """Each was a KeyError ('x-featurecore-feature-set', 'features'), an ArrowInvalid, a
    JSONDecodeError or an AttributeError ('list' object has no attribute 'get')."""
    url = answering(kind)
    with FeatureClient(url, format=fmt, timeout=5) as client:
        with pytest.raises(FeatureStoreError, match=rf"{url} answered (200|400) with a body that is not a featurecore answer"):
            client.get_features(REQUEST)
        with pytest.raises(FeatureStoreError, match=rf"{url} answered (200|400) with a body that is not a featurecore answer"):
            client.columns("ranker:v1")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"url": "http://127.0.0.1:abc"}, r"url must look like 'http://127.0.0.1:8080', got 'http://127.0.0.1:abc'"),
    ({"url": "http://127.0.0.1:99999"}, r"url must look like .*got 'http://127.0.0.1:99999'"),
    ({"timeout": "3"}, r"timeout must be a positive number of seconds, got '3'"),
    ({"timeout": -1}, r"timeout must be a positive number of seconds, got -1"),
    ({"timeout": 0}, r"timeout must be a positive number of seconds, got 0"),
    ({"api_key": "fck_a\nb"}, r"api_key must be the key's text \(one line\), got a str with a line break"),
    ({"api_key": 5}, r"api_key must be the key's text \(one line\), got int"),
])
def test_client_arguments_it_cannot_use_are_refused_when_it_is_made(kwargs, message):
    """A bad port was urllib's ValueError on the first request, timeout='3' a socket
    TypeError, an api_key with a line break http.client's ValueError and api_key=5 was
    sent as no key at all."""
    with pytest.raises(ValidationError, match=message):
        FeatureClient(**{"url": "http://127.0.0.1:8080", **kwargs})


def test_a_feature_set_or_request_id_that_is_not_text_is_refused(answering):
    url = answering("a json object of another service")
    with FeatureClient(url) as client:
        with pytest.raises(ValidationError, match=r"feature_set must be a ref like 'ranker:v1', got 5"):
            client.columns(5)
        with pytest.raises(ValidationError, match=r"request_id must be a str, got 5"):
            client.get_features(REQUEST, request_id=5)


def test_a_server_slower_than_the_timeout_is_named_as_such_not_as_unreachable():
    """A timeout said 'cannot reach the feature server ... check the url and that `featurecore
    serve` is running' of a server that was running, only slower than timeout=."""
    import socket

    from featurecore.errors import FeatureUnavailableError

    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts connections, never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with FeatureClient(url, timeout=0.2) as client:
            with pytest.raises(FeatureUnavailableError, match=rf"the feature server at {url} did not answer within timeout=0.2 s; "
                               r"pass a larger FeatureClient\(timeout=\.\.\.\) or send fewer candidates per request"):
                client.get_features(REQUEST)
