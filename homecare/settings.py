"""Settings for every service, from the environment (``HOMECARE_...``) or a ``.env`` file.

Nested groups use ``__``: ``HOMECARE_MQTT__URL=mqtt://broker:1883``,
``HOMECARE_INFLUX__PASSWORD_FILE=/run/secrets/influx``. Secrets are never defaults;
a ``*_file`` setting reads the secret from a file outside the repository.

>>> Settings(mqtt=MqttSettings(url="mqtt://127.0.0.1:1883")).mqtt.port
1883
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from homecare import contract


def _read_secret(value: SecretStr | None, path: Path | None) -> SecretStr | None:
    if value is None and path is not None:
        return SecretStr(path.read_text().strip())
    return value


class MqttSettings(BaseModel):
    """The broker. ``url`` empty means: ``homecare demo`` starts its own Mosquitto."""

    url: str = ""
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    ca_file: Path | None = None
    client_id: str = "homecare-ingest"
    keepalive_s: int = 30

    @model_validator(mode="after")
    def _load_secret(self) -> MqttSettings:
        self.password = _read_secret(self.password, self.password_file)
        if self.url and urlsplit(self.url).scheme not in ("mqtt", "mqtts"):
            raise ValueError(f"mqtt url {self.url!r} must start with mqtt:// or mqtts://")
        return self

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"


class InfluxSettings(BaseModel):
    """InfluxDB's v1-compatible HTTP API (1.x natively, 2.x through DBRP, 3.x)."""

    url: str = ""
    database: str = "homecare"
    retention_policy: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    token: SecretStr | None = None
    token_file: Path | None = None
    timeout_s: float = 10.0

    @model_validator(mode="after")
    def _load_secret(self) -> InfluxSettings:
        self.password = _read_secret(self.password, self.password_file)
        self.token = _read_secret(self.token, self.token_file)
        if self.token is not None and self.password is not None:
            raise ValueError("influx: set either a token or a username/password, not both")
        return self


class ContractSettings(BaseModel):
    """How strict ingest is at the edge."""

    max_future_s: float = contract.MAX_FUTURE_S
    max_past_s: float = contract.MAX_PAST_S
    max_payload_bytes: int = contract.MAX_PAYLOAD_BYTES


class IngestSettings(BaseModel):
    batch_size: int = Field(5000, ge=1, description="Messages validated and written together.")
    batch_interval_s: float = Field(0.2, gt=0, description="Longest a message waits for a batch.")
    spool_dir: Path | None = Field(None, description="Durable spool; default under state_dir.")
    store_raw_accel: bool = Field(False, description="Also store every accelerometer sample.")
    shared_group: str | None = Field(
        None, description="MQTT shared-subscription group, to run several ingest processes."
    )
    max_pending: int = Field(
        65535,
        ge=100,
        le=65535,
        description="Messages held unacknowledged before the broker is left to queue",
    )


class DetectSettings(BaseModel):
    client_id: str = "homecare-detect"
    batch_size: int = Field(5000, ge=1)
    batch_interval_s: float = Field(0.05, gt=0, description="Longest a reading waits to be seen.")
    grace_s: float = Field(30.0, ge=0, description='Time to press "I\'m OK" after a fall.')
    clock: Literal["wall", "data"] = Field(
        "wall", description="data: the newest reading's time (accelerated simulations)."
    )
    care_levels: dict[str, Annotated[int, Field(ge=1, le=4)]] = Field(
        default_factory=dict,
        description="Care level (1-4, from the ability assessment) per elder id; others: 2.",
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="HOMECARE_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    site: str = "demo"
    state_dir: Path = Path(".homecare")
    mqtt: MqttSettings = MqttSettings()
    influx: InfluxSettings = InfluxSettings()
    contract: ContractSettings = ContractSettings()
    ingest: IngestSettings = IngestSettings()
    detect: DetectSettings = DetectSettings()

    @property
    def spool_dir(self) -> Path:
        return self.ingest.spool_dir or self.state_dir / "spool"
