"""warelay.channels."""
