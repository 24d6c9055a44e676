"""The InfluxDB v1 client against a real influxd with authentication on."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from harness.servers import LocalInflux
from homecare.influx import InfluxClient, InfluxError, line
from homecare.settings import InfluxSettings


@pytest.fixture
def secured(tmp_path):
    with LocalInflux(tmp_path / "influxd", admin=("admin", "s3cret-test")) as server:
        yield server


def test_user_and_password_from_settings(secured, tmp_path):
    secret = tmp_path / "influx-password"
    secret.write_text("s3cret-test\n")
    settings = InfluxSettings(url=secured.url, username="admin", password_file=secret)
    with InfluxClient(settings) as db:
        db.create_database()
        db.write([line("bed", "elder=e1,device=b1", {"hr": 60}, 1_700_000_000_000)])
        assert db.rows("SELECT hr FROM bed")[0]["hr"] == 60


def test_wrong_or_missing_credentials_are_refused_clearly(secured):
    for password in (None, SecretStr("wrong")):
        settings = InfluxSettings(url=secured.url, username="admin", password=password)
        with InfluxClient(settings) as db, pytest.raises(InfluxError, match="401"):
            db.query("SHOW DATABASES")


def test_token_and_password_together_are_rejected():
    with pytest.raises(ValueError, match="either a token"):
        InfluxSettings(url="http://x", token=SecretStr("t"), password=SecretStr("p"))
