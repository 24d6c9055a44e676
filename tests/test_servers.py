import socket

import httpx


def test_broker_accepts_connections(broker):
    with socket.create_connection(("127.0.0.1", broker.port), timeout=2):
        pass
    broker.restart()
    with socket.create_connection(("127.0.0.1", broker.port), timeout=2):
        pass


def test_influx_answers_queries(influx):
    r = httpx.post(f"{influx.url}/query", params={"q": "SHOW DATABASES"})
    assert r.status_code == 200
    assert r.json()["results"][0]["statement_id"] == 0
