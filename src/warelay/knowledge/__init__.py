"""warelay.knowledge."""
