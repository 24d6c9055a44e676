"""Zigbee2MQTT homes: off-the-shelf Zigbee sensors mapped to the wire contract."""
