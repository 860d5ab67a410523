"""The `ai-cdn` command line: a client of the REST API (see docs/cli.md)."""
