"""The clickstream contract (schema, pair table) and the click simulators."""
