"""warelay.conversations."""
