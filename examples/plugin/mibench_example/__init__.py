"""mibench-example: an example third-party mibench plugin (see ``plugin.py`` for the hooks)."""

__version__ = "0.1.0"
