"""The wallet's version, as pyproject.toml states it (a test keeps the two the same)."""

VERSION = "1.1.0"
