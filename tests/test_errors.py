"""One exception base: every exception the project defines derives from ``HomecareError``."""

import http.server
import importlib
import inspect
import pkgutil
import threading

import pytest

from homecare.contract import ContractError, Topic
from homecare.errors import ConfigError, DataError, HomecareError, StorageError
from homecare.influx import InfluxClient, InfluxError
from homecare.settings import InfluxSettings

PACKAGES = [
    "homecare", "cli", "ingest", "detectors", "escalation", "dashboards", "device_sim", "certify",
    "evaluation", "devices", "privacy", "bench", "harness", "broker",
]  # fmt: skip


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        names.append(package)
        path = importlib.import_module(package).__path__
        names += [
            m.name
            for m in pkgutil.walk_packages(path, f"{package}.")
            if not m.name.endswith("__main__")  # runs the command line on import
        ]
    return names


def test_every_exception_the_project_defines_derives_from_the_one_base():
    found, strays = [], []
    for name in _modules():
        for _, cls in inspect.getmembers(importlib.import_module(name), inspect.isclass):
            if cls.__module__ == name and issubclass(cls, BaseException):
                found.append(f"{name}.{cls.__qualname__}")
                if not issubclass(cls, HomecareError):
                    strays.append(f"{name}.{cls.__qualname__}")
    assert len(found) >= 19  # the contract's, the stores', the brokers', the deliveries'…
    assert strays == []


def test_a_bad_topic_names_the_topic_and_stays_a_value_error():
    with pytest.raises(ContractError) as err:
        Topic.parse("homecare/v1/s/e1/toaster/t1/reading")
    assert err.value.reason == "bad_topic"
    assert err.value.topic == "homecare/v1/s/e1/toaster/t1/reading"
    assert str(err.value).startswith("homecare/v1/s/e1/toaster/t1/reading: bad_topic:")
    assert isinstance(err.value, DataError | ValueError)


def test_influx_without_a_url_is_a_configuration_error():
    with pytest.raises(ConfigError, match="HOMECARE_INFLUX__URL"):
        InfluxClient(InfluxSettings(url=""))


def test_an_answer_influx_cannot_have_sent_is_a_storage_error():
    """A proxy's HTML error page where InfluxDB's JSON should be: converted at the boundary."""

    class Proxy(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            body = b"<html>502 Bad Gateway</html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Proxy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        with InfluxClient(InfluxSettings(url=url)) as db, pytest.raises(InfluxError) as err:
            db.query("SELECT * FROM bed")
    finally:
        server.shutdown()
        server.server_close()
    assert isinstance(err.value, StorageError)
    assert url in str(err.value)
    assert "SELECT * FROM bed" in str(err.value)
    assert isinstance(err.value.__cause__, ValueError)  # the JSON error, kept as the cause
