"""warelay.storage."""
