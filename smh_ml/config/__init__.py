"""Configuration: the profile schema, the named presets and ``section.key=value`` overrides."""
