"""Command-line interface (``cevit``): parses arguments, calls the library, formats results."""
