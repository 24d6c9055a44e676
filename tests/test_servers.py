import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from harness.servers import LOWEST_PORT, free_port


def test_broker_accepts_connections(nats_broker):
    """NATS clients and MQTT devices, before and after a restart on the same ports."""
    for restart in (True, False):
        for port in (nats_broker.port, nats_broker.mqtt_port):
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                pass
        if restart:
            nats_broker.restart()


def test_influx_answers_queries(influx):
    r = httpx.post(f"{influx.url}/query", params={"q": "SHOW DATABASES"})
    assert r.status_code == 200
    assert r.json()["results"][0]["statement_id"] == 0


def test_free_ports_are_outside_the_range_outgoing_connections_use():
    """An outgoing connection can take any ephemeral port as its source port, even one a
    test server is about to bind or restart on; the servers' ports come from below."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(50)]
    assert all(LOWEST_PORT <= p < low for p in ports)
    for port in ports[:5]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_port_is_handed_out_once_per_process():
    """Servers started in parallel threads (the certification tests start 15), or one
    restarting on its port after an outage, must never be handed the same port."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        ports = list(pool.map(lambda _: free_port(), range(2000)))
    assert len(set(ports)) == len(ports)
