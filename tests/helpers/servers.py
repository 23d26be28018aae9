"""The throwaway PostgreSQL and Chroma servers of the integration tests: defined in
``bench/throwaway_servers.py`` (the bench uses them too, and nothing outside ``tests/`` may import
``tests``); re-exported here so the tests keep one import path."""

from bench.throwaway_servers import ChromaServer, PostgresCluster, free_port

__all__ = ["ChromaServer", "PostgresCluster", "free_port"]
