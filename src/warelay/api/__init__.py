"""warelay.api."""
