"""The package version, in a leaf module so that any module can read it without importing
the package (``fxprune/__init__.py`` imports everything)."""

__version__ = "0.1.0"
